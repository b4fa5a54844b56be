"""The guarded run's report: pure functions from what the guardian saw to a REPORT (period "run").

Why pure: the guardian (``guard/session.py``, ``cli/guardian.py``) is all I/O (a child process,
signals, a socket, an event stream); what the report *says* (which incidents, their time to
recovery, the health word, the advice) is decided here from plain data, so it is tested without
any of it.

Incidents are folded from the daemon's ``state`` events: one opens when a server leaves
healthy/degraded for a bad state and closes when it is healthy or degraded again. Time the
guardian could not watch (the daemon went away) is "unobserved", never counted as healthy.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GOOD_STATES = frozenset({"healthy", "degraded", "rate_limited"})
BAD_STATES = frozenset({"failed", "recovering", "backoff", "fallback", "needs_human"})
RECOVERABLE_STATES = frozenset({"failed", "backoff"})
"""States in which the guardian asks the daemon to recover a required server at once."""
NO_RESTART_CLASSES = frozenset({"auth", "config"})
"""A restart cannot fix these (a person must act); the guardian never asks for one."""

MAX_INCIDENTS = 200
MAX_ACTIONS = 20
"""Caps on what one report lists (the metrics count everything): a server flapping through a
long job must not make the report too big for the record, the API (1 MB bodies) or Slack."""

MASK = "***"
_SECRET_WORD = re.compile(r"(token|authorization|password|passwd|secret|api[_-]?key|cookie|credential)", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)


# --- the command line, without secrets ---------------------------------------------------------


def redact_argv(argv: Sequence[str], secrets: Iterable[str] = ()) -> list[str]:
    """The command as it may be shown and stored: config secrets, ``--token X``, ``--token=X``,
    ``API_KEY=X`` and ``https://user:pass@host`` masked. Why here too and not only in logs: the
    report travels (file, SQLite record, Slack), and a job's argv is where people put tokens."""
    known = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(s) for s in known)) if known else None
    out: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next:
            out.append(MASK)
            mask_next = False
            continue
        text = pattern.sub(MASK, arg) if pattern is not None else arg
        text = _URL_USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
        if text.startswith("-") and _SECRET_WORD.search(text.split("=", 1)[0]):
            if "=" in text:
                text = text.split("=", 1)[0] + "=" + MASK
            else:
                mask_next = True
        elif "=" in text and not text.startswith("-") and _SECRET_WORD.search(text.split("=", 1)[0]):
            text = text.split("=", 1)[0] + "=" + MASK
        out.append(text)
    return out


def command_line(argv: Sequence[str]) -> str:
    import shlex

    return shlex.join(argv)


def exit_code_of(returncode: int) -> int:
    """The guardian's own exit code for a job's ``returncode`` (a signal N becomes 128+N, as in sh)."""
    return returncode if returncode >= 0 else 128 - returncode


# --- incidents ---------------------------------------------------------------------------------


@dataclass
class Incident:
    server: str
    started_at: float
    required: bool
    failure_class: str | None = None
    reason: str = ""
    states: list[str] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    recovered_at: float | None = None
    recover_requested_at: float | None = None
    open_at_start: bool = False

    def to_json(self) -> dict[str, Any]:
        ttr = None if self.recovered_at is None else round(max(0.0, self.recovered_at - self.started_at), 3)
        return {
            "server": self.server,
            "required": self.required,
            "failure_class": self.failure_class,
            "reason": self.reason,
            "states": list(self.states),
            "started_at": round(self.started_at, 3),
            "recovered_at": None if self.recovered_at is None else round(self.recovered_at, 3),
            "time_to_recovery_s": ttr,
            "resolved": self.recovered_at is not None,
            "open_at_start": self.open_at_start,
            "recover_requested_at": None if self.recover_requested_at is None else round(self.recover_requested_at, 3),
            "actions": list(self.actions),
        }


@dataclass
class Gap:
    """A stretch the guardian could not watch (the daemon was unreachable)."""

    lost_at: float
    back_at: float | None = None


@dataclass
class RunTimeline:
    """Incidents and unobserved gaps folded from the events seen during the run."""

    incidents: list[Incident]
    gaps: list[Gap]
    notes: list[str]
    lagged: int = 0


