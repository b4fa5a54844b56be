"""A warm standby backend: a second process started, and initialized, before it is needed.

Why: without it a crashed stdio backend costs the client its server's cold start (1.3-1.6 s for a
Python server here) before its held calls go out again. With ``standby = 1`` the proxy keeps one
more process per session already past its own ``initialize`` (with the client's own parameters,
so the server sees the same client), and a loss switches to it at once; a new standby is then
started in the background. Until it is promoted a standby has no calls, so whatever it says on
its own is dropped, and its death only means a new one is started later.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from mcp_supervisor.proxy.links import BackendLink, OnLost, OnMessage
from mcp_supervisor.proxy.wire import Message

INIT_ID = "mcp-supervisor-standby-initialize"
INIT_TIMEOUT = 60.0


class Standby:
    def __init__(self, make_link: Any, init_params: dict[str, Any] | None) -> None:
        self._make_link = make_link
        self._init_params = init_params
        self._link: BackendLink | None = None
        self._target: tuple[OnMessage, OnLost] | None = None
        self._answer: asyncio.Future[Message] | None = None
        self.ready = False
        self.failed = False
        self._task = asyncio.ensure_future(self._prepare())

    async def _prepare(self) -> None:
        link: BackendLink = self._make_link(self._on_message, self._on_lost)
        try:
            await link.open()
            self._link = link
            if self._init_params is not None:
                self._answer = asyncio.get_running_loop().create_future()
                link.send({"jsonrpc": "2.0", "id": INIT_ID, "method": "initialize", "params": self._init_params})
                answer = await asyncio.wait_for(self._answer, INIT_TIMEOUT)
                if "error" in answer:
                    raise OSError(f"the standby refused the handshake: {answer['error']}")
                link.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            self.ready = not self.failed
        except (OSError, TimeoutError):
            self.failed = True
            self._link = None
            await link.close()

    def _on_message(self, message: Message, related: int | None) -> None:
        if self._target is not None:
            self._target[0](message, related)
        elif message.get("id") == INIT_ID and self._answer is not None and not self._answer.done():
            self._answer.set_result(message)

    def _on_lost(self, reason: str, unsent: int | None) -> None:
        if self._target is not None:
            self._target[1](reason, unsent)
            return
        self.failed, self.ready = True, False
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(OSError(reason))

    def promote(self, on_message: OnMessage, on_lost: OnLost) -> BackendLink:
        """Hand the ready link over: from now on its messages go to the new owner."""
        assert self.ready and self._link is not None
        self._target = (on_message, on_lost)
        link, self._link, self.ready = self._link, None, False
        return link

    @property
    def pid(self) -> int | None:
        pid = getattr(self._link, "pid", None)
        return pid if isinstance(pid, int) else None

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        if self._link is not None:
            await self._link.close()
            self._link = None
