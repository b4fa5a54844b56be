"""Answers that are not outages (a rate limit, a drifted tool contract), and how long a
rate-limited server is left alone: pure, so the rules are table-tested.

Why its own rule: a 429 is an answer, not an outage. Probing again before the server's
``Retry-After`` only spends the caller's quota (and may lengthen the limit), so the next probe
waits for it; but a server may ask for an hour, and a daemon that stops looking for an hour
misses a real outage, so the wait is capped. Without a ``Retry-After`` the server gave no time:
wait a few probe intervals.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from mcp_supervisor.health.model import Action, FailureClass, ProbeResult, State, Transition
from mcp_supervisor.health.policy import Policy
from mcp_supervisor.health.transitions import RUNNING, UP


class _Machine(Protocol):
    """What ``on_answer`` uses of ``ServerMachine`` (a protocol: the machine imports this module)."""

    policy: Policy
    state: State
    reason: str
    hold_until: float | None
    _failures: int
    _successes: int

    def _move(self, new: State, now: float, reason: str) -> Transition: ...

    def _on_success(self, result: ProbeResult, now: float) -> list[Action]: ...

MAX_WAIT = 300.0
"""Seconds: the longest a ``Retry-After`` holds probes back."""
DEFAULT_INTERVALS = 3
"""Without ``Retry-After``: hold probes back for this many probe intervals."""


def rate_limit_wait(retry_after: float | None, probe_interval: float) -> float:
    """Seconds until the next probe of a server that answered "too many requests"."""
    if retry_after is None or retry_after != retry_after:  # absent or NaN
        return min(MAX_WAIT, DEFAULT_INTERVALS * probe_interval)
    return min(MAX_WAIT, max(0.0, retry_after))


def on_answer(machine: _Machine, result: ProbeResult, now: float) -> list[Action]:
    """The machine's step for an answer that is not usable now: ``rate_limited`` (hold the probes
    back) or ``drifted`` (a pinned tool contract changed). Never a failure toward the threshold,
    a restart or an alert (a drift's one alert is the contract change's). Running states move to
    the answer's state, the server's words as the reason; in an incident it ends the recovery."""
    target = State.RATE_LIMITED if result.failure is FailureClass.RATE_LIMITED else State.DRIFTED
    if target is State.RATE_LIMITED:
        machine.hold_until = now + rate_limit_wait(result.retry_after, machine.policy.probe_interval)
    state = machine.state
    if state is State.DRIFTED and target is State.RATE_LIMITED:
        return []  # a drift is not lifted by a 429: still not ready (the hold spaces the probes)
    if state is target:
        machine.reason = result.message
        return []
    machine._failures = 0  # an answer: the failures before it were not an outage in a row
    if state in RUNNING:
        return [machine._move(target, now, result.message)]
    # in an incident an answer is what the recovery waits for: the server is up again (a restart
    # cannot lift a limit or undo an upgrade), so it counts as a success, then takes its state
    machine._successes += 1
    actions = machine._on_success(replace(result, ok=True, failure=None), now)
    if machine.state in UP and machine.state is not target:
        actions.append(machine._move(target, now, result.message))
    return actions