def fold_events(
    events: Iterable[Mapping[str, Any]],
    initial_states: Mapping[str, str],
    required: Iterable[str],
    started_at: float,
) -> RunTimeline:
    """Incidents from the daemon's events (``kind`` state/action/action_done/lagged/daemon) and the
    guardian's own (``kind`` "guardian": daemon_lost, daemon_back, recover_requested)."""
    needed = set(required)
    open_by_server: dict[str, Incident] = {}
    incidents: list[Incident] = []
    gaps: list[Gap] = []
    notes: list[str] = []
    lagged = 0
    for name, state in initial_states.items():
        if state in BAD_STATES:
            incident = Incident(name, started_at, name in needed, states=[state], open_at_start=True)
            open_by_server[name] = incident
            incidents.append(incident)
    for event in events:
        kind = event.get("kind")
        server = event.get("server")
        at = float(event.get("at") or started_at)
        if kind == "state" and isinstance(server, str):
            new = str(event.get("new", ""))
            current = open_by_server.get(server)
            if new in BAD_STATES:
                if current is None:
                    current = Incident(server, at, server in needed)
                    open_by_server[server] = current
                    incidents.append(current)
                if not current.states or current.states[-1] != new:
                    current.states.append(new)
                current.failure_class = event.get("failure_class") or current.failure_class
                current.reason = str(event.get("reason") or current.reason)
            elif new in GOOD_STATES and current is not None:
                current.recovered_at = at
                current.states.append(new)
                del open_by_server[server]
        elif kind in ("action", "action_done") and isinstance(server, str) and server in open_by_server:
            actions = open_by_server[server].actions
            if kind == "action":
                if len(actions) >= MAX_ACTIONS:
                    del actions[0]
                actions.append({"rung": event.get("rung"), "attempt": event.get("attempt"), "at": round(at, 3)})
            elif actions and "ok" not in actions[-1]:
                actions[-1]["ok"] = bool(event.get("ok"))
                actions[-1]["duration_s"] = event.get("duration")
        elif kind == "lagged":
            lagged += int(event.get("dropped") or 1)
        elif kind == "daemon" and event.get("event") == "stopping":
            notes.append("the supervisor was stopping during the run")
        elif kind == "guardian":
            what = event.get("event")
            if what == "daemon_lost":
                gaps.append(Gap(at))
            elif what == "daemon_back" and gaps and gaps[-1].back_at is None:
                gaps[-1].back_at = at
            elif what == "recover_requested" and isinstance(server, str) and server in open_by_server:
                open_by_server[server].recover_requested_at = at
    return RunTimeline(incidents, gaps, notes, lagged)


# --- metrics over the run window ---------------------------------------------------------------


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _observed(since: float, until: float, gaps: Sequence[Gap]) -> float:
    return max(0.0, (until - since) - sum(_overlap(g.lost_at, g.back_at or until, since, until) for g in gaps))


def _down(incident: Incident, since: float, until: float, gaps: Sequence[Gap]) -> float:
    start, end = incident.started_at, incident.recovered_at if incident.recovered_at is not None else until
    inside = _overlap(start, end, since, until)
    hidden = sum(
        _overlap(max(start, since), min(end, until), g.lost_at, g.back_at or until) for g in gaps
    )
    return max(0.0, inside - hidden)


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


# --- the report ----------------------------------------------------------------------------------


@dataclass
class RunFacts:
    """Everything the guardian observed, as plain data (the input of ``build_run_report``)."""

    run_id: str
    argv: list[str]
    started_at: float
    finished_at: float
    required: list[str]
    precheck: dict[str, Any]
    servers_before: dict[str, dict[str, Any]]
    servers_after: dict[str, dict[str, Any]] | None
    events: list[dict[str, Any]] = field(default_factory=list)
    returncode: int | None = None
    started: bool = True
    not_started_reason: str | None = None
    fallback: list[str] = field(default_factory=list)
    signals_forwarded: list[str] = field(default_factory=list)
    leftovers_killed: int = 0
    daemon: dict[str, Any] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    guardian_exit: int = 0


def outcome_of(facts: RunFacts) -> str:
    if not facts.started or facts.returncode is None:
        return "not_started"
    if facts.returncode < 0:
        return "killed"
    return "succeeded" if facts.returncode == 0 else "failed"


def _states(servers: Mapping[str, Mapping[str, Any]] | None) -> dict[str, str]:
    return {name: str(info.get("state", "unknown")) for name, info in (servers or {}).items()}


