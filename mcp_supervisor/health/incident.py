"""What one server's incident has cost so far: the alert bookkeeping and the recovery budget (pure).

Why apart from ``machine.py``: the machine decides which state comes next (the transition logic);
this module keeps the record it decides from and words what a person reads. ``Incident`` is the
Alertmanager-style grouping (when the outage began, whether a person was told, the text they got,
a resolution held back while the server flaps); ``Attempts`` is the recovery budget (attempts in
``window``, the backoff step, whether the budget is spent and restarts go on at the cap). Like the
machine, nothing here reads a clock or does I/O: ``now`` is passed in.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from mcp_supervisor.health.model import Action, Notify, RecoveryAction, Recreate, Restart, RestoreConfig
from mcp_supervisor.health.policy import Policy, backoff_ceiling, backoff_delay

RUNG_ACTIONS: dict[str, type[Restart] | type[RestoreConfig] | type[Recreate]] = {
    "restart": Restart,
    "restore_config": RestoreConfig,
    "recreate": Recreate,
}
"""A ladder rung's name (``[servers.recovery] ladder``) -> the action that performs it."""


def rung_name(action: Action) -> str:
    """The ladder word for a recovery action (``restart``), for reasons a person reads."""
    return {Restart: "restart", RestoreConfig: "restore_config", Recreate: "recreate"}.get(
        type(action), type(action).__name__
    )


def alert_text(policy: Policy, why: str, recent: int) -> str:
    """The alert a person gets once the budget is spent: what was tried, what the server said last,
    what happens next."""
    if not policy.repair_rungs:
        return f"{why}; nothing can restart it"
    tried = f"{recent} recovery attempt(s) ({', '.join(policy.repair_rungs)}) in {policy.window:g}s"
    return f"{tried} did not keep it up; last: {why}; restarts continue every ~{policy.backoff_max:g}s until it stays up"


@dataclass
class Incident:
    """One outage, from its first counted failure to its resolution: one alert, one resolution."""

    since: float | None = None
    """When the outage began (None: no incident open)."""
    notified: bool = False
    """A person got this incident's alert; later escalations are state events only."""
    resolution_pending: bool = False
    """Back up while flapping: the resolution waits for ``stable_after`` of health."""
    alert_text: str = ""
    """The alert a person got; later rounds of the incident repeat it in their reasons."""
    exhausted: bool = False
    """The recovery budget was spent (``max_attempts`` in ``window``): restarts go on at the cap
    until the incident closes or the server stays up for ``stable_after``."""

    def open(self, now: float) -> None:
        if self.since is None:
            self.since = now

    def keep_alert(self, text: str) -> None:
        """Remember ``text`` as the alert, unless a person already got one for this incident."""
        if not self.notified or not self.alert_text:
            self.alert_text = text

    def notify_once(self, kind: str, detail: str, severity: str = "warning") -> list[Action]:
        """One alert per incident: later escalations of the same incident are state events only."""
        if self.notified:
            return []
        self.notified = True
        return [Notify(kind, detail, severity)]

    def needs_human(self, now: float, detail: str, hint: str | None) -> tuple[str, list[Action]]:
        """A person must act: the reason with its fix (``hint``), and this incident's one alert."""
        self.open(now)
        text = f"{detail}; {hint}" if hint else detail
        return text, self.notify_once("needs_human", text, "critical")

    def recovered(self, now: float, attempts: int, flapping: bool) -> list[Action]:
        """The server is back: the resolution now, or (while it flaps) once it stays up."""
        if self.notified and flapping:
            self.resolution_pending = True
        elif self.notified:
            note = Notify("recovered", self.resolution_text(now, attempts), "info")
            self.close()
            return [note]
        elif not self.resolution_pending:
            self.since = None
        return []

    def stable(self, now: float, attempts: int, stable_after: float) -> list[Action]:
        """``stable_after`` of continuous health: the budget starts over; a held resolution is sent."""
        self.exhausted = False
        if not self.resolution_pending:
            return []
        note = Notify("recovered", self.resolution_text(now, attempts, stable_after), "info")
        self.close()
        return [note]

    def fallback(self, detail: str, *, forced: bool) -> tuple[str, list[Action]]:
        """The fallback state's reason and its message. The operator's own choice (emergency) is a
        notice every time; a fallback the machine entered is this incident's one alert."""
        if forced:
            text = f"emergency mode: the job must use the direct API ({detail})"
            return text, [Notify("fallback", text, "critical")]
        why = self.alert_text or "the MCP server could not be recovered"
        text = f"{why}; meanwhile the job must use the direct API ({detail})"
        return text, self.notify_once("fallback", text, "critical")

    def resolution_text(self, now: float, attempts: int, stable_after: float | None = None) -> str:
        """``back after 12.3s (2 recovery attempt(s))``; ``stable_after`` when it waited to be sure."""
        downtime = now - self.since if self.since is not None else 0.0
        stayed = f", up for {stable_after:g}s" if stable_after is not None else ""
        return f"back after {downtime:.1f}s ({attempts} recovery attempt(s){stayed})"

    def close(self) -> None:
        self.since = None
        self.notified = False
        self.resolution_pending = False
        self.alert_text = ""
        self.exhausted = False


