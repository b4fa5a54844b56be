"""The guarded run's summary for a terminal: (style, text) lines from a REPORT (pure).

Why apart from the report: the REPORT is data (stored, sent, compared); this is one rendering
of it for ``supervisorctl-mcp run``, whose text is plain (the caller styles it, never parses it
as markup).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from mcp_supervisor.guard.report import problem_and_fix
from mcp_supervisor.guard.timeline import BAD_STATES


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
        problem, fix = problem_and_fix(entry)
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