def build_run_report(facts: RunFacts) -> dict[str, Any]:
    """The REPORT (see CONTRACTS: period "run", with a ``run`` object), secret-free."""
    from mcp_supervisor.cli.render import one_line

    redacted = redact_argv(facts.argv, facts.secrets)
    scrub = _scrubber(facts.secrets)
    since, until = facts.started_at, max(facts.finished_at, facts.started_at)
    before = _states(facts.servers_before)
    after = _states(facts.servers_after) if facts.servers_after is not None else None
    timeline = fold_events(facts.events, before if facts.started else {}, facts.required, since)
    for incident in timeline.incidents:
        incident.reason = one_line(scrub(incident.reason), 200)
    names = list(facts.servers_before) or list(facts.servers_after or {})
    observed = _observed(since, until, timeline.gaps)
    per_server: dict[str, Any] = {}
    uptimes: list[float] = []
    for name in names:
        mine = [i for i in timeline.incidents if i.server == name]
        resolved = [i for i in mine if i.recovered_at is not None]
        failures: dict[str, int] = {}
        for incident in mine:
            failures[incident.failure_class or "unknown"] = failures.get(incident.failure_class or "unknown", 0) + 1
        down = sum(_down(i, since, until, timeline.gaps) for i in mine)
        uptime = round(100.0 * (1.0 - down / observed), 3) if observed > 0 else None
        if uptime is not None:
            uptimes.append(uptime)
        per_server[name] = {
            "uptime_pct": uptime,
            "failures": failures,
            "recoveries": len(resolved),
            "mttr_s": _mean([i.recovered_at - i.started_at for i in resolved if i.recovered_at is not None]),
            "required": name in facts.required,
            "state_before": before.get(name),
            "state_after": None if after is None else after.get(name),
        }
    incidents = timeline.incidents
    resolved_all = [i for i in incidents if i.recovered_at is not None]
    final = after if after is not None else before
    healthy = sorted(n for n in names if final.get(n) in GOOD_STATES)
    failed = sorted(n for n in names if final.get(n) not in GOOD_STATES)
    required_down = [n for n in facts.required if n not in facts.fallback and after.get(n) not in GOOD_STATES] \
        if facts.started and after is not None else []
    duration = round(until - since, 3)
    signal_name = None
    if facts.returncode is not None and facts.returncode < 0:
        import signal

        try:
            signal_name = signal.Signals(-facts.returncode).name
        except ValueError:
            signal_name = f"signal {-facts.returncode}"
    run = {
        "run_id": facts.run_id,
        "command": command_line(redacted),
        "argv": redacted,
        "started": facts.started,
        "not_started_reason": scrub(facts.not_started_reason) if facts.not_started_reason else None,
        "started_at": round(since, 3),
        "finished_at": round(until, 3),
        "duration_s": duration,
        "exit_code": None if facts.returncode is None else exit_code_of(facts.returncode),
        "signal": signal_name,
        "outcome": outcome_of(facts),
        "guardian_exit": facts.guardian_exit,
        "required": list(facts.required),
        "fallback": list(facts.fallback),
        "precheck": _scrub_json(facts.precheck, scrub),
        "servers_before": before,
        "servers_after": after,
        "incidents": [i.to_json() for i in incidents[-MAX_INCIDENTS:]],
        "incidents_total": len(incidents),
        "unobserved": [
            {"lost_at": round(g.lost_at, 3), "back_at": None if g.back_at is None else round(g.back_at, 3)}
            for g in timeline.gaps
        ],
        "events_lost": timeline.lagged,
        "notes": list(timeline.notes),
        "signals_forwarded": list(facts.signals_forwarded),
        "leftover_processes_killed": facts.leftovers_killed,
        "daemon": dict(facts.daemon),
    }
    report: dict[str, Any] = {
        "period": "run",
        "since": round(since, 3),
        "until": round(until, 3),
        "health": "?",
        "servers_total": len(names),
        "servers_healthy": len(healthy),
        "uptime_pct": round(sum(uptimes) / len(uptimes), 3) if uptimes and facts.started else None,
        "recovery_rate": round(len(resolved_all) / len(incidents), 3) if incidents else None,
        "mttr_s": _mean([i.recovered_at - i.started_at for i in resolved_all if i.recovered_at is not None]),
        "recoveries": len(resolved_all),
        "failed_servers": failed,
        "healthy_servers": healthy,
        "recommendations": [],
        "servers": per_server,
        "run": run,
    }
    report["health"], report["recommendations"] = judge_run(report, required_down)
    return report


