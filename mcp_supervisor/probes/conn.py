"""One connection attempt of a probe: its transport, its session worker, and what it observed.

Why apart from the prober (``mcp.py``): the prober decides *when* to connect, reuse, retry and
what a result means; this module knows *how* one connection is made and torn down for each
transport (a spawned stdio child through ``spawn/``, a Streamable-HTTP or SSE client) and keeps
the side facts classification needs: HTTP statuses, garbage on stdout, the tail of stderr, and a
stdio child's exit (an OOM kill is a different failure than a crash).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import IO, Any

from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from mcp_supervisor.auth.registry import probe_headers
from mcp_supervisor.config import ServerConfig
from mcp_supervisor.probes.classify import Observed
from mcp_supervisor.probes.context import HttpSink, ProbeContext, make_http_client, probe_timeout
from mcp_supervisor.probes.light import LightRequest, build_request
from mcp_supervisor.probes.session import ConnectInfo, SessionWorker
from mcp_supervisor.spawn import Child, ExitInfo, SpawnSpec, stdio_transport

_STDERR_TAIL_BYTES = 2048
_STDERR_TAIL_CHARS = 240


class Conn:
    """One connection attempt: the worker plus what it observed (statuses, garbage, stderr, exit)."""

    def __init__(self, server: ServerConfig, context: ProbeContext, spec: SpawnSpec | None = None) -> None:
        self.server = server
        self.obs = Observed(
            transport=server.transport,
            headers=tuple(server.headers),
            token_env=server.token_env,
            command=server.command,
        )
        self.sink: HttpSink | None = None
        self.child: Child | None = None
        self.errfile: IO[str] | None = None
        self.on_close: Callable[[Conn], None] | None = None
        self._light: LightRequest | None = None
        self._spec = spec
        first_phase = "spawn" if server.transport == "stdio" else "connect"
        transport: Callable[[], AbstractAsyncContextManager[Any]]
        if server.transport == "stdio":
            self.errfile = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
            transport = self._stdio
        else:
            self.sink = HttpSink(headers=probe_headers(server), statuses=self.obs.statuses, limits=self.obs.limits)
            url = server.url or ""
            if server.transport == "http":
                http_client = context.http_client(url)
                transport = lambda: streamable_http_client(url, http_client=http_client)  # noqa: E731
            else:
                transport = lambda: sse_client(  # noqa: E731
                    url, timeout=probe_timeout(server), httpx_client_factory=make_http_client
                )
        self.worker = SessionWorker(
            transport,
            mode=server.protocol,
            timeout=probe_timeout(server),
            sink=self.sink,
            first_phase=first_phase,
            message_handler=self._on_message,
        )

    @asynccontextmanager
    async def _stdio(self) -> AsyncIterator[tuple[Any, Any]]:
        """The spawned child's pipes for the SDK's client; a failed or cancelled session kills the
        whole group at once (no grace for a server that failed its probe)."""
        assert self._spec is not None, "a stdio connection needs its spawn spec"
        async with stdio_transport(self._spec, errlog=self.errfile) as (read, write, child):
            self.child = child
            try:
                yield read, write
            except BaseException:
                child.kill()
                raise

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception) and len(self.obs.garbage) < 5:
            self.obs.garbage.append(f"{type(message).__name__}: {message}")

    async def start(self) -> ConnectInfo:
        return await self.worker.start()

    @property
    def pid(self) -> int | None:
        """The stdio child's pid (= its process group) while it runs."""
        child = self.child
        return child.pid if child is not None and child.running else None

    @property
    def exit_info(self) -> ExitInfo | None:
        """How the stdio child ended (None: not stdio, or still running)."""
        return self.child.exit_info if self.child is not None else None

    def light_request(self) -> LightRequest | None:
        """The prebuilt raw warm check of a connected Streamable-HTTP session (None: use the SDK)."""
        # an OAuth server's request is rebuilt each time: its Authorization header is renewed
        if (self._light is None or self.server.auth) and self.server.transport == "http" and self.sink is not None:
            info = self.worker.info
            if info.protocol_version and self.worker.alive:
                self._light = build_request(
                    self.server.url or "",
                    legacy=info.legacy,
                    protocol_version=info.protocol_version,
                    session_id=self.sink.session_id,
                    headers=self.sink.headers,
                )
        return self._light

    async def aclose(self, *, force: bool = False) -> None:
        if self.on_close is not None:
            self.on_close(self)
        try:
            await self.worker.aclose(force=force)  # the transport stops the child and sweeps its group
        finally:
            self._read_stderr()
            if self.errfile is not None:
                self.errfile.close()
                self.errfile = None

    def _read_stderr(self) -> None:
        if self.errfile is None:
            return
        try:
            fd = self.errfile.fileno()
            size = os.fstat(fd).st_size
            raw = os.pread(fd, _STDERR_TAIL_BYTES, max(0, size - _STDERR_TAIL_BYTES))
        except (OSError, ValueError):
            return
        lines = [ln.strip() for ln in raw.decode("utf-8", "replace").splitlines() if ln.strip()]
        tail = " | ".join(lines[-4:])
        self.obs.stderr_tail = tail[-_STDERR_TAIL_CHARS:]
