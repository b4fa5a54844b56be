"""The health machine's transition table: every move a server's state may make, and nothing else.

Why apart from ``machine.py`` (as h11 keeps its state tables apart from the connection): the table
is the specification a reader checks first and the property tests drive against; the machine is
the logic that picks a move. ``move`` is the only way the machine changes state, so a move missing
here is a bug the machine raises at once (``IllegalTransition``), never a silent new path.
"""

from __future__ import annotations

from mcp_supervisor.health.model import State, Transition


class IllegalTransition(RuntimeError):
    """The machine tried a move its own table forbids: a bug in the machine, never in the input."""


ALLOWED_TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    {
        (State.STARTING, State.HEALTHY),
        (State.STARTING, State.DEGRADED),
        (State.STARTING, State.FAILED),
        (State.HEALTHY, State.DEGRADED),
        (State.DEGRADED, State.HEALTHY),
        (State.HEALTHY, State.FAILED),
        (State.DEGRADED, State.FAILED),
        (State.FAILED, State.RECOVERING),
        (State.FAILED, State.BACKOFF),  # flapping: wait before the restart
        (State.FAILED, State.NEEDS_HUMAN),
        (State.FAILED, State.HEALTHY),
        (State.FAILED, State.DEGRADED),
        (State.RECOVERING, State.HEALTHY),
        (State.RECOVERING, State.DEGRADED),
        (State.RECOVERING, State.BACKOFF),
        (State.RECOVERING, State.FALLBACK),
        (State.RECOVERING, State.NEEDS_HUMAN),
        (State.BACKOFF, State.RECOVERING),
        (State.BACKOFF, State.HEALTHY),
        (State.BACKOFF, State.DEGRADED),
        (State.BACKOFF, State.NEEDS_HUMAN),
        (State.FALLBACK, State.HEALTHY),
        (State.FALLBACK, State.DEGRADED),
        (State.NEEDS_HUMAN, State.HEALTHY),
        (State.NEEDS_HUMAN, State.DEGRADED),
        # a 429 is an answer: only a server that answers is rate limited, and it is still up
        (State.STARTING, State.RATE_LIMITED),
        (State.HEALTHY, State.RATE_LIMITED),
        (State.DEGRADED, State.RATE_LIMITED),
        (State.RATE_LIMITED, State.HEALTHY),
        (State.RATE_LIMITED, State.DEGRADED),
        (State.RATE_LIMITED, State.FAILED),
        # a pinned tool contract changed: only an answering server drifts; accept-tools heals it
        (State.STARTING, State.DRIFTED),
        (State.HEALTHY, State.DRIFTED),
        (State.DEGRADED, State.DRIFTED),
        (State.DRIFTED, State.HEALTHY),
        (State.DRIFTED, State.DEGRADED),
        (State.DRIFTED, State.FAILED),
        (State.RATE_LIMITED, State.DRIFTED),
    }
    # operator commands: pause from anywhere, resume to starting, recover / emergency on demand
    | {(s, State.PAUSED) for s in State if s is not State.PAUSED}
    | {(State.PAUSED, State.STARTING)}
    | {(s, State.RECOVERING) for s in State if s not in (State.PAUSED, State.RECOVERING)}
    | {(s, State.FALLBACK) for s in State if s not in (State.PAUSED, State.FALLBACK)}
)
"""Every (old, new) pair the machine may make; ``move`` enforces it."""

UP = (State.HEALTHY, State.DEGRADED, State.RATE_LIMITED)
"""The server answers (a degraded one answers with something missing, a rate-limited one with 429)."""
RUNNING = (State.STARTING, State.HEALTHY, State.DEGRADED, State.RATE_LIMITED, State.DRIFTED)
"""No incident open: failures count towards ``failure_threshold`` here."""
ALERTED = (State.NEEDS_HUMAN, State.FALLBACK)
"""Alert levels, not stops: still probed, still restarted at the backoff cap, healed by a success."""


def move(old: State, new: State, reason: str) -> Transition:
    """The ``Transition`` from ``old`` to ``new``, or ``IllegalTransition`` if the table forbids it."""
    if (old, new) not in ALLOWED_TRANSITIONS:
        raise IllegalTransition(f"{old} -> {new} is not in ALLOWED_TRANSITIONS ({reason})")
    return Transition(old, new, reason)
