"""Calls the proxy held, retried and failed, folded per incident: "3 calls held 0.6 s during the
pay restart, 0 failed" in the record's report, not only in ``/metrics`` and the run report.

Why read-side only: the proxy already publishes one ``proxy`` event per restart as it lived it
(held, retried, failed, longest hold; ``proxy/service.py``), and the recorder already writes every
such event into ``events`` through the record's one writer. Folding them onto the incidents the
intervals give (``metrics.incidents``) at report time needs no table and no second writer.
An episode belongs to the incident of its server that was open when it began (a little slack: the
proxy may notice a dead backend before the first failed probe does); one with no such incident
(a rate limit, or a restart the probes never saw) is counted on its own, ``incident: null``.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mcp_supervisor.history.metrics import Incident, Interval, Window, incidents

SLACK = 5.0
"""Seconds an episode may begin before its incident (the proxy sees a dead backend first)."""


@dataclass(frozen=True)
class Episode:
    server: str
    start: float
    end: float
    held: int
    retried: int
    failed: int
    max_held_s: float


def _number(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def load(conn: sqlite3.Connection, since: float, until: float) -> list[Episode]:
    """The proxy's episodes that ended in the window (read in the record's writer thread)."""
    found: list[Episode] = []
    for at, server, data in conn.execute(
            "SELECT at, server, data FROM events WHERE kind = 'proxy' AND at >= ? AND at < ? ORDER BY at",
            (since, until)):
        try:
            payload = json.loads(data) if data else {}
        except ValueError:
            continue
        if not isinstance(payload, dict) or payload.get("event") != "restored" or not server:
            continue
        found.append(Episode(server, at - _number(payload, "duration_s"), at, int(_number(payload, "held")),
                             int(_number(payload, "retried")), int(_number(payload, "failed")),
                             _number(payload, "max_held_s")))
    return found


def _owner(episode: Episode, candidates: Sequence[Incident]) -> Incident | None:
    for incident in candidates:
        end = incident.end if incident.end is not None else float("inf")
        if incident.start - SLACK <= episode.start <= end:
            return incident
    return None


def fold(found: Iterable[Incident], episodes: Iterable[Episode]) -> dict[str, list[dict[str, Any]]]:
    """Per server, one entry per incident (or none) that the proxy lived through: its counts."""
    by_server: dict[str, list[Incident]] = defaultdict(list)
    for incident in found:
        by_server[incident.server].append(incident)
    rows: dict[tuple[str, float | None], dict[str, Any]] = {}
    for episode in episodes:
        owner = _owner(episode, by_server.get(episode.server, ()))
        key = (episode.server, owner.start if owner is not None else None)
        row = rows.setdefault(key, {
            "incident": None if owner is None else {
                "start": owner.start, "end": owner.end, "failure_class": owner.failure_class},
            "held": 0, "retried": 0, "failed": 0, "max_held_s": 0.0})
        row["held"] += episode.held
        row["retried"] += episode.retried
        row["failed"] += episode.failed
        row["max_held_s"] = round(max(row["max_held_s"], episode.max_held_s), 3)
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (server, _start), row in sorted(rows.items(), key=lambda item: (item[0][0], float("inf") if item[0][1] is None else item[0][1])):
        out[server].append(row)
    return dict(out)


def add_to(report: dict[str, Any], intervals: Sequence[Interval], episodes: Sequence[Episode],
           window: Window) -> None:
    """Put each server's proxy counts into the report: totals and the per-incident list."""
    if not episodes:
        return
    per_server = fold(incidents(intervals), [e for e in episodes if window.start <= e.end < window.end])
    servers = report.setdefault("servers", {})
    for server, rows in per_server.items():
        entry = servers.setdefault(server, {})
        entry["proxy"] = {
            "held": sum(r["held"] for r in rows),
            "retried": sum(r["retried"] for r in rows),
            "failed": sum(r["failed"] for r in rows),
            "incidents": rows,
        }
