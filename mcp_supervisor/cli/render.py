"""Turning API answers into text for people; pure functions, plus one rich table.

Why rich is imported inside ``status_table`` only: ``supervisorctl-mcp ready`` runs in scripts on
every job start and must not pay rich's import time.

Why every cell is a ``rich.text.Text``: names, messages and reasons come from servers (a stderr
tail, an exception text). Printed as a plain ``str``, rich reads them as console markup: ``[/INFO]``
raises MarkupError (status exits 1, which a job reads as "not ready") and ``[crashed]`` silently
vanishes. A ``Text`` is printed as is: no markup, no emoji codes, no highlighting.
"""

from __future__ import annotations

import time
from typing import Any

_STATE_STYLES = {
    "healthy": "green",
    "degraded": "yellow",
    "starting": "cyan",
    "recovering": "yellow",
    "backoff": "yellow",
    "fallback": "magenta",
    "failed": "bold red",
    "needs_human": "bold red",
    "paused": "dim",
}


def relative(at: float | None, now: float | None = None) -> str:
    """``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``; ``-`` when unknown."""
    if at is None:
        return "-"
    now = time.time() if now is None else now
    seconds = max(0.0, now - at)
    if seconds < 60:
        return f"{int(seconds)}s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"


def latency(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms >= 1000:
        return f"{ms / 1000:.1f} s"
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def one_line(text: str | None, limit: int = 80) -> str:
    """Messages can carry a stderr tail: keep the table to one line per server."""
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def maintenance_text(server: dict[str, Any]) -> str:
    """'maintenance until 14:30: renewing certs' for a server in a maintenance window, else ''."""
    window = server.get("maintenance")
    if not isinstance(window, dict):
        return ""
    from datetime import datetime

    until = window.get("until")
    when = datetime.fromtimestamp(until).strftime("%H:%M") if isinstance(until, int | float) else "?"
    reason = f": {window.get('reason')}" if window.get("reason") else ""
    return f"maintenance until {when}{reason}"


def server_message(server: dict[str, Any]) -> str:
    if server.get("maintenance"):
        return one_line(maintenance_text(server))
    parts = []
    if server.get("failure_class"):
        parts.append(f"[{server['failure_class']}]")
    message = server.get("message") or ""
    if not message and server.get("state") not in ("healthy", "degraded"):
        message = server.get("reason") or ""
    if message:
        parts.append(message)
    return one_line(" ".join(parts))


def status_rows(status: dict[str, Any], now: float | None = None) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for server in status.get("servers", []):
        name = str(server.get("name", "?"))
        if server.get("critical") is False:
            name += " (optional)"
        rows.append(
            (
                name,
                "maintenance" if server.get("maintenance") else str(server.get("state", "?")),
                relative(server.get("since"), now),
                latency(server.get("latency_ms")),
                server_message(server),
            )
        )
    return rows


def status_table(status: dict[str, Any]) -> Any:
    """A rich Table for ``supervisorctl-mcp status``."""
    from rich.table import Table
    from rich.text import Text

    ready = status.get("ready")
    title = Text("ready", style="green") if ready else Text("NOT READY", style="bold red")
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in ("server", "state", "since", "latency", "message"):
        table.add_column(column, no_wrap=column != "message", overflow="fold")
    for name, state, since, lat, message in status_rows(status):
        table.add_row(Text(name), Text(state, style=_STATE_STYLES.get(state, "")), Text(since), Text(lat), Text(message))
    return table


def ready_line(answer: dict[str, Any]) -> str:
    """The one-line verdict for ``supervisorctl-mcp ready``."""
    fallback = answer.get("fallback") or []
    if answer.get("ready"):
        line = "ready"
        if fallback:
            line += f" (in fallback: {', '.join(str(n) for n in fallback)})"
        return line
    if answer.get("daemon") == "stopping":
        return "not ready: daemon stopping"
    reasons = []
    for item in answer.get("not_ready", []):
        reason = one_line(str(item.get("reason") or ""), 60)
        if item.get("name") == "*":  # the daemon as a whole (starting, no servers)
            reasons.append(reason or str(item.get("state")))
            continue
        state = str(item.get("state"))
        reasons.append(f"{item.get('name')} is {state}" + (f" ({reason})" if reason and reason != state else ""))
    return "not ready: " + ("; ".join(reasons) if reasons else "no answer")


def event_line(event: dict[str, Any]) -> str:
    """``12:03:04 state alpha old=healthy new=failed`` for ``supervisorctl-mcp events``."""
    at = event.get("at")
    clock = time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(at, int | float) else "--:--:--"
    skip = {"seq", "kind", "server", "at"}
    details = " ".join(f"{k}={one_line(str(v), 60)}" for k, v in event.items() if k not in skip)
    parts = [clock, str(event.get("kind", "?"))]
    if event.get("server"):
        parts.append(str(event["server"]))
    if details:
        parts.append(details)
    return " ".join(parts)


def action_line(verb: str, answer: dict[str, Any]) -> str:
    """A short confirmation for probe/recover/pause/resume/emergency/reload."""
    if verb == "probe":
        result = answer.get("result") or {}
        ok = result.get("ok")
        message = one_line(result.get("message") or "")
        lat = latency(result.get("latency_ms"))
        verdict = "ok" if ok else f"failed ({result.get('failure_class') or result.get('failure') or '?'})"
        return f"probe {answer.get('name')}: {verdict}, {lat}, state {answer.get('state')}" + (
            f": {message}" if message and not ok else ""
        )
    if verb == "reload":
        if not answer.get("ok", True):
            return f"reload rejected; the old config keeps running:\n{answer.get('error', '')}"
        changes = [f"{k} {', '.join(answer[k])}" for k in ("added", "removed", "changed") if answer.get(k)]
        return "reloaded" + (f": {'; '.join(changes)}" if changes else " (no changes)")
    servers = answer.get("servers") or []
    names = [s.get("name") if isinstance(s, dict) else str(s) for s in servers]
    return f"{verb}: accepted for {', '.join(str(n) for n in names) or 'all servers'}"
