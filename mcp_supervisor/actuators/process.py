"""Managed server processes, owned by the supervisor the way supervisord owns its programs.

Why these choices:
* Started through the one spawn path (``spawn/``): its own process group (a server that forks
  helpers, npx, uvx, shells, is stopped as a whole), its ``user`` (``nobody`` under a root daemon
  when none is named) with a clean environment, ``umask 077``, its ``limits`` (an OOM kill is
  read back into ``exit_info``), on record while it runs, its group swept after it.
* Exit noticed by awaiting the process in a task, never by polling: the respawn can start within
  milliseconds of the death instead of at the next check (supervisord's ~1 s tick).
* Output pumped into size-capped rotating files: a chatty server must not fill the disk, and a
  crash's last words are kept for the alert.
* The log is the server's raw output, not redacted (a traceback may hold its token): the file
  is 0600 in a 0700 directory, the daemon's own; only the daemon's user (and root) read it.
* Log writes (and rotation's renames) run in a worker thread: a slow or full disk must not stall
  the event loop that answers probes and the control socket.
* The output pipe is ours (``os.pipe``): a grandchild still holding it must not hide the leader's
  death (``Child.wait()`` returns when the leader is reaped, whatever holds the pipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from mcp_supervisor.config import ServerConfig
from mcp_supervisor.logging import get_logger
from mcp_supervisor.spawn import Child, ExitInfo, SpawnRefused, spawn, spec_for_server
from mcp_supervisor.spawn.records import ProcessRecords, records_for

log = get_logger("mcp_supervisor.process")

LOG_MAX_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 3
_CHUNK = 65536
_DRAIN_AFTER_EXIT = 1.0


class ProcessStartError(RuntimeError):
    """The command could not be started at all (not found, not executable, bad cwd)."""


class RotatingLog:
    """Append-only file that rotates to ``.1`` .. ``.N`` at ``max_bytes`` (like logging's handler)."""

    def __init__(self, path: Path, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(path.parent.stat().st_mode) != 0o700:
            os.chmod(path.parent, 0o700)  # an older daemon made it 0755
        self._file = _open_private(path)
        self._size = self._file.tell()
        self._lock = threading.Lock()
        """Writes come from worker threads; an old instance's pump may still drain beside a new one."""

    def write(self, data: bytes) -> None:
        with self._lock:
            self._write(data)

    def _write(self, data: bytes) -> None:
        while data:
            room = self.max_bytes - self._size
            if room <= 0:
                self._rotate()
                continue
            chunk, data = data[:room], data[room:]
            self._file.write(chunk)
            self._size += len(chunk)

    def _rotate(self) -> None:
        self._file.close()
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = _open_private(self.path)
        self._size = 0

    def tail(self, limit: int = 2000) -> str:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(max(0, self._size - limit))
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _open_private(path: Path) -> BinaryIO:
    """Append to ``path``, 0600 and never through a symlink (older files are made 0600 too)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
        os.fchmod(fd, 0o600)
    handle = os.fdopen(fd, "ab", buffering=0)
    handle.seek(0, os.SEEK_END)
    return handle


class ManagedProcess:
    """One supervised server process; ``on_exit`` fires (once per unexpected exit) as it dies.

    ``stop()``/``restart()`` do not fire ``on_exit``: the caller asked for that exit.
    """

    def __init__(
        self,
        server: ServerConfig,
        log_dir: Path,
        *,
        grace: float = 2.0,
        on_exit: Callable[[int | None], None] | None = None,
        log_max_bytes: int = LOG_MAX_BYTES,
        records: ProcessRecords | None = None,
    ) -> None:
        if not server.command:
            raise ValueError(f"server {server.name!r} is managed but has no command")
        self.server = server
        self.grace = server.stop_timeout if server.stop_timeout is not None else grace
        self._told_default_user = False
        self.on_exit = on_exit
        self.log = RotatingLog(Path(log_dir) / f"{server.name}.log", max_bytes=log_max_bytes)
        # on record while it runs, so a daemon killed with -9 leaves nothing unsupervised (the log
        # directory is <state_dir>/logs; the records live beside it)
        self.records = records if records is not None else records_for(Path(log_dir).parent)
        self.restarts = 0
        self.started_at: float | None = None
        self.exited_at: float | None = None
        self.returncode: int | None = None
        self._proc: Child | None = None
        self.exit_info: ExitInfo | None = None
        """How the last process ended (``text``: "killed by the kernel: out of memory (limit 64M)")."""
        self._watch: asyncio.Task[None] | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._stopping = False
        self.exited = asyncio.Event()

    @property
    def pid(self) -> int | None:
        """The running leader's pid; None once it exited (status never shows a dead pid)."""
        return self._proc.pid if self._proc is not None and self._proc.running else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    async def start(self) -> None:
        async with self._lock:
            await self._start()

    async def stop(self) -> None:
        async with self._lock:
            await self._stop()

    async def restart(self) -> bool:
        """Stop (the whole group) and start again; True once the new process is running."""
        async with self._lock:
            await self._stop()
            await self._start()
            self.restarts += 1
            return self.running

    def kill(self) -> None:
        """Synchronous last resort (shutdown deadline passed): SIGKILL the whole group now."""
        if self._proc is not None:
            self._proc.kill()

    # --- internals -------------------------------------------------------------------------

    async def _start(self) -> None:
        if self.running:
            return
        if self._proc is not None:  # the leader exited on its own: clear what is left of its group
            await self._stop()
        server = self.server
        try:
            spec = spec_for_server(server, state_dir=self.records.directory.parent, role="managed", grace=self.grace)
        except SpawnRefused as exc:
            raise ProcessStartError(str(exc)) from None
        identity = spec.identity
        if identity.defaulted and not self._told_default_user:
            self._told_default_user = True
            log.warning("managed server runs as nobody: the daemon is root and 'user' is not set "
                        "(set user = \"ACCOUNT\" in its [[servers]] table)", server=server.name)
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            proc = await spawn(spec, stdio=False, output=write_fd)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            os.close(read_fd)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            who = f" as {identity.name} (uid {identity.uid})" if identity.switch else ""
            fix = "check 'command' and 'cwd'"
            if identity.defaulted:
                fix += "; it runs as nobody because 'user' is not set: set user = \"ACCOUNT\" (or \"root\" deliberately)"
            raise ProcessStartError(f"server {server.name!r}: cannot start {server.command!r}{who} ({reason}); {fix}") from None
        finally:
            os.close(write_fd)
        self._proc = proc
        self.exit_info = None
        self._stopping = False
        self.exited.clear()
        self.started_at = time.monotonic()
        self.returncode = None
        loop = asyncio.get_running_loop()
        pump = loop.create_task(self._pump(read_fd), name=f"log:{server.name}")
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        self._watch = loop.create_task(self._watch_exit(proc, pump), name=f"proc:{server.name}")

    async def _watch_exit(self, proc: Child, pump: asyncio.Task[None]) -> None:
        info = await proc.wait()
        returncode = info.returncode
        self.exited_at = time.monotonic()
        self.returncode = returncode
        self.exit_info = info
        self.exited.set()
        if not self._stopping and self.on_exit is not None:
            try:
                self.on_exit(returncode)
            except Exception:
                log.exception("on_exit callback failed", server=self.server.name)
        # Children that outlive the leader may keep the pipe open; keep their output for a while,
        # then let go so a restart loop cannot pile up readers.
        if not pump.done():
            asyncio.get_running_loop().call_later(_DRAIN_AFTER_EXIT, pump.cancel)

    async def _pump(self, read_fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_CHUNK)
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        try:
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        except BaseException:
            pipe.close()
            raise
        try:
            while data := await reader.read(_CHUNK):
                try:
                    await asyncio.to_thread(self.log.write, data)
                except OSError as exc:  # a full disk must not kill the supervisor
                    log.warning("cannot write server log", server=self.server.name, error=exc.strerror)
        finally:
            transport.close()

    async def _stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        info = await proc.stop(self.grace)  # stop_signal, grace, KILL of the group; swept; off record
        if self._watch is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        self.exit_info = info
        self._proc = None
        self._watch = None

    async def close(self) -> None:
        """Stop the process and wait for its output to be written (end of the daemon's life)."""
        await self.stop()
        pumps = list(self._pumps)
        if pumps:
            _, pending = await asyncio.wait(pumps, timeout=_DRAIN_AFTER_EXIT)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.log.close()
