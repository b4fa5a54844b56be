"""Probe schedules on a monotonic grid (pure: time is passed in).

Why a grid: ``sleep(interval)`` after each probe drifts by the probe's own duration and the loop's
lateness, so 200 servers slowly bunch up. Tick k is always at ``start + k * interval``; a tick that
was missed (a probe ran long, the machine was suspended) is skipped, never made up in a burst.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mcp_supervisor.health.model import ProbeKind


@dataclass
class Grid:
    start: float
    interval: float
    next_at: float = math.nan
    skipped: int = 0

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError("a grid needs a positive interval")
        if math.isnan(self.next_at):
            self.next_at = self.start

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def advance(self, now: float) -> float:
        """Consume the due tick and return the planned time of the tick being run.

        That is the latest tick at or before ``now``; older ticks that were missed are skipped
        (counted in ``skipped``), and the grid moves to the first tick after ``now``.
        """
        k = max(0, math.floor((now - self.start) / self.interval))
        planned = max(self.next_at, self.start + k * self.interval)
        if planned > now:  # float rounding at an exact tick
            planned = self.next_at
        self.skipped += max(0, round((planned - self.next_at) / self.interval))
        self.next_at = planned + self.interval
        while self.next_at <= now:
            self.next_at += self.interval
        return planned


# Heaviest first: a cold spawn or a tools/list also proves what a warm check proves.
_PRIORITY = (ProbeKind.COLD, ProbeKind.TOOLS, ProbeKind.WARM)


class ProbeSchedule:
    """The grids of one server: WARM every interval, TOOLS every tools_interval, COLD (stdio)."""

    def __init__(
        self,
        start: float,
        interval: float,
        tools_interval: float | None = None,
        cold_interval: float | None = None,
    ) -> None:
        self.grids: dict[ProbeKind, Grid] = {ProbeKind.WARM: Grid(start, interval)}
        if tools_interval and tools_interval > 0:
            self.grids[ProbeKind.TOOLS] = Grid(start, tools_interval)
        if cold_interval and cold_interval > 0:
            self.grids[ProbeKind.COLD] = Grid(start, cold_interval)

    def next_at(self) -> float:
        return min(g.next_at for g in self.grids.values())

    def take(self, now: float) -> tuple[ProbeKind, float] | None:
        """The probe to run now and its planned start, or None when nothing is due.

        Every due grid is advanced; the heaviest due kind is the one run.
        """
        due = [kind for kind in _PRIORITY if kind in self.grids and self.grids[kind].due(now)]
        if not due:
            return None
        planned = [self.grids[kind].advance(now) for kind in due]
        return due[0], min(planned)
