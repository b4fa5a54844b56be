"""What the status page shows, as one JSON document (pure: status and record in, summary out).

Why one document: the page fetches it on load and again on every live event, so there is a single
shape to test and to keep free of secrets. Nothing here does I/O; the record is asked through the
small ``UptimeSource`` protocol so the page works (with empty bars) before a record exists.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mcp_supervisor.health.auth_view import auth_facts

DAYS = 90
_UP = frozenset({"healthy", "degraded", "rate_limited"})
_NOT_COUNTED = frozenset({"paused", "starting", "maintenance"})


@dataclass(frozen=True)
class RecordData:
    """What the record contributes to the page (all optional: the page works without a record)."""

    cells: dict[str, list[float | None]] = field(default_factory=dict)
    """server -> uptime % per UTC day, oldest first; None where nothing was observed."""
    incidents: list[dict[str, Any]] | None = None
    """newest first: server, started_at, resolved_at, duration_s, failure_class, state."""
    report: dict[str, Any] | None = None


class PageRecord(Protocol):
    """The reliability record, as far as the page needs it (``web/record.py`` adapts history/)."""

    async def page_data(self, days: int, now: float) -> RecordData: ...


@dataclass
class IncidentLog:
    """Incidents seen since the daemon started (the page's fallback when there is no record).

    Fed with state events: an incident opens when a server leaves healthy/degraded and closes when it
    returns; its time to recovery is the difference.
    """

    limit: int = 200
    open: dict[str, dict[str, Any]] = field(default_factory=dict)
    closed: list[dict[str, Any]] = field(default_factory=list)

    def on_state(self, server: str, old: str, new: str, at: float, failure_class: str | None) -> None:
        if new in _UP or new in _NOT_COUNTED:
            incident = self.open.pop(server, None)
            if incident is not None and new in _UP:
                incident["resolved_at"] = at
                incident["duration_s"] = round(at - incident["started_at"], 3)
                self.closed.insert(0, incident)
                del self.closed[self.limit :]
            return
        if server not in self.open and (old in _UP or old in _NOT_COUNTED):
            self.open[server] = {"server": server, "started_at": at, "resolved_at": None, "duration_s": None,
                                 "failure_class": failure_class, "state": new}
        elif server in self.open:
            self.open[server]["state"] = new
            self.open[server]["failure_class"] = self.open[server]["failure_class"] or failure_class

    def incidents(self) -> list[dict[str, Any]]:
        return sorted(self.open.values(), key=lambda i: -i["started_at"]) + list(self.closed)


def day_labels(now: float, days: int = DAYS) -> list[str]:
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    return [(today - dt.timedelta(days=days - 1 - i)).isoformat() for i in range(days)]


def _page_auth(entry: object) -> dict[str, Any] | None:
    """The token's kind and times for the page; not the problem text (it names commands)."""
    facts = auth_facts(entry)
    if facts is None:
        return None
    return {k: v for k, v in facts.items() if k != "problem"}


def build_summary(
    status: Mapping[str, Any],
    *,
    title: str,
    now: float,
    scrub: Callable[[str], str],
    record: RecordData | None = None,
    incident_log: IncidentLog | None = None,
    days: int = DAYS,
) -> dict[str, Any]:
    """The page's document. Only what a read-only viewer may see: no hints with commands, no config."""
    labels = day_labels(now, days)
    record = record or RecordData()
    servers: list[dict[str, Any]] = []
    for server in status.get("servers", ()):
        name = str(server.get("name"))
        cells: Sequence[float | None] = record.cells.get(name) or [None] * days
        observed = [c for c in cells if c is not None]
        servers.append({
            "name": name,
            # a maintenance window is said as such, not as "paused" (issue 18)
            "state": "maintenance" if server.get("maintenance") else server.get("state"),
            "maintenance": server.get("maintenance"),
            "since": server.get("since"),
            "critical": bool(server.get("critical", True)),
            "latency_ms": server.get("latency_ms"),
            "message": scrub(str(server.get("message") or "")),
            "auth": _page_auth(server.get("auth")),
            "uptime_days": [{"day": day, "uptime_pct": cell} for day, cell in zip(labels, cells, strict=False)],
            "uptime_pct": round(sum(observed) / len(observed), 3) if observed else None,
        })
    if record.incidents is not None:
        incidents = record.incidents
    elif incident_log is not None:
        incidents = incident_log.incidents()
    else:
        incidents = []
    daemon = status.get("daemon", {}) if isinstance(status.get("daemon"), Mapping) else {}
    return {
        "title": title,
        "generated_at": now,
        "ready": bool(status.get("ready")),
        "summary": daemon.get("summary"),
        "servers": servers,
        "incidents": [_plain_incident(i, scrub) for i in incidents[:50]],
        "report": _scrub_report(record.report, scrub),
    }


def _scrub_report(report: Mapping[str, Any] | None, scrub: Callable[[str], str]) -> dict[str, Any] | None:
    if report is None:
        return None
    keep = ("period", "since", "until", "health", "servers_total", "servers_healthy", "uptime_pct",
            "recovery_rate", "mttr_s", "recoveries", "recommendations")
    return {k: ([scrub(str(r)) for r in v] if k == "recommendations" and isinstance(v, list) else v)
            for k, v in report.items() if k in keep}


def _plain_incident(incident: Mapping[str, Any], scrub: Callable[[str], str]) -> dict[str, Any]:
    keep = ("server", "started_at", "resolved_at", "duration_s", "failure_class", "state")
    return {k: scrub(v) if isinstance(v, str) else v for k, v in incident.items() if k in keep}


def uptime_from_intervals(
    intervals: Iterable[tuple[float, float, str]], days: int, now: float
) -> list[float | None]:
    """Daily uptime cells from (start, end, state) intervals: healthy over observed time per UTC day.

    Paused and unknown time is left out of both sides (it is neither up nor down), as in the record.
    """
    today = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = (today - dt.timedelta(days=days - 1)).timestamp()
    up = [0.0] * days
    seen = [0.0] * days
    for start, end, state in intervals:
        if state in _NOT_COUNTED or state == "unknown":
            continue
        start, end = max(start, first), min(end, now)
        while start < end:
            index = int((start - first) // 86400)
            day_end = first + (index + 1) * 86400
            piece = min(end, day_end) - start
            if 0 <= index < days:
                seen[index] += piece
                if state in _UP:
                    up[index] += piece
            start += piece
    return [round(100.0 * u / s, 3) if s > 0 else None for u, s in zip(up, seen, strict=True)]
