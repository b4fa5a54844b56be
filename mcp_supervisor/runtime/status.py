"""Status views of one server: the JSON the control API serves (a stable interface).

Why apart from the runner: these are pure projections of what the runner and its machine know,
read by the API, the CLI and scripts; keeping them here keeps the runner about running, and the
field list in one place next to its documentation (docs/operations.md, "Reading status").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcp_supervisor.health.exits import exit_text as exit_text  # the runner's import path
from mcp_supervisor.health.model import ProbeResult, State

if TYPE_CHECKING:
    from mcp_supervisor.runtime.runner import ServerRunner


def result_json(result: ProbeResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "ok": result.ok,
        "kind": str(result.kind),
        "failure_class": str(result.failure) if result.failure else None,
        "message": result.message,
        "latency_ms": round(result.latency_ms, 2),
        "phases_ms": {k: round(v, 2) for k, v in result.phases_ms.items()},
        "degraded": result.degraded,
        "server_name": result.server_name,
        "server_version": result.server_version,
        "protocol_version": result.protocol_version,
        "tool_count": result.tool_count,
        "hint": result.hint,
    }


def server_status(runner: ServerRunner, wall_offset: float) -> dict[str, Any]:
    """One server's entry in ``/v1/status``; monotonic times become wall clock via ``wall_offset``."""
    machine = runner.machine
    result = runner.last_result
    since = machine.since
    return {
        "name": runner.server.name,
        "state": str(machine.state),
        "since": round(since + wall_offset, 3),
        "failure_class": str(result.failure) if result and result.failure else None,
        "message": result.message if result else "",
        "latency_ms": round(result.latency_ms, 2) if result else None,
        "critical": runner.server.critical,
        "fallback": machine.state is State.FALLBACK,
        "transport": runner.server.transport,
        "kind": runner.server.kind,
        "reason": runner.reason(),
        "attempt": machine.attempt,
        "last_probe_at": round(runner.last_probe_wall, 3) if runner.last_probe_wall else None,
        "degraded": result.degraded if result else None,
        "hint": result.hint if result else None,
        "tool_count": runner.tool_count,
        "protocol_version": result.protocol_version if result else None,
        **process_fields(runner, wall_offset),
    }


def process_fields(runner: ServerRunner, wall_offset: float) -> dict[str, Any]:
    """What an operator of supervisord or systemd expects: pid, uptime, restarts, last exit."""
    process = runner.process
    running = process is not None and bool(getattr(process, "running", False))
    started = getattr(process, "started_at", None) if running else None
    next_at = runner.machine.next_attempt_at()
    return {
        "pid": getattr(process, "pid", None) if running else None,
        # ManagedProcess stamps time.monotonic(), the event loop's clock too
        "started_at": round(started + wall_offset, 3) if isinstance(started, int | float) else None,
        "restarts": runner.restarts,
        "last_exit": runner.last_exit,
        "next_attempt_at": round(next_at + wall_offset, 3) if next_at is not None else None,
    }
