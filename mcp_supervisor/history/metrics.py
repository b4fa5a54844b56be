"""Reliability numbers from the record, for any window: pure functions, no I/O, no clock reads.

Why pure: the numbers people act on (uptime, MTTR, recovery rate) must be exactly right, windows
cut through intervals, and the daemon's own absence must count as *unknown*, never as healthy.
Everything here takes the record's rows and the window (and ``now`` for still-open rows) and can
be tested as a table of inputs and answers.

Definitions (also in docs/operations.md):
- *up* = ``healthy`` or ``degraded`` (the server answers; readiness counts both);
  *down* = ``failed``, ``recovering``, ``backoff``, ``fallback``, ``needs_human``;
  ``paused``, ``maintenance`` (a maintenance window: ``supervisorctl-mcp maintenance``) and
  ``starting`` are neither (excluded and shown), nor is time the daemon was not running (``unknown``).
- uptime % = up time / (up + down time).
- an *incident* runs from entering a down state to the next up state (``healed``); a pause or the
  daemon's absence ends it without a verdict (``interrupted``); still down at the window's end or
  now means ``open``.
- MTTR = mean duration of the incidents healed inside the window (failure to healthy).
- recovery rate = incidents healed inside the window / (those + incidents still down at its end).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

UP_STATES = frozenset({"healthy", "degraded", "rate_limited"})
DOWN_STATES = frozenset({"failed", "recovering", "backoff", "fallback", "needs_human"})
GAP_TOLERANCE = 1.0
"""Seconds between one interval's end and the next one's start that still count as continuous."""


@dataclass(frozen=True)
class Interval:
    """A server in one state from ``start`` to ``end`` (None: still open)."""

    server: str
    state: str
    start: float
    end: float | None = None
    failure_class: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class DaemonRun:
    """The daemon watching from ``start`` to ``end`` (None: running now)."""

    start: float
    end: float | None = None


@dataclass(frozen=True)
class Attempt:
    """One recovery attempt: a rung, its number, and how it ended ('ok' or 'failed')."""

    server: str
    rung: str
    attempt: int | None
    started: float
    ended: float
    outcome: str
    detail: str = ""


@dataclass(frozen=True)
class Notice:
    """A notable event for patterns and advice: notify kinds, 'oom', 'process_exit', ..."""

    at: float
    server: str | None
    kind: str
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Incident:
    server: str
    start: float
    end: float | None
    failure_class: str | None
    outcome: str  # 'healed' | 'open' | 'interrupted'

    def duration(self, now: float) -> float:
        return (self.end if self.end is not None else now) - self.start


@dataclass(frozen=True)
class Window:
    start: float
    end: float

    @property
    def length(self) -> float:
        return max(0.0, self.end - self.start)


def overlap(start: float, end: float, window: Window) -> float:
    """Seconds of [start, end) inside the window."""
    return max(0.0, min(end, window.end) - max(start, window.start))


def _merged(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def unknown_seconds(runs: Iterable[DaemonRun], window: Window, now: float) -> float:
    """Time in the window when no daemon was watching (before ``now``; the future is not unknown)."""
    horizon = Window(window.start, min(window.end, now))
    watched = sum(overlap(s, e, horizon) for s, e in _merged((r.start, r.end if r.end is not None else now) for r in runs))
    return max(0.0, horizon.length - watched)


def state_seconds(intervals: Iterable[Interval], window: Window, now: float) -> dict[str, dict[str, float]]:
    """{server: {state: seconds inside the window}}; open intervals run until ``now``."""
    out: dict[str, dict[str, float]] = {}
    for iv in intervals:
        end = iv.end if iv.end is not None else now
        seconds = overlap(iv.start, end, window)
        states = out.setdefault(iv.server, {})  # listed even when only around the window
        if seconds > 0:
            states[iv.state] = states.get(iv.state, 0.0) + seconds
    return out


@dataclass(frozen=True)
class Uptime:
    pct: float | None
    up_s: float
    down_s: float
    paused_s: float
    starting_s: float
    maintenance_s: float = 0.0

    @property
    def observed_s(self) -> float:
        return self.up_s + self.down_s


def uptime(states: dict[str, float]) -> Uptime:
    up = sum(v for k, v in states.items() if k in UP_STATES)
    down = sum(v for k, v in states.items() if k in DOWN_STATES)
    pct = round(100.0 * up / (up + down), 4) if up + down > 0 else None
    return Uptime(pct, up, down, states.get("paused", 0.0), states.get("starting", 0.0), states.get("maintenance", 0.0))


def overall_uptime(per_server: dict[str, Uptime]) -> Uptime:
    """Time-weighted over servers: every observed server-second counts the same."""
    up = sum(u.up_s for u in per_server.values())
    down = sum(u.down_s for u in per_server.values())
    pct = round(100.0 * up / (up + down), 4) if up + down > 0 else None
    return Uptime(pct, up, down, sum(u.paused_s for u in per_server.values()),
                  sum(u.starting_s for u in per_server.values()), sum(u.maintenance_s for u in per_server.values()))


def incidents(intervals: Sequence[Interval]) -> list[Incident]:
    """Incidents of every server, from its intervals (any order)."""
    by_server: dict[str, list[Interval]] = defaultdict(list)
    for iv in intervals:
        by_server[iv.server].append(iv)
    found: list[Incident] = []
    for server, rows in by_server.items():
        rows.sort(key=lambda iv: iv.start)
        current: tuple[float, str | None] | None = None
        previous_end: float | None = None
        for iv in rows:
            contiguous = previous_end is None or iv.start - previous_end <= GAP_TOLERANCE
            if current is not None and not contiguous:
                # the daemon was away: we cannot say when (or whether) it healed
                found.append(Incident(server, current[0], previous_end, current[1], "interrupted"))
                current = None
            if iv.state in DOWN_STATES:
                if current is None:
                    current = (iv.start, iv.failure_class)
                elif current[1] is None and iv.failure_class:
                    current = (current[0], iv.failure_class)
            elif iv.state in UP_STATES and current is not None:
                found.append(Incident(server, current[0], iv.start, current[1], "healed"))
                current = None
            elif iv.state in ("paused", "maintenance") and current is not None:
                found.append(Incident(server, current[0], iv.start, current[1], "interrupted"))
                current = None
            previous_end = iv.end
        if current is not None:
            last = rows[-1]
            if last.end is None:
                found.append(Incident(server, current[0], None, current[1], "open"))
            else:
                found.append(Incident(server, current[0], last.end, current[1], "interrupted"))
    found.sort(key=lambda i: i.start)
    return found


@dataclass(frozen=True)
class RecoveryStats:
    healed: int
    unhealed: int
    rate: float | None
    mttr_s: float | None
    durations: tuple[float, ...]


def recovery_stats(found: Iterable[Incident], window: Window, now: float) -> RecoveryStats:
    """Healed inside the window vs still down at its end (or now, for a window reaching the future)."""
    edge = min(window.end, now)
    healed: list[float] = []
    unhealed = 0
    for inc in found:
        if inc.start >= edge:
            continue
        if inc.outcome == "healed" and inc.end is not None and window.start <= inc.end <= window.end:
            healed.append(inc.end - inc.start)
        elif inc.outcome != "interrupted" and (inc.end is None or inc.end > edge) and inc.start < edge:
            unhealed += 1
    total = len(healed) + unhealed
    rate = round(len(healed) / total, 4) if total else None
    mttr = round(sum(healed) / len(healed), 3) if healed else None
    return RecoveryStats(len(healed), unhealed, rate, mttr, tuple(healed))


def failures_by_class(found: Iterable[Incident], window: Window) -> dict[str, dict[str, int]]:
    """{server: {failure class: incidents that began in the window}}."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for inc in found:
        if window.start <= inc.start < window.end:
            out[inc.server][inc.failure_class or "unknown"] += 1
    return {server: dict(counts) for server, counts in out.items()}


def states_at(intervals: Iterable[Interval], at: float) -> dict[str, str]:
    """Each server's state at ``at`` (the latest interval covering it); servers with none are left out."""
    best: dict[str, Interval] = {}
    for iv in intervals:
        if iv.start > at or (iv.end is not None and iv.end < at):
            continue
        current = best.get(iv.server)
        if current is None or iv.start >= current.start:
            best[iv.server] = iv
    return {server: iv.state for server, iv in best.items()}


def attempts_in(attempts: Iterable[Attempt], window: Window) -> list[Attempt]:
    return [a for a in attempts if window.start <= a.started < window.end]
