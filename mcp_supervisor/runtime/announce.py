"""The events a runner publishes, built in one place: their kinds and fields are an interface.

Why apart from the runner: the record (``history/ingest.py``), the metrics, the dashboard, the
status page and the notifier all read these fields; keeping them together shows what each event
carries, and keeps the runner about deciding, not about spelling payloads.
"""

from __future__ import annotations

from mcp_supervisor.config import ServerConfig
from mcp_supervisor.events import Event
from mcp_supervisor.health.model import Notify, ProbeKind, ProbeResult, Transition


def probe_event(server: ServerConfig, kind: ProbeKind, result: ProbeResult, *, stale: bool, void: bool) -> Event:
    """One probe done. ``stale``: it began before an action or exit; ``void``: a timeout measured
    by a late event loop. Neither is a verdict, and a void one carries no failure class."""
    return Event(kind="probe", server=server.name, data={
        "ok": result.ok, "probe": str(kind),
        "failure_class": str(result.failure) if result.failure and not void else None,
        "latency_ms": round(result.latency_ms, 2), "stale": stale, "void": void})


def state_event(server: ServerConfig, transition: Transition, attempt: int, result: ProbeResult | None) -> Event:
    return Event(kind="state", server=server.name, data={
        "old": str(transition.old),
        "new": str(transition.new),
        "reason": transition.reason,
        "attempt": attempt,
        "failure_class": str(result.failure) if result and result.failure else None,
        "critical": server.critical,
    })


def notify_event(server: ServerConfig, action: Notify) -> Event:
    return Event(kind="notify", server=server.name,
                 data={"notify": action.kind, "severity": action.severity, "detail": action.detail})


def exit_event(server: ServerConfig, code: int | None, exited: str, *, oom: bool = False) -> Event:
    return Event(kind="process_exit", server=server.name, data={"returncode": code, "exit": exited, "oom": oom})
