"""The stdio backend link: one server process per client session, started through ``spawn``.

Why one process per session: a stdio server serves exactly one client. The process is started
by the one spawn path (``mcp_supervisor.spawn``: the server's ``user``, a clean environment, the
orphan record, the group swept on exit), so a proxied stdio server is supervised like a managed
one. Its exit is a lost link: the shell starts a new process and the core re-runs the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcp_types import jsonrpc_message_adapter

from mcp_supervisor.config import ServerConfig
from mcp_supervisor.proxy.links import OnLost, OnMessage
from mcp_supervisor.proxy.wire import Message, is_request
from mcp_supervisor.spawn import SpawnRefused, SpawnSpec, spec_for_server, stdio_transport


class StdioLink:
    def __init__(self, server: ServerConfig, state_dir: Path, on_message: OnMessage, on_lost: OnLost) -> None:
        self._server = server
        self._state_dir = state_dir
        self._on_message = on_message
        self._on_lost = on_lost
        self._write: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._sends: set[asyncio.Task[None]] = set()
        self.pid: int | None = None

    async def open(self) -> None:
        try:
            spec = spec_for_server(self._server, state_dir=self._state_dir, role="backend")
        except SpawnRefused as exc:
            raise OSError(str(exc)) from None
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._run(spec, ready))
        await ready

    async def _run(self, spec: SpawnSpec, ready: asyncio.Future[None]) -> None:
        try:
            async with stdio_transport(spec) as (read_stream, write_stream, child):
                self._write = write_stream
                self.pid = child.pid
                ready.set_result(None)
                async for item in read_stream:
                    if isinstance(item, Exception):
                        continue  # a line that is not JSON-RPC: the servers drop these too
                    message = jsonrpc_message_adapter.dump_python(item.message, by_alias=True, mode="json",
                                                                  exclude_unset=True)
                    self._on_message(message, None)
                # at once: the transport's shutdown below (reap, sweep, cgroup) takes tens of ms
                # that a standby waiting to take over need not wait for
                self._lost("the server process exited", None)
        except Exception as exc:
            if not ready.done():
                ready.set_exception(OSError(f"cannot start the server: {exc}"))
                return
        if not ready.done():
            ready.set_exception(OSError("the server process ended at once"))
            return
        self._lost("the server process exited", None)

    def _lost(self, reason: str, unsent: int | None) -> None:
        if not self._closed:
            self._closed = True
            self._on_lost(reason, unsent)

    def send(self, message: Message, headers: Mapping[str, str] | None = None) -> None:
        task = asyncio.ensure_future(self._send(message))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    def abandon(self, backend_id: int) -> None:
        """On stdio a 2026-era cancellation is the notification itself."""
        self.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": backend_id}})

    async def _send(self, message: Message) -> None:
        from mcp.shared.message import SessionMessage

        request_id = message.get("id") if is_request(message) else None
        try:
            await self._write.send(SessionMessage(jsonrpc_message_adapter.validate_python(message)))
        except Exception:
            self._lost("the server process is gone", request_id if isinstance(request_id, int) else None)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._sends):
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
