"""Pure policies of the health machine: what a server's config allows, and backoff.

Why a separate, frozen ``Policy``: the machine must not read config objects or ask the outside
world what it can do mid-decision; everything it may consider is fixed here, so a table of
(event, now) -> (state, actions) fully describes a server's behaviour.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mcp_supervisor.config import ServerConfig

RUNGS = ("restart", "restore_config", "recreate", "fallback")


@dataclass(frozen=True)
class Policy:
    failure_threshold: int = 3
    success_threshold: int = 1
    start_period: float = 0.0
    probe_interval: float = 10.0
    ladder: tuple[str, ...] = RUNGS
    max_attempts: int = 5
    window: float = 600.0
    backoff_initial: float = 1.0
    backoff_factor: float = 2.0
    backoff_max: float = 300.0
    stable_after: float = 60.0
    can_restart: bool = False
    can_recreate: bool = False
    can_restore: bool = False
    has_fallback: bool = False
    recovery_enabled: bool = True
    verify_retry: float = 0.2
    """After a recovery action, how soon to look again while the server comes up."""

    @classmethod
    def from_config(cls, server: ServerConfig, *, can_restore: bool = False) -> Policy:
        probe, recovery = server.probe, server.recovery
        return cls(
            failure_threshold=probe.failure_threshold,
            success_threshold=probe.success_threshold,
            start_period=probe.start_period,
            probe_interval=probe.interval,
            ladder=tuple(recovery.ladder),
            max_attempts=recovery.max_attempts,
            window=recovery.window,
            backoff_initial=recovery.backoff_initial,
            backoff_factor=recovery.backoff_factor,
            backoff_max=recovery.backoff_max,
            stable_after=recovery.stable_after,
            can_restart=server.managed or server.container is not None,
            can_recreate=server.container is not None,
            can_restore=can_restore and server.config is not None,
            has_fallback=server.fallback is not None,
            recovery_enabled=recovery.enabled,
        )

    def applicable(self, rung: str) -> bool:
        return {
            "restart": self.can_restart,
            "restore_config": self.can_restore,
            "recreate": self.can_recreate,
            "fallback": self.has_fallback,
        }.get(rung, False)

    @property
    def repair_rungs(self) -> tuple[str, ...]:
        """The rungs that act on the server itself (fallback only routes around it)."""
        if not self.recovery_enabled:
            return ()
        return tuple(r for r in self.ladder if r != "fallback" and self.applicable(r))

    @property
    def fallback_enabled(self) -> bool:
        return self.has_fallback and "fallback" in self.ladder

    @property
    def verify_window(self) -> float:
        """How long a server may take to answer after a recovery action before the attempt counts
        as failed: its start period, or as many probe intervals as it may fail in a row."""
        return max(self.start_period, self.failure_threshold * self.probe_interval, 5.0)


def backoff_ceiling(attempt: int, policy: Policy) -> float:
    """The upper bound of the delay after failed attempt number ``attempt`` (1-based)."""
    exponent = max(0, attempt - 1)
    try:
        ceiling = policy.backoff_initial * policy.backoff_factor**exponent
    except OverflowError:
        ceiling = policy.backoff_max
    return min(policy.backoff_max, ceiling)


def backoff_delay(ceiling: float, rng: random.Random) -> float:
    """"Equal jitter" (AWS architecture blog): uniform in [ceiling/2, ceiling]. The jitter keeps a
    fleet of servers that failed together from retrying in lockstep; the floor keeps the delays
    growing with the ceiling (a crash loop visibly slows down), which full jitter would not."""
    return rng.uniform(ceiling / 2.0, ceiling)
