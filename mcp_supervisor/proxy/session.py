"""The shell around one ``SessionCore``: performs its actions over a backend link, on the loop's clock.

Why apart from the core: everything here is I/O (links, queues the HTTP handlers wait on, the
reconnect loop, the hold timer) and nothing here decides what a call's fate is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

import aiohttp

from mcp_supervisor.proxy.actions import Abandon, Action, Connect, Deliver, Link, Send
from mcp_supervisor.proxy.core import SessionCore
from mcp_supervisor.proxy.links import BackendLink, OnLost, OnMessage
from mcp_supervisor.proxy.standby import Standby
from mcp_supervisor.proxy.wire import INTERNAL_ERROR, Message, error

LinkFactory = Callable[[OnMessage, OnLost], BackendLink]
Answer = tuple[Message, bool]
"""A message for the client and whether it ends the call."""
STREAM_BOUND = 1000
RETRY_FIRST = 0.02
RETRY_MAX = 0.25
STANDBY_RETRY = 2.0
RETRY_MAX_SPAWN = 2.0
"""A stdio backend that keeps dying is started again at most this often (a spawn costs a second of CPU)."""


class ProxySession:
    def __init__(self, core: SessionCore, make_link: LinkFactory, state_text: Callable[[], str],
                 session_id: str = "", on_episode: Callable[[ProxySession, bool], None] | None = None) -> None:
        self.core = core
        self._on_episode = on_episode
        self._restoring = False
        self.id = session_id
        self._make_link = make_link
        self._state_text = state_text
        self._loop = asyncio.get_running_loop()
        self.last_used = self._loop.time()
        core.wall_offset = time.time() - self.last_used
        self.limits: Callable[[], tuple[float, str] | None] | None = None
        """The supervisor's word on a rate limit: (until, on the loop's clock; the server's words)."""
        self._link: BackendLink | None = None
        self._link_gen = 0
        self._waiters: dict[int, asyncio.Queue[Answer]] = {}
        self._headers: dict[int, Mapping[str, str]] = {}
        self.stream: asyncio.Queue[Message] = asyncio.Queue(STREAM_BOUND)
        self.stream_open = False
        self._connector: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._wake = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()
        self.last_loss: str | None = None
        self.closed = False
        self._fails = 0
        self.retry_max = RETRY_MAX
        self.standby_wanted = False
        self._standby: Standby | None = None
        self._standby_failed_at = -STANDBY_RETRY

    # --- from the client ---------------------------------------------------------------------

    def request(self, message: Message, headers: Mapping[str, str] | None = None) -> tuple[int, asyncio.Queue[Answer]]:
        self.last_used = self._loop.time()
        if self.limits is not None and (limit := self.limits()) is not None:
            self.core.note_limit(*limit)
        key, actions = self.core.on_request(message, self.last_used)
        queue: asyncio.Queue[Answer] = asyncio.Queue()
        self._waiters[key] = queue
        if headers:
            self._headers[key] = headers
        self._perform(actions)
        return key, queue

    def notify(self, message: Message) -> None:
        self.last_used = self._loop.time()
        self._perform(self.core.on_notification(message, self.last_used))

    def client_response(self, message: Message) -> None:
        self.last_used = self._loop.time()
        self._perform(self.core.on_client_response(message))

    def client_gone(self, key: int) -> None:
        self._waiters.pop(key, None)
        self._headers.pop(key, None)
        self._perform(self.core.on_client_gone(key))

    @property
    def backend_pid(self) -> int | None:
        """The stdio backend's process id, when the link is a process of its own."""
        pid = getattr(self._link, "pid", None)
        return pid if isinstance(pid, int) else None

    def wake(self) -> None:
        """Something happened to the server (a state change, an exit): try to reconnect now."""
        self._wake.set()

    # --- actions -----------------------------------------------------------------------------

    def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                if self._link is not None and action.generation == self._link_gen:
                    headers = self._headers.get(action.key) if action.key is not None else None
                    self._link.send(action.message, headers)
            elif isinstance(action, Deliver):
                self._deliver(action)
            elif isinstance(action, Abandon):
                if self._link is not None and action.generation == self._link_gen:
                    self._link.abandon(action.backend_id)
            elif isinstance(action, Connect):
                if self._standby is not None and self._standby.ready:
                    self._switch(action.generation)
                elif self._connector is None or self._connector.done():
                    self._connector = asyncio.ensure_future(self._connect())
        self._arm_timer()
        self._keep_standby()
        restoring = self.core.restoring
        if restoring != self._restoring:
            self._restoring = restoring
            if restoring and any(c.held_by_limit for c in self.core.calls.values()):
                self.last_loss = f"rate limited: {self.core.limit_words}"
            if self._on_episode is not None:
                self._on_episode(self, restoring)

    def _deliver(self, action: Deliver) -> None:
        queue = self._waiters.get(action.key) if action.key is not None else None
        if action.final:
            if action.key is not None:
                self._waiters.pop(action.key, None)
                self._headers.pop(action.key, None)
            if queue is not None:
                queue.put_nowait((action.message, True))
            return
        if queue is None and not self.stream_open and self._waiters:
            queue = self._waiters[max(self._waiters)]  # no stream of its own: the newest open call carries it
        if queue is not None:
            queue.put_nowait((action.message, False))
        elif self.stream_open and not self.stream.full():
            self.stream.put_nowait(action.message)

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer) if deadline is not None else None

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self._perform(self.core.on_timer(self._loop.time(), self._state_text()))

    # --- the backend link --------------------------------------------------------------------

    async def _connect(self) -> None:
        """Open a link for the core's current generation. Consecutive failures (refused, or lost
        again before any answer: a crash loop) wait longer each time, up to ``retry_max``; a bus
        event about the server ends a wait early."""
        while not self.closed and self.core.link is Link.CONNECTING:
            generation = self.core.generation
            if not self.core.wants_link:
                self._perform(self.core.on_link_failed(generation, self._loop.time()))
                return
            if self._fails:
                self._wake.clear()
                delay = min(self.retry_max, RETRY_FIRST * 2 ** (self._fails - 1))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            link = self._make_link(self._on_message_for(generation), self._on_lost_for(generation))
            try:
                await link.open()
            except (OSError, aiohttp.ClientError, TimeoutError) as exc:
                self.last_loss = f"cannot reach the server: {exc}"
                self._fails += 1
                await link.close()
                continue
            if generation != self.core.generation or self.closed:
                await link.close()
                return
            self._retire(self._link)
            self._link, self._link_gen = link, generation
            self._perform(self.core.on_link_up(generation, self._loop.time()))
            return

    def _switch(self, generation: int) -> None:
        """The backend is lost and a standby is ready: it becomes the backend at once."""
        assert self._standby is not None
        link = self._standby.promote(self._on_message_for(generation), self._on_lost_for(generation))
        self._standby = None
        self._retire(self._link)
        self._link, self._link_gen = link, generation
        self._perform(self.core.on_link_up(generation, self._loop.time(), handshaken=True))

    def _keep_standby(self) -> None:
        """One standby while the session is up (after its first handshake); a failed one is
        replaced at most every STANDBY_RETRY seconds."""
        if not self.standby_wanted or self.closed or self.core.link is not Link.UP:
            return
        if self.core.era == "legacy" and self.core.init_result is None:
            return
        now = self._loop.time()
        if self._standby is not None and self._standby.failed:
            self._retire_standby(self._standby)
            self._standby, self._standby_failed_at = None, now
        if self._standby is None and now - self._standby_failed_at >= STANDBY_RETRY:
            params = self.core.init_params if self.core.era == "legacy" else None
            self._standby = Standby(lambda m, lost: self._make_link(m, lost), params)

    def _retire_standby(self, standby: Standby) -> None:
        task = asyncio.ensure_future(standby.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @property
    def standby_pid(self) -> int | None:
        return self._standby.pid if self._standby is not None else None

    @property
    def standby_state(self) -> str | None:
        if self._standby is None:
            return None
        return "ready" if self._standby.ready else "failed" if self._standby.failed else "starting"

    def _on_message_for(self, generation: int) -> OnMessage:
        def on_message(message: Message, related: int | None) -> None:
            self._fails = 0
            self._perform(self.core.on_backend(generation, message, related, self._loop.time()))

        return on_message

    def _on_lost_for(self, generation: int) -> OnLost:
        def on_lost(reason: str, unsent: int | None) -> None:
            if generation == self._link_gen:
                self.last_loss = reason
                self._fails += 1
                self._perform(self.core.on_link_lost(generation, self._loop.time(), unsent))

        return on_lost

    def _retire(self, link: BackendLink | None) -> None:
        if link is None:
            return
        task = asyncio.ensure_future(link.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self, reason: str = "the proxy session closed") -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(BaseException):
                await self._connector
        for key, queue in list(self._waiters.items()):
            call = self.core.calls.get(key)
            queue.put_nowait((error(call.client_id if call else None, INTERNAL_ERROR, reason), True))
        self._waiters.clear()
        link, self._link = self._link, None
        if link is not None:
            await link.close()
        if self._standby is not None:
            await self._standby.close()
            self._standby = None
        for task in list(self._closing):
            with contextlib.suppress(BaseException):
                await task
