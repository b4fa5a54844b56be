"""The reliability record (history/), seen the way the status page needs it.

Why an adapter with caches: the page wants 90 daily uptime cells per server, recent incidents and
the latest daily report, on every live update. Past days never change, so their cells are computed
once per UTC day (warmed when the page starts). Today's cells are kept incrementally
(``history.today.DayUptime``): each request reads only the interval rows that changed since the
last one (new ids, and the ones it saw open), never today's whole history. Recent incidents and
the report are recomputed when a state change arrives (``changed()``) or after a minute. The reads
run in the record's own worker thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from mcp_supervisor.history.metrics import Interval
from mcp_supervisor.history.metrics import incidents as find_incidents
from mcp_supervisor.history.today import DayUptime
from mcp_supervisor.web.summary import RecordData, uptime_from_intervals

TTL = 60.0
INCIDENT_DAYS = 7


def _midnight(now: float) -> float:
    return dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def daily_cells(intervals: Sequence[Interval], days: int, until: float) -> dict[str, list[float | None]]:
    by_server: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for interval in intervals:
        end = interval.end if interval.end is not None else until
        by_server[interval.server].append((interval.start, min(end, until), interval.state))
    return {name: uptime_from_intervals(rows, days, until) for name, rows in by_server.items()}


class HistoryRecordView:
    def __init__(self, history: Any) -> None:
        self.history = history
        self._past: tuple[float, int, dict[str, list[float | None]]] | None = None
        """(midnight it was computed for, days, server -> cells of the days before today)."""
        self._recent: tuple[float, list[dict[str, Any]], dict[str, Any] | None] | None = None
        self._lock = asyncio.Lock()
        self._today: DayUptime | None = None
        self._today_lock = asyncio.Lock()  # two requests at once must not fold the same rows twice

    def changed(self) -> None:
        """A state changed: the next request recomputes incidents and the report."""
        self._recent = None

    async def warm(self, days: int) -> None:
        await self._past_cells(days, time.time())

    async def _past_cells(self, days: int, now: float) -> dict[str, list[float | None]]:
        midnight = _midnight(now)
        async with self._lock:
            if self._past is None or self._past[0] != midnight or self._past[1] != days:
                first = midnight - (days - 1) * 86400.0
                intervals = await self.history.load_intervals(first, midnight)
                # cells for days-1 complete days, ending at the last second before today
                self._past = (midnight, days, daily_cells(intervals, days - 1, midnight - 0.001))
            return self._past[2]

    async def _today_cells(self, now: float) -> dict[str, float | None]:
        async with self._today_lock:
            return await self._fold_today(now)

    async def _fold_today(self, now: float) -> dict[str, float | None]:
        midnight = _midnight(now)
        today = self._today
        if today is None or today.start != midnight:
            today = DayUptime(midnight)
            today.fold(await self.history.interval_rows(midnight))
        else:
            watched = list(today.open)
            rows = await self.history.interval_rows(midnight, today.last_id, watched)
            if not set(watched) <= {row[0] for row in rows}:  # the record was replaced (moved aside)
                today = DayUptime(midnight)
                rows = await self.history.interval_rows(midnight)
            today.fold(rows)
        self._today = today
        return today.cells(now)

    async def page_data(self, days: int, now: float) -> RecordData:
        past = await self._past_cells(days, now)
        today = await self._today_cells(now)
        names = set(past) | set(today)
        cells = {name: [*(past.get(name) or [None] * (days - 1)), today.get(name)] for name in names}
        if self._recent is None or now - self._recent[0] > TTL:
            recent = await self.history.load_intervals(now - INCIDENT_DAYS * 86400.0, now)
            found = sorted(find_incidents(recent), key=lambda i: -i.start)[:50]
            incidents = [
                {"server": i.server, "started_at": i.start, "resolved_at": i.end if i.outcome == "healed" else None,
                 "duration_s": round(i.duration(now), 3) if i.outcome == "healed" else None,
                 "failure_class": i.failure_class, "state": i.outcome}
                for i in found
            ]
            report: dict[str, Any] | None = await self.history.report(now - 86400.0, now, "day")
            self._recent = (now, incidents, report)
        return RecordData(cells=cells, incidents=self._recent[1], report=self._recent[2])
