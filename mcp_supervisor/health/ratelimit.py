"""How long a rate-limited server is left alone: pure, so the rule is table-tested.

Why its own rule: a 429 is an answer, not an outage. Probing again before the server's
``Retry-After`` only spends the caller's quota (and may lengthen the limit), so the next probe
waits for it; but a server may ask for an hour, and a daemon that stops looking for an hour
misses a real outage, so the wait is capped. Without a ``Retry-After`` the server gave no time:
wait a few probe intervals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp_supervisor.health.model import Action, ProbeResult, State
from mcp_supervisor.health.transitions import RUNNING

if TYPE_CHECKING:
    from mcp_supervisor.health.machine import ServerMachine

MAX_WAIT = 300.0
"""Seconds: the longest a ``Retry-After`` holds probes back."""
DEFAULT_INTERVALS = 3
"""Without ``Retry-After``: hold probes back for this many probe intervals."""


def rate_limit_wait(retry_after: float | None, probe_interval: float) -> float:
    """Seconds until the next probe of a server that answered "too many requests"."""
    if retry_after is None or retry_after != retry_after:  # absent or NaN
        return min(MAX_WAIT, DEFAULT_INTERVALS * probe_interval)
    return min(MAX_WAIT, max(0.0, retry_after))


def on_rate_limited(machine: ServerMachine, result: ProbeResult, now: float) -> list[Action]:
    """The machine's step for a ``rate_limited`` probe: hold the probes back; never a failure
    toward the threshold, a restart or an alert. Up states move to ``rate_limited`` (ready, with
    the server's own words as the reason); in an incident the recovery logic keeps deciding."""
    machine.hold_until = now + rate_limit_wait(result.retry_after, machine.policy.probe_interval)
    state = machine.state
    if state is State.RATE_LIMITED:
        machine.reason = result.message
        return []
    if state not in RUNNING:
        return []
    machine._failures = 0  # an answer: the failures before it were not an outage in a row
    return [machine._move(State.RATE_LIMITED, now, result.message)]
