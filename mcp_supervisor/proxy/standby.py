"""A warm standby backend: a second backend session started, and initialized, before it is needed.

Why: without it a crashed stdio backend costs the client its server's cold start (1.3-1.6 s for a
Python server here) before its held calls go out again. With ``standby = 1`` the proxy keeps one
more process per session already past its own ``initialize`` (with the client's own parameters,
so the server sees the same client), and a loss switches to it at once; a new standby is then
started in the background. Until it is promoted a standby has no calls, so whatever it says on
its own is dropped, and its death only means a new one is started later.

Managed http/sse servers with ``standby = 1`` run two instances (``runtime/standby.py``); here a
session's standby is a session on the *other* instance than the one its link uses (``Route``),
opened only once the runtime finds that instance healthy (``InstanceLink``), so a restarted
instance covers again as soon as it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

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
        promoted = getattr(link, "promoted", None)
        if callable(promoted):
            promoted()  # an instance link: its session's route now points at this instance
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


class Instances(Protocol):
    """What the proxy asks of a managed server's two instances (``runtime.standby.StandbyPair``)."""

    def serving_url(self) -> str: ...

    def other_url(self, url: str) -> str: ...

    async def wait_healthy(self, url: str, timeout: float) -> None: ...


LinkTo = Callable[[str, OnMessage, OnLost], BackendLink]
"""Makes a link to one instance's URL (service.py: an HttpLink or SseLink)."""


class Route:
    """Which instance a session's link uses, and so where its standby goes: the other one. The
    instances are looked up at each use: a reload replaces them (or takes the standby away)."""

    def __init__(self, lookup: Callable[[], Instances | None], link_to: LinkTo, plain_url: Callable[[], str]) -> None:
        self._lookup = lookup
        self._link_to = link_to
        self._plain_url = plain_url
        instances = lookup()
        self.url = instances.serving_url() if instances is not None else plain_url()

    def primary(self, on_message: OnMessage, on_lost: OnLost) -> BackendLink:
        """A (re)connection without a ready standby: to the instance the runtime says serves now."""
        instances = self._lookup()
        self.url = instances.serving_url() if instances is not None else self._plain_url()
        return self._link_to(self.url, on_message, on_lost)

    def standby(self, on_message: OnMessage, on_lost: OnLost) -> BackendLink:
        instances = self._lookup()
        url = instances.other_url(self.url) if instances is not None else self.url
        return InstanceLink(self._link_to(url, on_message, on_lost), url, self)

    async def wait_healthy(self, url: str, timeout: float) -> None:
        instances = self._lookup()
        if instances is None:
            raise OSError("the server has no standby instance (any more)")
        await instances.wait_healthy(url, timeout)


class InstanceLink:
    """A link to one instance that opens once the runtime finds it healthy, and that moves its
    session's route to that instance when it is promoted."""

    def __init__(self, inner: BackendLink, url: str, route: Route) -> None:
        self._inner = inner
        self.url = url
        self._route = route

    async def open(self) -> None:
        await self._route.wait_healthy(self.url, INIT_TIMEOUT)
        await self._inner.open()

    def promoted(self) -> None:
        self._route.url = self.url

    def send(self, message: Message, headers: Mapping[str, str] | None = None) -> None:
        self._inner.send(message, headers)

    def abandon(self, backend_id: int) -> None:
        self._inner.abandon(backend_id)

    async def close(self) -> None:
        await self._inner.close()
