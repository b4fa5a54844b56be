"""The one server-sent-events writer of the daemon: ``/v1/events`` on the socket, ``/api/events`` on the page.

Why one: both follow the event bus, say hello, send a heartbeat comment when idle (it keeps
proxies awake and finds vanished clients), stop at once when the daemon stops instead of holding
it for aiohttp's grace period, and leave quietly when the client hangs up. Each user only decides
what a bus event becomes on its wire (``render``: bytes, or None to skip it).

Why a gate: every open stream holds a bus subscription (a queue) and a file descriptor, so a
listener anyone on the machine can reach (the status page) must bound them; past the cap a client
gets a 503 at once and the refusal is counted for the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from aiohttp import web

from mcp_supervisor import sse
from mcp_supervisor.events import Event, EventBus


class StreamGate:
    """Counts open streams against a cap; ``refused`` counts the clients turned away."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0

    def enter(self) -> bool:
        if self.limit is not None and self.open >= self.limit:
            self.refused += 1
            return False
        self.open += 1
        return True

    def leave(self) -> None:
        self.open -= 1


async def _next_event(get: asyncio.Future[Any], stop: asyncio.Future[Any], heartbeat: float) -> bool:
    """Wait for ``get`` or ``stop`` at most ``heartbeat`` seconds; True when ``stop`` fired."""
    await asyncio.wait({get, stop}, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED)
    return stop.done()


async def stream_events(
    request: web.Request,
    bus: EventBus,
    render: Callable[[Event], bytes | None],
    *,
    stopping: asyncio.Event,
    heartbeat: float,
    hello: bytes = sse.comment("connected"),
    gate: StreamGate | None = None,
    refused: Callable[[], web.StreamResponse] | None = None,
) -> web.StreamResponse:
    """Follow ``bus`` for this request until the client leaves or ``stopping`` is set.

    ``refused`` builds the answer when ``gate`` is full (default: a plain 503 with Retry-After).
    """
    if gate is not None and not gate.enter():
        if refused is not None:
            return refused()
        return web.Response(status=503, text="too many event streams open; try again later\n",
                            headers={"Retry-After": "5"})
    try:
        response = web.StreamResponse(headers=sse.HEADERS)
        with bus.subscription() as queue:
            await response.prepare(request)
            stop: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
            get: asyncio.Future[Event] = asyncio.ensure_future(queue.get())
            try:
                await response.write(hello)
                while not stopping.is_set():
                    if await _next_event(get, stop, heartbeat):
                        break
                    if not get.done():
                        await response.write(sse.comment("heartbeat"))
                        continue
                    frame = render(get.result())
                    get = asyncio.ensure_future(queue.get())
                    if frame is not None:
                        await response.write(frame)
            except (ConnectionResetError, ConnectionError):
                pass  # the client went away: leave, which drops the subscription
            finally:
                for task in (stop, get):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        return response
    finally:
        if gate is not None:
            gate.leave()
