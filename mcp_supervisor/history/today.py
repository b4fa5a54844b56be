"""Today's uptime per server, kept up to date from what changed instead of recomputed per request.

Why incremental: the status page asks for today's cell on every live update, and a flapping fleet
writes thousands of intervals a day; walking all of them per request cost more than the rest of
the page. A closed interval never changes, so it is folded once into per-server sums (``up_s``,
``seen_s``); only the intervals still open are measured at request time, up to ``now``. The rows
come from the record (``HistoryDB.interval_rows``): all of today's once a day, then only those
newer than the last seen id plus the ones seen open. Pure: no I/O, the clock is passed in.

Counted as in the record: healthy/degraded time is up; paused, starting and unknown time is
neither up nor observed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

IntervalRow = tuple[int, str, str, float, "float | None"]
"""(id, server, state, began, ended): one row of the record's ``intervals`` table."""
UP = frozenset({"healthy", "degraded", "rate_limited"})
NOT_COUNTED = frozenset({"paused", "starting", "unknown"})


@dataclass
class DayUptime:
    """Up and observed seconds per server since ``start`` (a UTC midnight)."""

    start: float
    up_s: dict[str, float] = field(default_factory=dict)
    seen_s: dict[str, float] = field(default_factory=dict)
    open: dict[int, tuple[str, str, float]] = field(default_factory=dict)
    """id -> (server, state, began) of the intervals still open when last folded."""
    last_id: int = 0

    def fold(self, rows: Iterable[IntervalRow]) -> None:
        """Take in new rows and the re-read open ones; a closed row is added once, for good."""
        for row_id, server, state, began, ended in rows:
            self.last_id = max(self.last_id, row_id)
            self.up_s.setdefault(server, 0.0)
            self.seen_s.setdefault(server, 0.0)
            if ended is None:
                self.open[row_id] = (server, state, began)
                continue
            self.open.pop(row_id, None)
            self._add(server, state, began, ended)

    def _add(self, server: str, state: str, began: float, ended: float) -> None:
        span = ended - max(began, self.start)
        if span <= 0 or state in NOT_COUNTED:
            return
        self.seen_s[server] = self.seen_s.get(server, 0.0) + span
        if state in UP:
            self.up_s[server] = self.up_s.get(server, 0.0) + span

    def cells(self, now: float) -> dict[str, float | None]:
        """Today's uptime % per server at ``now`` (None: nothing observed yet today)."""
        up = dict(self.up_s)
        seen = dict(self.seen_s)
        for server, state, began in self.open.values():
            span = now - max(began, self.start)
            if span > 0 and state not in NOT_COUNTED:
                seen[server] = seen.get(server, 0.0) + span
                if state in UP:
                    up[server] = up.get(server, 0.0) + span
        return {server: round(100.0 * up.get(server, 0.0) / s, 3) if s > 0 else None for server, s in seen.items()}