@dataclass
class Attempts:
    """The recovery budget: attempts made, those within ``window``, and the backoff step."""

    count: int = 0
    """Attempts since the server was last stable (the ``attempt`` of status and reasons)."""
    times: deque[float] = field(default_factory=deque)
    """When each attempt within the policy's ``window`` started (oldest first)."""
    step: int = 0
    """The backoff step: 0 restarts at once; each failed attempt or flap doubles the ceiling."""
    flapping: bool = False
    last_delay: float | None = None
    """The backoff delay before the attempt now starting (None for an immediate one)."""

    def recent(self, now: float, window: float) -> int:
        """Attempts within ``window`` before ``now`` (older ones are forgotten)."""
        window_start = now - window
        while self.times and self.times[0] <= window_start:
            self.times.popleft()
        return len(self.times)

    def start(self, now: float, window: float, rungs: tuple[str, ...]) -> tuple[str, RecoveryAction]:
        """Count a new attempt and pick its rung: the n-th attempt in the window climbs to rung n."""
        self.recent(now, window)
        self.count += 1
        self.times.append(now)
        rung = rungs[min(len(self.times), len(rungs)) - 1]
        return rung, RUNG_ACTIONS[rung](self.count)

    def last_rung(self, rungs: tuple[str, ...]) -> Action:
        """The action of the attempt now being verified."""
        rungs = rungs or ("restart",)
        return RUNG_ACTIONS[rungs[min(max(len(self.times), 1), len(rungs)) - 1]](self.count)

    def backoff(self, policy: Policy, rng: random.Random, why: str, *, capped: bool) -> tuple[float, str] | None:
        """None to attempt at once, else (delay, the plan a person reads). The delay is drawn under
        the step's ceiling, or under the cap once the budget is spent (``capped``)."""
        if self.step == 0 and not capped:
            self.last_delay = None
            return None
        ceiling = policy.backoff_max if capped else backoff_ceiling(self.step, policy)
        delay = self.last_delay = backoff_delay(ceiling, rng)
        text = f"attempt {self.count} failed ({why})" if self.count else why
        return delay, f"{text}; retry in {delay:.1f}s (ceiling {ceiling:g}s)"

    def snapshot(self) -> dict[str, object]:
        return {"attempt": self.count, "attempts_in_window": len(self.times), "delay": self.last_delay,
                "flapping": self.flapping}

    def reset(self) -> None:
        """``stable_after`` of continuous health: the backoff and the attempt count start over."""
        self.count = 0
        self.step = 0
        self.flapping = False
        self.times.clear()
        self.last_delay = None
