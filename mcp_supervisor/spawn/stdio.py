"""``stdio_transport(spec)``: MCP over a spawned child's pipes, the streams the SDK's client expects.

What it yields is what ``mcp.client.stdio.stdio_client`` yields (anyio memory streams of
``SessionMessage``, parse errors delivered as exceptions on the read stream) plus the ``Child``,
so ``ClientSession`` (probes) or raw JSON-RPC forwarding (the proxy) sits on top. The shutdown
follows the MCP spec and the SDK: close stdin, give the server ``grace`` seconds to exit on its
own, then ``stop_signal`` to its group, KILL; shielded, so a cancelled caller neither leaks the
process nor hangs on it. The group is swept afterwards (``Child.cleanup``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Any

import anyio
import anyio.lowlevel
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage

from mcp_supervisor.logging import get_logger
from mcp_supervisor.spawn.child import Child, spawn
from mcp_supervisor.spawn.spec import SpawnSpec

log = get_logger("mcp_supervisor.spawn")

EXIT_GRACE = 2.0
"""Seconds a server gets to exit on its own after its stdin closes (the SDK's figure)."""
_FLUSH = 0.5
_CHUNK = 65536

ReadStream = MemoryObjectReceiveStream[SessionMessage | Exception]
WriteStream = MemoryObjectSendStream[SessionMessage]


def parse_line(line: bytes) -> SessionMessage | Exception:
    """One stdout line; a parse error is a value the session surfaces, as in the SDK."""
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        return exc


async def _read_chunk(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, _CHUNK)
        except BlockingIOError:
            await anyio.wait_readable(fd)


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            await anyio.wait_writable(fd)


@asynccontextmanager
async def stdio_transport(
    spec: SpawnSpec, *, errlog: IO[Any] | int | None = None, grace: float = EXIT_GRACE
) -> AsyncIterator[tuple[ReadStream, WriteStream, Child]]:
    """Spawn ``spec`` and speak newline-delimited JSON-RPC over its stdin/stdout."""
    child = await spawn(spec, stdio=True, stderr=errlog)
    assert child.stdin is not None and child.stdout is not None
    stdin_fd, stdout_fd = child.stdin, child.stdout
    child.stdin = child.stdout = None  # the transport owns the pipes; closed once its tasks are done
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    writer_done = anyio.Event()
    writer_scope = anyio.CancelScope()
    stdin_closed = False

    def close_stdin() -> None:
        nonlocal stdin_closed
        if not stdin_closed:
            stdin_closed = True
            with contextlib.suppress(OSError):
                os.close(stdin_fd)

    async def stdout_reader() -> None:
        buffer, deliver = b"", True
        async with read_writer:
            while chunk := await _read_chunk(stdout_fd):
                if not deliver:
                    continue  # drain: a server blocked writing stdout could not exit
                lines = (buffer + chunk).split(b"\n")
                buffer = lines.pop()
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        await read_writer.send(parse_line(line))
                    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                        deliver = False
                        break

    async def stdin_writer() -> None:
        try:
            with writer_scope:
                async with write_reader:
                    async for message in write_reader:
                        data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                        await _write_all(stdin_fd, data.encode())
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await read_writer.aclose()  # the server stopped reading: the session sees the end
        finally:
            writer_done.set()

    async def shutdown() -> None:
        read_stream.close()
        write_stream.close()
        with anyio.move_on_after(_FLUSH):
            await writer_done.wait()
        writer_scope.cancel()  # never close stdin under a write still waiting for room
        await writer_done.wait()
        close_stdin()
        if not await child.wait_for(grace):
            await child.stop(grace=grace)
        await child.cleanup()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stdout_reader)
            tg.start_soon(stdin_writer)
            try:
                yield read_stream, write_stream, child
            finally:
                with anyio.CancelScope(shield=True):
                    await shutdown()
                tg.cancel_scope.cancel()  # a survivor's open stdout must not keep the reader waiting
    finally:
        close_stdin()
        with contextlib.suppress(OSError):
            os.close(stdout_fd)
        if child.running:  # cancelled before the shutdown could run
            with anyio.CancelScope(shield=True):
                await child.stop(grace=0, polite=False)