def _scrubber(secrets: Iterable[str]) -> Any:
    known = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(s) for s in known)) if known else None

    def scrub(text: str) -> str:
        text = pattern.sub(MASK, text) if pattern is not None else text
        return _URL_USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)

    return scrub


def _scrub_json(value: Any, scrub: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: MASK if _SECRET_WORD.search(str(k)) and isinstance(v, str) and v else _scrub_json(v, scrub)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_json(v, scrub) for v in value]
    return value


_RANK = {"EXCELLENT": 0, "GOOD": 1, "DEGRADED": 2, "CRITICAL": 3}


def judge_run(report: Mapping[str, Any], required_down: Sequence[str] = ()) -> tuple[str, list[str]]:
    """The run's health word and the advice that explains it, from one reading of the report.

    Why together: a word decided apart from the advice can say DEGRADED beside no advice at all.
    Here every reason that lowers the word adds the step that answers it. EXCELLENT: nothing
    happened. GOOD: every incident recovered during the run. DEGRADED: a server was used in
    fallback, one stayed down (an optional one, or a required one allowed in fallback), or the
    daemon was not watching for a while. CRITICAL: the job did not start, or a required server
    was down when it ended (``required_down``).
    """
    run = report.get("run") or {}
    if not run.get("started"):
        advice = [_fix_for(entry) for entry in (run.get("precheck") or {}).get("not_ready", [])]
        return "CRITICAL", advice or [str(run.get("not_started_reason") or "the job was not started: see the "
                                                                             "guardian's output above")]
    word = "GOOD" if run.get("incidents_total", len(run.get("incidents", []))) else "EXCELLENT"
    out: list[str] = []

    def because(at_least: str, text: str) -> None:
        nonlocal word
        word = at_least if _RANK[at_least] > _RANK[word] else word
        out.append(text)

    still_down = set()
    for incident in run.get("incidents", []):
        if not incident.get("resolved"):
            still_down.add(incident["server"])
            what = "required" if incident.get("required") else "optional"
            because("DEGRADED",
                    f"{incident['server']} ({what}) was still {incident['states'][-1] if incident.get('states') else 'down'} "
                    f"when the job ended: see `supervisorctl-mcp status` and the server's log")
    for server in required_down:
        state = (run.get("servers_after") or {}).get(server, "down")
        if server in still_down:
            word = "CRITICAL"
        else:
            because("CRITICAL", f"{server} (required) was {state} when the job ended: see `supervisorctl-mcp "
                                f"status` and the server's log")
    counts: dict[str, int] = {}
    for incident in run.get("incidents", []):
        counts[incident["server"]] = counts.get(incident["server"], 0) + 1
    for server, count in sorted(counts.items()):
        if count >= 2:
            out.append(f"{server} failed {count} times during one run: look at its log for the cause")
    for server in run.get("fallback", []):
        because("DEGRADED", f"{server} was used in fallback (direct API): fix it, then "
                            f"`supervisorctl-mcp recover {server}`")
    if run.get("unobserved") or (run.get("daemon") or {}).get("lost"):
        because("DEGRADED", "the supervisor was unreachable during the run: check `systemctl status mcp-supervisor`")
    if run.get("events_lost"):
        out.append("some events were lost (the guardian fell behind): the incident list may be incomplete")
    return word, out


def _problem_and_fix(entry: Mapping[str, Any]) -> tuple[str, str]:
    """("jira is needs_human (401 ...)", "renew its credentials, then ...") for a not-ready server."""
    name = entry.get("name", "?")
    state = entry.get("state", "?")
    reason = entry.get("reason") or ""
    hint = entry.get("hint") or ""
    klass = entry.get("failure_class")
    if state == "paused":
        action = f"it is paused: `supervisorctl-mcp resume {name}`"
    elif klass == "auth":
        action = f"renew its credentials, then `supervisorctl-mcp recover {name}`"
    elif klass == "config":
        action = f"fix its command or settings, then `supervisorctl-mcp recover {name}`"
    else:
        action = f"see `supervisorctl-mcp status`, then `supervisorctl-mcp recover {name}`"
    problem = f"{name} is {state}"
    if reason:
        problem += f" ({reason})"
    if hint:
        problem += f"; {hint}"
    return problem, f"{action}; or run with --allow-fallback to start the job without it"


