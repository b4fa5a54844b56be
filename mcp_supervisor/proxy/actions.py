"""The proxy core's vocabulary (pure data): link states, the actions the shell performs, calls, counts.

Apart from ``core.py`` so the state machine reads as its transitions only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mcp_supervisor.proxy.wire import Message, RequestId


class Link(enum.StrEnum):
    DOWN = "down"
    CONNECTING = "connecting"
    HANDSHAKE = "handshake"
    UP = "up"


# --- actions (what the shell must do) ---------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send ``message`` to the backend of ``generation``; ``key`` is the client call it serves."""

    message: Message
    generation: int
    key: int | None = None


@dataclass(frozen=True)
class Deliver:
    """Give ``message`` to the client: on call ``key``'s answer stream, or the session stream (None)."""

    message: Message
    key: int | None
    final: bool = False


@dataclass(frozen=True)
class Connect:
    """(Re)connect the backend; report with ``on_link_up`` or ``on_link_failed``."""

    generation: int


@dataclass(frozen=True)
class Abandon:
    """The client stopped waiting (a 2026-era client closes its stream): end the backend request
    ``backend_id`` the way the link's wire cancels (HTTP: close its POST)."""

    backend_id: int
    generation: int


Action = Send | Deliver | Connect | Abandon


@dataclass
class Call:
    key: int
    client_id: RequestId
    message: Message
    safe: bool
    arrived: float
    backend_id: int | None = None
    held_since: float | None = None
    held_total: float = 0.0
    attempts: int = 0
    held_by_loss: bool = False
    """Held because the backend was lost (not merely while the first connection opened)."""
    wait_until: float | None = None
    """Held by a rate limit: not sent before this (the server's ``Retry-After``)."""
    held_by_limit: bool = False


@dataclass
class Stats:
    """What the record and the run report count per server: calls held, retried and failed."""

    held: int = 0
    retried: int = 0
    failed: int = 0
    held_seconds: float = 0.0
    max_held: float = 0.0
