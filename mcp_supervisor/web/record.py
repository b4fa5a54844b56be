"""The reliability record (history/), seen the way the status page needs it.

Why an adapter: the page wants per-day uptime cells, incidents and the latest daily report; the
record answers windows. The work runs in the record's own worker thread, and the day's report is
cached for a minute so a page open in many tabs costs the daemon next to nothing.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from mcp_supervisor.history.metrics import incidents as find_incidents
from mcp_supervisor.web.summary import RecordData, uptime_from_intervals

REPORT_TTL = 60.0


class HistoryRecordView:
    def __init__(self, history: Any) -> None:
        self.history = history
        self._report: tuple[float, dict[str, Any] | None] | None = None

    async def page_data(self, days: int, now: float) -> RecordData:
        today = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        first = (today - dt.timedelta(days=days - 1)).timestamp()
        record = await self.history.load_record(first, now)
        by_server: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        for interval in record.intervals:
            end = interval.end if interval.end is not None else now
            by_server[interval.server].append((interval.start, end, interval.state))
        cells = {name: uptime_from_intervals(rows, days, now) for name, rows in by_server.items()}
        found = sorted(find_incidents(record.intervals), key=lambda i: -i.start)[:50]
        incidents = [
            {"server": i.server, "started_at": i.start, "resolved_at": i.end if i.outcome == "healed" else None,
             "duration_s": round(i.duration(now), 3) if i.outcome == "healed" else None,
             "failure_class": i.failure_class, "state": i.outcome}
            for i in found
        ]
        return RecordData(cells=cells, incidents=incidents, report=await self._daily_report(now))

    async def _daily_report(self, now: float) -> dict[str, Any] | None:
        if self._report is not None and now - self._report[0] < REPORT_TTL:
            return self._report[1]
        report: dict[str, Any] | None = await self.history.report(now - 86400.0, now, "day")
        self._report = (now, report)
        return report
