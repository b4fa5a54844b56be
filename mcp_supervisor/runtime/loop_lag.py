"""How late the daemon's own event loop runs: the measure that keeps its load off the servers' record.

Why: a probe deadline is measured by the same loop that has to read the answer. When the loop is
late (a start-up or reload of hundreds of servers, an incident's bookkeeping, a machine whose cores
another process holds), an answer can sit unread in a socket while the deadline fires: that is the
daemon failing to ask, not the server failing to answer. A ticker that sleeps ``tick`` seconds and
notes how much later it woke gives the loop's lateness; the running sum of lateness (``total``) lets
anyone ask "how much time did the loop lose between then and now" in O(1) with ``stolen_since``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

TICK = 0.05
"""Seconds between samples: fine enough to see a 100 ms stall, ~20 wake-ups a second (~0.1 % CPU)."""
WINDOW = 10.0
"""Seconds over which ``recent_max`` reports the worst lateness (the metric's gauge)."""


class LoopLag:
    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        self.total = 0.0
        """Seconds the loop has been late since the monitor started (only grows)."""
        self.samples = 0
        self._expected: float | None = None
        self._recent: deque[tuple[float, float]] = deque()
        """(when, lateness) of the samples above 1 ms in the last ``WINDOW`` seconds."""
        self._max_ever = 0.0

    def mark(self) -> float:
        """A point to measure from: pass it to ``stolen_since`` later."""
        return self.total + self._pending()

    def stolen_since(self, mark: float) -> float:
        """Seconds the loop was late since ``mark``, including a stall still in progress."""
        return max(0.0, self.total + self._pending() - mark)

    def _pending(self) -> float:
        """Lateness of the tick that is due but has not run yet (the loop is stalled right now)."""
        if self._expected is None:
            return 0.0
        return max(0.0, time.monotonic() - self._expected)

    def recent_max(self, now: float | None = None) -> float:
        """The worst lateness in the last ``WINDOW`` seconds (0.0 when the loop kept time)."""
        now = time.monotonic() if now is None else now
        self._trim(now)
        worst = max((late for _, late in self._recent), default=0.0)
        return max(worst, self._pending())

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - WINDOW:
            self._recent.popleft()

    def record(self, lateness: float, now: float) -> None:
        """One sample (also the test seam: a lateness observed at monotonic time ``now``)."""
        self.samples += 1
        late = max(0.0, lateness)
        self.total += late
        self._max_ever = max(self._max_ever, late)
        if late > 0.001:
            self._recent.append((now, late))
            self._trim(now)

    def stats(self) -> dict[str, float | int]:
        return {
            "recent_max_ms": round(self.recent_max() * 1000.0, 1),
            "max_ms": round(self._max_ever * 1000.0, 1),
            "total_s": round(self.total, 3),
            "samples": self.samples,
        }

    async def run(self) -> None:
        """Sample forever (a task of the daemon's TaskGroup; cancelled at shutdown)."""
        while True:
            expected = time.monotonic() + self.tick
            self._expected = expected
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            self._expected = None
            self.record(now - expected, now)
