"""One SDK ``Client`` connection run inside its own asyncio task.

Why a task of its own: the SDK is built on anyio; its cancel scopes and task groups must be
entered and left in the same task. A kept-open session outlives any one probe, and a probe may be
cancelled or time out at any point; if the client lived in the caller's task, that would corrupt
the scopes or skip the transport's shielded shutdown (which is what kills a stdio server's process
group). So the worker task owns the client, runs jobs sent to it, enforces every deadline with
anyio scopes of its own, and always leaves through the transport's own shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from mcp import Client
from mcp.client.session import MessageHandlerFnT

from mcp_supervisor.probes.context import CURRENT_SINK, HttpSink

T = TypeVar("T")

_CLOSE_GRACE = 8.0
"""Upper bound to wait for a worker to finish its transport shutdown (TERM, 2 s, KILL, flush)."""


def _consume(fut: asyncio.Future[Any]) -> None:
    """Mark an outcome as seen: a caller that was cancelled no longer awaits it."""
    if not fut.cancelled():
        fut.exception()


class PhaseTimeout(TimeoutError):
    def __init__(self, phase: str, seconds: float) -> None:
        super().__init__(f"{phase} took longer than {seconds:g} s")
        self.phase = phase


class _Abandon(Exception):
    """Leave the session through the failure path (its job's caller already has the error)."""


class SessionClosed(ConnectionError):
    """The session ended (its transport failed or it was closed) before the job ran."""


@dataclass
class ConnectInfo:
    phases_ms: dict[str, float] = field(default_factory=dict)
    server_name: str | None = None
    server_version: str | None = None
    protocol_version: str | None = None
    legacy: bool = False


@dataclass
class Phase:
    """Where the connect is, so a timeout or error can name the phase."""

    name: str = "connect"


TransportFactory = Callable[[], AbstractAsyncContextManager[Any]]


class SessionWorker:
    """A connected ``Client`` owned by a dedicated task; jobs run one at a time."""

    def __init__(
        self,
        transport: TransportFactory,
        *,
        mode: str,
        timeout: float,
        sink: HttpSink | None,
        first_phase: str,
        message_handler: MessageHandlerFnT | None = None,
    ) -> None:
        self._transport = transport
        self._mode = mode
        self._timeout = timeout
        self._sink = sink
        self._message_handler = message_handler
        self.phase = Phase(first_phase)
        self.info = ConnectInfo()
        self._jobs: asyncio.Queue[tuple[Callable[[Client], Awaitable[Any]], asyncio.Future[Any], float, str] | None]
        self._jobs = asyncio.Queue()
        self._ready: asyncio.Future[ConnectInfo] = asyncio.get_running_loop().create_future()
        self._ready.add_done_callback(_consume)
        self._scope: anyio.CancelScope | None = None
        self._stop_requested = False
        self.error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[Any] | None = None
        self._idle = False

    # ---- caller side -------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stop_requested

    async def start(self) -> ConnectInfo:
        """Connect and handshake; raises the connect error (PhaseTimeout on a deadline)."""
        self._task = asyncio.create_task(self._main(), name="mcp-probe-session")
        try:
            return await asyncio.shield(self._ready)
        except asyncio.CancelledError:
            await self._close_after_cancel()
            raise

    async def run(self, fn: Callable[[Client], Awaitable[T]], *, phase: str, timeout: float | None = None) -> T:
        """Run ``fn(client)`` in the worker under the phase deadline (``timeout``: this job's own)."""
        if not self.alive:
            raise self.error if isinstance(self.error, Exception) else SessionClosed("session is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_consume)
        self._jobs.put_nowait((fn, fut, self._timeout if timeout is None else timeout, phase))
        try:
            result: T = await asyncio.shield(fut)
            return result
        except asyncio.CancelledError:
            await self._close_after_cancel()
            raise

    async def aclose(self, *, force: bool = False) -> None:
        """Stop the session and wait until its transport is shut down (stdio: process group gone).

        Polite (the default) on an idle session: stdin is closed and the server may exit on its
        own, as an MCP client would leave it. ``force`` (or a session busy connecting or running a
        job) cancels it, and a stdio server's process group is killed at once: a server that
        failed its probe gets no grace period to hang in.
        """
        self._stop_requested = True
        task = self._task
        if task is None or task.done():
            return
        self._jobs.put_nowait(None)
        if (force or not self._idle) and self._scope is not None:
            self._scope.cancel()
        done, _ = await asyncio.wait({task}, timeout=_CLOSE_GRACE)
        if not done:  # should not happen: every wait in the SDK's shutdown is bounded
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)

    async def _close_after_cancel(self) -> None:
        """The caller was cancelled: still finish the shutdown before letting the cancel through."""
        try:
            await self.aclose(force=True)
        except asyncio.CancelledError:
            pass

    # ---- worker side -------------------------------------------------------------------------

    @asynccontextmanager
    async def _timed_transport(self, scope: anyio.CancelScope, started: float) -> AsyncIterator[Any]:
        async with self._transport() as streams:
            self.info.phases_ms[self.phase.name] = (time.perf_counter() - started) * 1000
            self.phase.name = "handshake"
            scope.deadline = anyio.current_time() + self._timeout  # a fresh deadline per phase
            yield streams  # a stdio transport kills its child's group itself when this fails

    async def _main(self) -> None:
        if self._sink is not None:
            CURRENT_SINK.set(self._sink)
        try:
            with anyio.CancelScope() as outer:
                self._scope = outer
                await self._serve()
            if outer.cancelled_caught and not self._ready.done():
                raise SessionClosed("closed before connecting")
        except BaseException as exc:  # recorded and handed to the waiting caller
            self.error = exc
            if not self._ready.done():
                if isinstance(exc, Exception):
                    self._ready.set_exception(exc)
                else:  # never hand the caller a CancelledError it did not ask for
                    self._ready.set_exception(SessionClosed(f"session task ended: {type(exc).__name__}"))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._stop_requested = True
            self._fail_pending()

    async def _serve(self) -> None:
        started = time.perf_counter()
        connect_scope = anyio.CancelScope(deadline=anyio.current_time() + self._timeout)
        client = Client(
            self._timed_transport(connect_scope, started),
            mode=self._mode,
            cache=None,
            message_handler=self._message_handler,
        )
        with connect_scope:
            async with client:
                self.info.phases_ms[self.phase.name] = (
                    (time.perf_counter() - started) * 1000 - sum(self.info.phases_ms.values())
                )
                connect_scope.deadline = float("inf")
                self._fill_info(client)
                self._ready.set_result(self.info)
                await self._loop(client)
        if connect_scope.cancelled_caught:
            raise PhaseTimeout(self.phase.name, self._timeout)

    def _fill_info(self, client: Client) -> None:
        info = client.server_info
        if info is not None:
            self.info.server_name = info.name
            self.info.server_version = info.version
        self.info.protocol_version = client.protocol_version
        self.info.legacy = client.session.initialize_result is not None

    async def _loop(self, client: Client) -> None:
        while True:
            self._idle = True
            job = await self._jobs.get()
            self._idle = False
            if job is None:
                return
            fn, fut, timeout, phase = job
            if fut.done():
                continue
            self._inflight = fut
            try:
                with anyio.fail_after(timeout):
                    result = await fn(client)
            except TimeoutError:
                if not fut.done():
                    fut.set_exception(PhaseTimeout(phase, timeout))
                raise _Abandon from None  # a request left in doubt: end the session, reconnect later
            except Exception as exc:  # handed to the caller
                if not fut.done():
                    fut.set_exception(exc)
                raise _Abandon from None
            if not fut.done():
                fut.set_result(result)
            self._inflight = None

    def _fail_pending(self) -> None:
        err = self.error if isinstance(self.error, Exception) else SessionClosed("session closed")
        if self._inflight is not None and not self._inflight.done():
            self._inflight.set_exception(err)
        self._inflight = None
        while not self._jobs.empty():
            job = self._jobs.get_nowait()
            if job is not None and not job[1].done():
                job[1].set_exception(err)