def _fix_for(entry: Mapping[str, Any]) -> str:
    problem, fix = _problem_and_fix(entry)
    return f"{problem}: {fix}"


# --- the human summary -------------------------------------------------------------------------


def _clock(at: float | None) -> str:
    return "-" if at is None else time.strftime("%H:%M:%S", time.localtime(at))


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def summary_lines(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(style, text) lines for a terminal; the text is plain (never parsed as markup)."""
    from mcp_supervisor.cli.render import one_line

    run = report.get("run") or {}
    lines: list[tuple[str, str]] = []
    outcome = run.get("outcome", "?")
    if run.get("started"):
        how = f"signal {run['signal']}" if run.get("signal") else f"exit {run.get('exit_code')}"
        style = "green" if outcome == "succeeded" else "bold red"
        lines.append((style, f"run {run.get('run_id')}: {outcome}, {how} after {_seconds(run.get('duration_s'))}"))
    else:
        why = run.get("not_started_reason") or "?"
        lines.append(("bold red", f"run {run.get('run_id')}: the job was NOT started: {why} (exit {run.get('guardian_exit')})"))
    lines.append(("", f"  command: {one_line(run.get('command'), 160)}"))
    pre = run.get("precheck") or {}
    pre_text = f"  pre-check: {str(pre.get('outcome', '?')).replace('_', ' ')} after {_seconds(pre.get('waited_s'))}"
    if pre.get("recover_requested"):
        pre_text += f"; recovery asked for {', '.join(pre['recover_requested'])}"
    backup = pre.get("backup") or {}
    if backup.get("taken"):
        pre_text += f"; backup {backup.get('snapshot')}"
    elif backup.get("reason"):
        pre_text += f"; no backup ({backup['reason']})"
    lines.append(("", pre_text))
    for entry in pre.get("not_ready", []) if not run.get("started") else []:
        problem, fix = _problem_and_fix(entry)
        lines.append(("red", f"    {one_line(problem, 300)}"))
        lines.append(("", f"      -> {fix}"))
    if run.get("fallback"):
        lines.append(("magenta", f"  fallback (MCP_SUPERVISOR_FALLBACK): {', '.join(run['fallback'])}"))
    word = report.get("health", "?")
    colour = {"EXCELLENT": "bold green", "GOOD": "green", "DEGRADED": "yellow", "CRITICAL": "bold red"}.get(word, "")
    incidents = run.get("incidents", [])
    health = (
        f"  MCP health: {word}, {report.get('servers_healthy')}/{report.get('servers_total')} healthy at the end"
    )
    if incidents:
        health += (
            f"; {run.get('incidents_total', len(incidents))} incident(s), {report.get('recoveries')} recovered, MTTR {_seconds(report.get('mttr_s'))}"
        )
    lines.append((colour, health))
    for incident in incidents[:10]:
        first_bad = next((s for s in incident.get("states", []) if s in BAD_STATES), "down")
        klass = f" [{incident['failure_class']}]" if incident.get("failure_class") else ""
        text = f"    {incident['server']} {first_bad}{klass} at {_clock(incident.get('started_at'))}"
        if incident.get("resolved"):
            text += f" -> healthy at {_clock(incident.get('recovered_at'))} ({_seconds(incident.get('time_to_recovery_s'))})"
        else:
            text += " -> not recovered"
        if incident.get("reason"):
            text += f": {one_line(incident['reason'], 100)}"
        lines.append(("green" if incident.get("resolved") else "red", text))
    if len(incidents) > 10 or run.get("incidents_total", 0) > len(incidents):
        more = max(len(incidents), run.get("incidents_total", 0)) - 10
        lines.append(("", f"    ... and {more} more (see the report file)"))
    for gap in run.get("unobserved", []):
        back = f"back at {_clock(gap.get('back_at'))}" if gap.get("back_at") else "not back before the job ended"
        lines.append(("yellow", f"  the supervisor was unreachable from {_clock(gap.get('lost_at'))}, {back}"))
    if run.get("signals_forwarded"):
        lines.append(("", f"  signals passed to the job: {', '.join(run['signals_forwarded'])}"))
    if run.get("leftover_processes_killed"):
        lines.append(("yellow", f"  {run['leftover_processes_killed']} process(es) the job left behind were stopped"))
    for text in report.get("recommendations", [])[:3] if run.get("started") else []:
        lines.append(("", f"  -> {one_line(text, 200)}"))
    return lines
