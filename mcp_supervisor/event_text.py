"""One event, one sentence a person reads: ``restart 2 of notes-http done in 11 ms after a 0.9 s backoff``.

Why one pure function for every screen: ``supervisorctl-mcp events`` and the dashboard's event
panel show the same stream; two renderings drift apart, and a raw dictionary
(``{"rung": "restart", "delay": 0.9338042456718074}``) makes a person do the reading the program
should have done. Durations are rounded to what a person needs (``11 ms``, ``0.9 s``, ``12 s``,
``5 min``); server-supplied text (reasons, errors) is kept to one line. It sits at the events
layer and imports nothing but the standard library: the CLI, the dashboard and the record
(``history.ingest``) all import it without a circle and without import cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

QUIET_KINDS = frozenset({"probe", "lagged", "history"})
"""Kinds a glance-at view (the dashboard panel) leaves out: routine checks and bookkeeping."""
BAD_STATES = frozenset({"failed", "needs_human", "backoff", "recovering", "fallback"})


def duration(seconds: float | None) -> str:
    """``11 ms``, ``0.9 s`` (from 0.1 s on), ``12 s``, ``12 s``, ``5 min``, ``2.5 h``, ``3.0 d``: two figures at most."""
    if not isinstance(seconds, int | float) or seconds != seconds:  # None or NaN
        return "?"
    seconds = max(0.0, float(seconds))
    if seconds < 0.0995:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def one_line(text: Any, limit: int = 80) -> str:
    """Server text can carry a stderr tail or newlines: one line, cut to ``limit`` with an ellipsis."""
    if not text:
        return ""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _flat(text: Any, limit: int = 160) -> str:
    return one_line(text, limit)


def _names(items: Any) -> str:
    return ", ".join(str(i) for i in items) if isinstance(items, list | tuple) else str(items)


def _state(e: dict[str, Any], who: str) -> str:
    line = f"{who} went from {e.get('old')} to {e.get('new')}"
    reason = _flat(e.get("reason"))
    return f"{line}: {reason}" if reason else line


def _probe(e: dict[str, Any], who: str) -> str:
    kind = f"{e.get('probe')} " if e.get("probe") else ""
    took = duration((e.get("latency_ms") or 0) / 1000.0) if isinstance(e.get("latency_ms"), int | float) else "?"
    stale = " (stale: started before the last change, ignored)" if e.get("stale") else ""
    if e.get("ok"):
        return f"{kind}probe of {who} answered in {took}{stale}"
    return f"{kind}probe of {who} failed ({e.get('failure_class') or 'unknown'}) after {took}{stale}"


def _rung(e: dict[str, Any]) -> str:
    return str(e.get("rung") or "action").replace("_", " ")


def _action(e: dict[str, Any], who: str) -> str:
    wait = e.get("delay")
    after = f" after a {duration(wait)} backoff" if isinstance(wait, int | float) and wait >= 0.0005 else ""
    return f"{_rung(e)} {e.get('attempt')} of {who} begins{after}"


def _action_done(e: dict[str, Any], who: str) -> str:
    wait = e.get("delay")
    after = f" after a {duration(wait)} backoff" if isinstance(wait, int | float) and wait >= 0.0005 else ""
    took = duration(e.get("duration"))
    head = f"{_rung(e)} {e.get('attempt')} of {who}"
    if e.get("ok"):
        return f"{head} done in {took}{after}"
    detail = _flat(e.get("detail"))
    return f"{head} failed in {took}{after}" + (f": {detail}" if detail else "")


def _process_exit(e: dict[str, Any], who: str) -> str:
    how = e.get("exit") or (f"exited with code {e['returncode']}" if e.get("returncode") is not None else "exited")
    return f"the process of {who} " + (f"was {how}" if str(how).startswith("killed") else str(how))


def _standby(e: dict[str, Any], who: str) -> str:
    """The warm standby of a managed http/sse server (runtime/standby.py)."""
    if e.get("event") == "promoted":
        how = str(e.get("exit") or "exited")
        return (f"the standby of {who} on port {e.get('port')} took over: the primary "
                + (f"was {how}" if how.startswith("killed") else how))
    return f"the standby of {who} on port {e.get('port')} is {e.get('state')}: {_flat(e.get('reason'))}"


def _notify(e: dict[str, Any], who: str) -> str:
    what = str(e.get("notify") or "notice").replace("_", " ")
    detail = _flat(e.get("detail"))
    head = f"{e.get('severity') or 'warning'} alert for {who}: {what}" if who else f"alert: {what}"
    return f"{head}: {detail}" if detail else head


def _config(e: dict[str, Any], who: str) -> str:
    if e.get("event") == "reload_rejected":
        return f"config reload rejected, the old config keeps running: {_flat(e.get('error'))}"
    changes = [f"{k} {_names(e[k])}" for k in ("added", "removed", "changed") if e.get(k)]
    return "config reloaded" + (f": {'; '.join(changes)}" if changes else " (no changes)")


def _daemon(e: dict[str, Any], who: str) -> str:
    what = e.get("event")
    if what == "started":
        return f"the daemon started with {e.get('servers')} server(s)"
    if what == "orphans_stopped":
        return f"the daemon stopped {e.get('processes')} process(es) left from its last run"
    if what == "phase":
        return f"the daemon is {str(e.get('phase')).replace('_', ' ')}"
    if what == "stopping":
        return "the daemon is stopping"
    return f"daemon: {str(what).replace('_', ' ')}"


def _run(e: dict[str, Any], who: str) -> str:
    command = _flat(e.get("command"), 80)
    if e.get("event") == "started":
        return f"run {e.get('run_id')} started" + (f": {command}" if command else "")
    code = e.get("exit_code")
    ended = f"run {e.get('run_id')} finished" + (f" with exit code {code}" if code is not None else "")
    health = e["report"].get("health") if isinstance(e.get("report"), dict) else None
    return ended + (f", MCP health {health}" if health else "")


def _report(e: dict[str, Any], who: str) -> str:
    report: dict[str, Any] = e["report"] if isinstance(e.get("report"), dict) else {}
    advice = report.get("recommendations") or []
    line = f"{e.get('period')} report: {report.get('health') or '?'}"
    return f"{line}; {_flat(advice[0], 120)}" if advice else line


def _backup(e: dict[str, Any], who: str) -> str:
    files = e.get("files") or []
    failed = e.get("failed_locations") or {}
    line = f"backup {e.get('snapshot')} taken: {len(files)} file(s)"
    if failed:
        line += f", failed at {_names(sorted(failed))}"
    return line + ("" if e.get("safe", True) else " (NOT safe: no location holds it)")


def _history(e: dict[str, Any], who: str) -> str:
    what = str(e.get("event") or "").replace("_", " ")
    detail = _flat(e.get("problem") or e.get("note") or e.get("moved_to") or "")
    return f"the record: {what}" + (f": {detail}" if detail else "")


_SENTENCES: dict[str, Callable[[dict[str, Any], str], str]] = {
    "state": _state,
    "probe": _probe,
    "action": _action,
    "action_done": _action_done,
    "process_exit": _process_exit,
    "standby": _standby,
    "notify": _notify,
    "config": _config,
    "daemon": _daemon,
    "run": _run,
    "report": _report,
    "backup": _backup,
    "history": _history,
    "container": lambda e, who: f"the container of {who}: {e.get('action')}",
    "command": lambda e, who: f"{e.get('command')} asked for {who}",
    "restore": lambda e, who: f"config {e.get('config')} restored from backup {e.get('snapshot')}",
    "restore_failed": lambda e, who: f"config {e.get('config')} could not be restored: {_flat(e.get('error'))}",
    "config_corrupt": lambda e, who: f"config {e.get('config')} is damaged: {_flat(e.get('problem'))}",
    "accepted": lambda e, who: f"config {e.get('config')} changed and was accepted as the new good copy",
    "servers_removed": lambda e, who: f"servers left config {e.get('config')}: {_names(e.get('servers') or [])}",
    "vault_error": lambda e, who: f"vault error: {_flat(e.get('error'))}",
    "verify": lambda e, who: "vault verified" + ("" if e.get("ok", True) else ": problems found"),
    "repair": lambda e, who: "vault repaired" + ("" if e.get("ok", True) else ": not everything could be"),
    "lagged": lambda e, who: f"{e.get('dropped', 1)} event(s) were dropped: this reader fell behind",
}


def sentence(event: dict[str, Any]) -> str:
    """The event as a sentence (no clock); an unknown kind still reads as words, not a dict."""
    who = str(event.get("server") or "")
    kind = str(event.get("kind") or "event")
    render = _SENTENCES.get(kind)
    if render is not None:
        return render(event, who)
    skip = {"seq", "kind", "server", "at"}
    details = ", ".join(f"{k.replace('_', ' ')} {_flat(v, 60)}" for k, v in event.items()
                        if k not in skip and not isinstance(v, dict | list))
    head = kind.replace("_", " ") + (f" of {who}" if who else "")
    return f"{head}: {details}" if details else head


def clock(event: dict[str, Any]) -> str:
    at = event.get("at")
    return time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(at, int | float) else "--:--:--"


def tone(event: dict[str, Any]) -> str:
    """'bad', 'good' or '' : how a screen may colour the line (the words say it without colour)."""
    kind = event.get("kind")
    if kind == "state":
        new = event.get("new")
        return "bad" if new in BAD_STATES else "good" if new in ("healthy", "degraded", "rate_limited") else ""
    if kind in ("process_exit", "restore_failed", "config_corrupt", "vault_error") or (
        kind == "action_done" and not event.get("ok")
    ):
        return "bad"
    if kind == "notify":
        return "bad" if event.get("severity") in ("critical", "warning") else ""
    return "good" if kind == "action_done" else ""
