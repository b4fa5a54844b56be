"""Turns for handshakes: a first-come, first-served queue whose width shrinks while the loop is late.

Why it shrinks: a handshake costs the daemon CPU (the SDK client, TLS, JSON), and N handshakes that
share too little CPU all take N times longer, so all of them miss their deadline together. When the
event loop is late (the daemon or the machine is short of CPU), fewer handshakes at a time each
finish within their deadline, and the rest wait their turn untimed. The configured width
(``[supervisor] max_concurrent_handshakes``) is the most ever allowed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

BUSY_LATE = 0.1
"""Seconds of recent loop lateness from which a quarter of the width is allowed (at least 2)."""
STARVED_LATE = 0.5
"""Seconds of recent loop lateness from which only 2 turns run at once."""


class Turns:
    def __init__(self, limit: int, pressure: Callable[[], float] | None = None) -> None:
        self.limit = max(1, limit)
        self._pressure = pressure
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def allowed(self) -> int:
        late = self._pressure() if self._pressure is not None else 0.0
        if late >= STARVED_LATE:
            return min(self.limit, 2)
        if late >= BUSY_LATE:
            return min(self.limit, max(2, self.limit // 4))
        return self.limit

    def busy(self) -> bool:
        return bool(self._waiters) or self.in_use >= self.allowed()

    async def acquire(self) -> None:
        if not self.busy():
            self.in_use += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as the wait was cancelled: hand the turn on
            elif waiter in self._waiters:  # a release may already have passed over it
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.in_use -= 1
        while self._waiters and self.in_use < self.allowed():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)
