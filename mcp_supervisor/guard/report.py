"""The guarded run's report: pure functions from what the guardian saw to a REPORT (period "run").

Why pure: the guardian (``guard/session.py``, ``cli/guardian.py``) is all I/O (a child process,
signals, a socket, an event stream); what the report *says* (time to recovery, uptime over the
observed time, the health word, the advice) is decided here from plain data, so it is tested
without any of it. What happened (incidents, unobserved gaps) comes from ``timeline.py``; what
may be shown of the command and the texts from ``masking.py``; the terminal summary of a REPORT
is ``summary.py``. Time the guardian could not watch (the daemon went away) is "unobserved",
never counted as healthy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mcp_supervisor.guard.masking import command_line, redact_argv, scrub_json, scrubber
from mcp_supervisor.guard.timeline import GOOD_STATES, Gap, Incident, fold_events

MAX_INCIDENTS = 200
"""The incidents one report lists (the newest; the metrics count all): a server flapping through a
long job must not make the report too big for the record, the API (1 MB bodies) or Slack."""


def exit_code_of(returncode: int) -> int:
    """The guardian's own exit code for a job's ``returncode`` (a signal N becomes 128+N, as in sh)."""
    return returncode if returncode >= 0 else 128 - returncode


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
    scrub = scrubber(facts.secrets)
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
        "precheck": scrub_json(facts.precheck, scrub),
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


def problem_and_fix(entry: Mapping[str, Any]) -> tuple[str, str]:
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
    problem, fix = problem_and_fix(entry)
    return f"{problem}: {fix}"


