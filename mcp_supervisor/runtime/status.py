"""Status views of one server: the JSON the control API serves (a stable interface).

Why apart from the runner: these are pure projections of a ``ServerView`` (``runtime/snapshot.py``),
the immutable picture a runner publishes, read by the API, the CLI and scripts; they never see the
runner or its machine. That keeps the runner about running, and the field list in one place next
to its documentation (docs/operations.md, "Reading status").
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from mcp_supervisor.auth.registry import auth_status
from mcp_supervisor.health.model import ProbeResult, State
from mcp_supervisor.runtime.snapshot import ServerView


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


def server_status(view: ServerView, wall_offset: float) -> dict[str, Any]:
    """One server's entry in ``/v1/status``; monotonic times become wall clock via ``wall_offset``."""
    result = view.result
    return {
        "name": view.name,
        "state": str(view.state),
        "since": round(view.since + wall_offset, 3),
        "failure_class": str(result.failure) if result and result.failure else None,
        "message": result.message if result else "",
        "latency_ms": round(result.latency_ms, 2) if result else None,
        "critical": view.critical,
        "fallback": view.state is State.FALLBACK,
        "transport": view.transport,
        "kind": view.kind,
        "reason": view.reason,
        "attempt": view.attempt,
        "last_probe_at": round(view.last_probe_wall, 3) if view.last_probe_wall else None,
        "degraded": result.degraded if result else None,
        "hint": result.hint if result else None,
        "tool_count": view.tool_count,
        "protocol_version": result.protocol_version if result else None,
        "auth": auth_status(view.name),
        "maintenance": dict(zip(("id", "until", "reason"), view.maintenance, strict=True)) if view.maintenance else None,
        **process_fields(view, wall_offset),
        "standby": standby_fields(view, wall_offset),
    }


def standby_fields(view: ServerView, wall_offset: float) -> dict[str, Any] | None:
    """The warm standby instance (runtime/standby.py): its state, port, pid, and the role swaps."""
    if view.standby is None:
        return None
    entry = dict(view.standby)
    entry["since"] = round(float(entry["since"]) + wall_offset, 3)
    return entry


def process_fields(view: ServerView, wall_offset: float) -> dict[str, Any]:
    """What an operator of supervisord or systemd expects: pid, uptime, restarts, last exit."""
    started, next_at = view.started_at, view.next_attempt_at
    return {
        "pid": view.pid,
        # ManagedProcess stamps time.monotonic(), the event loop's clock too
        "started_at": round(started + wall_offset, 3) if started is not None else None,
        "restarts": view.restarts,
        "last_exit": view.last_exit,
        "next_attempt_at": round(next_at + wall_offset, 3) if next_at is not None else None,
    }


class DriftStats:
    """Percentiles of the probes' start drift for ``status``, recomputed at most once a second:
    sorting thousands of samples per request would make status cost grow with uptime."""

    def __init__(self, max_age: float = 1.0) -> None:
        self._max_age = max_age
        self._at = -max_age
        self._value: dict[str, Any] = {}

    def of(self, samples: Iterable[float]) -> dict[str, Any]:
        now = time.monotonic()
        if now - self._at >= self._max_age:
            ordered = sorted(samples)
            self._value = {
                "samples": len(ordered),
                "p50": _percentile(ordered, 0.5),
                "p99": _percentile(ordered, 0.99),
                "max": ordered[-1] if ordered else None,
            }
            self._at = now
        return self._value


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
