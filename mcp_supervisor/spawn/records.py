"""Managed processes on record, so a daemon that died (kill -9, OOM, a crash) leaves nothing
unsupervised.

Every managed process is written to ``<state_dir>/processes/<server>.json`` as it starts
(pid, process group, start time, command, boot id) and removed when the daemon stops it. The next
daemon reads what is left before it starts anything and stops those process groups: otherwise
the orphan keeps the port, the new copy dies with "address already in use", and the orphan,
which answers the probes, is supervised by nobody.

Why these choices:
* A record is trusted only if the process it names is still the same process: same boot, same
  start time (clock ticks since boot) and same command line. A recycled pid never matches, so it
  is never signalled. A group whose leader is gone is matched through its members: none of them
  can be older than the recorded leader, and the kernel never hands a group id that is still in
  use to a new process.
* The directory and its files must belong to the daemon's user and be writable by nobody else;
  otherwise a user owning the state directory could make a root daemon kill any process. Files
  are opened relative to a directory fd with O_NOFOLLOW, written to a temp name and renamed.
* No fsync: the records guard against the daemon dying, not the machine; after a power cut there
  are no orphans to find, and the atomic rename already rules out a torn file.
* An exclusive ``flock`` on ``.lock`` for the daemon's life: a second daemon sharing the state
  directory must not "sweep" the first one's live servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import signal
import stat
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mcp_supervisor.logging import get_logger
from mcp_supervisor.spawn import procfs

log = get_logger("mcp_supervisor.process_records")

RECORDS_DIR = "processes"
_SUFFIX = ".json"
_MAX_RECORD_BYTES = 64 * 1024
_LOCK = ".lock"


@dataclass(frozen=True)
class ProcessRecord:
    server: str
    pid: int
    pgid: int
    start_ticks: int
    boot_id: str
    cmdline: tuple[str, ...]
    daemon_pid: int
    recorded_at: float

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cmdline"] = list(self.cmdline)
        return data

    @classmethod
    def from_json(cls, data: Any) -> ProcessRecord | None:
        try:
            return cls(
                server=str(data["server"]),
                pid=int(data["pid"]),
                pgid=int(data["pgid"]),
                start_ticks=int(data["start_ticks"]),
                boot_id=str(data["boot_id"]),
                cmdline=tuple(str(x) for x in data["cmdline"]),
                daemon_pid=int(data.get("daemon_pid", 0)),
                recorded_at=float(data.get("recorded_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError):
            return None


def still_ours(record: ProcessRecord, stats: list[procfs.ProcStat] | None = None) -> list[int]:
    """The live pids of ``record``'s process group that provably belong to it; [] if none do.

    The leader alive: it must have the recorded start time and command line (else the pid was
    recycled and nothing is signalled). The leader gone: the members of its group, none older
    than the leader was.
    """
    if record.pid <= 1 or record.pgid <= 1 or record.boot_id != procfs.boot_id():
        return []
    stats = procfs.all_stats() if stats is None else stats
    leader = next((s for s in stats if s.pid == record.pid), None)
    if leader is not None and leader.alive:
        if leader.start_ticks != record.start_ticks or procfs.read_cmdline(record.pid) != record.cmdline:
            return []
        if leader.pgid != record.pgid:
            return [record.pid]
    return [s.pid for s in procfs.group_members(record.pgid, stats) if s.start_ticks >= record.start_ticks]


def kill_group(record: ProcessRecord, sig: signal.Signals) -> list[int]:
    """Signal what is provably still ``record``'s; returns the pids signalled."""
    pids = still_ours(record)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return pids


class ProcessRecords:
    """The records of one state directory (one per directory per process: see ``records_for``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._dir_fd: int | None = None
        self._lock_fd: int | None = None
        self._problem: str | None = None
        self._live: dict[str, ProcessRecord] = {}
        self._warned = False
        self._finalizer = weakref.finalize(self, ProcessRecords._close_fds, [None, None])

    # --- opening, safely -------------------------------------------------------------------

    @staticmethod
    def _close_fds(fds: list[int | None]) -> None:
        for fd in fds:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def claim(self) -> bool:
        """Open the directory and take its lock; False (and ``problem`` says why) if it is unsafe
        or another daemon holds it. Idempotent."""
        if self._lock_fd is not None:
            return True
        if self._problem is not None:
            return False
        try:
            self.directory.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.directory, 0o700)
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            self._problem = f"cannot open {self.directory}: {exc.strerror or exc}"
            return False
        info = os.fstat(dir_fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o022:
            os.close(dir_fd)
            self._problem = (
                f"{self.directory} must belong to uid {os.geteuid()} and be writable by nobody else "
                f"(fix: chown {os.geteuid()} {self.directory}; chmod 700 {self.directory})"
            )
            return False
        lock_fd: int | None = None
        try:
            lock_fd = os.open(_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._close_fds([lock_fd, dir_fd])
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                self._problem = f"another mcp-supervisor uses {self.directory.parent} (its lock is held)"
            else:
                self._problem = f"cannot lock {self.directory / _LOCK}: {exc.strerror or exc}"
            return False
        self._dir_fd, self._lock_fd = dir_fd, lock_fd
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, ProcessRecords._close_fds, [lock_fd, dir_fd])
        return True

    @property
    def problem(self) -> str | None:
        return self._problem

    def close(self) -> None:
        self._finalizer()
        self._dir_fd = self._lock_fd = None

    # --- writing ---------------------------------------------------------------------------

    def record(self, server: str, pid: int) -> ProcessRecord | None:
        """Put a just-started process on record (its leader is ``pid``, its group ``pgid``)."""
        if not self.claim():
            self._warn_once()
            return None
        stat_ = procfs.read_stat(pid)
        if stat_ is None:
            return None  # gone already: its exit is handled by the watcher
        entry = ProcessRecord(
            server=server,
            pid=pid,
            pgid=stat_.pgid,
            start_ticks=stat_.start_ticks,
            boot_id=procfs.boot_id(),
            cmdline=procfs.read_cmdline(pid) or (),
            daemon_pid=os.getpid(),
            recorded_at=time.time(),
        )
        try:
            self._write(server, json.dumps(entry.to_json()).encode())
        except OSError as exc:
            log.warning("cannot record a managed process", server=server, pid=pid, error=exc.strerror or str(exc))
        self._live[server] = entry
        return entry

    def forget(self, server: str, pid: int) -> None:
        """The daemon stopped this process's group: no longer on record."""
        entry = self._live.get(server)
        if entry is None or entry.pid != pid:
            return
        del self._live[server]
        if self._dir_fd is not None:
            with contextlib.suppress(FileNotFoundError, OSError):
                os.unlink(_file_name(server), dir_fd=self._dir_fd)

    def current(self, server: str) -> ProcessRecord | None:
        """The record of ``server``'s process started last (also after it exited, until stopped)."""
        return self._live.get(server)

    def live(self) -> list[ProcessRecord]:
        """This daemon's processes on record now (safe to call from another thread)."""
        return list(self._live.values())

    def _write(self, server: str, data: bytes) -> None:
        assert self._dir_fd is not None
        final = _file_name(server)
        temp = f".{final}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=self._dir_fd)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=self._dir_fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temp, final, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=self._dir_fd)
            raise

    def _warn_once(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning("managed processes are not recorded; a daemon that dies may leave them running",
                        problem=self._problem)

    # --- the previous life -----------------------------------------------------------------

    def leftovers(self) -> list[ProcessRecord]:
        """Records on disk that this daemon did not write (a previous life's)."""
        if not self.claim():
            return []
        assert self._dir_fd is not None
        found = []
        mine = {_file_name(name) for name in self._live}
        for name in os.listdir(self._dir_fd):
            if not name.endswith(_SUFFIX) or name.startswith(".") or name in mine:
                continue
            entry = self._read(name)
            if entry is not None:
                found.append(entry)
        return found

    def _read(self, name: str) -> ProcessRecord | None:
        assert self._dir_fd is not None
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self._dir_fd)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
                log.warning("ignoring a process record that is not the daemon's own",
                            file=str(self.directory / name))
                return None
            raw = handle.read(_MAX_RECORD_BYTES + 1)
        if len(raw) > _MAX_RECORD_BYTES:
            return None
        try:
            return ProcessRecord.from_json(json.loads(raw))
        except ValueError:
            return None

    def _drop(self, entry: ProcessRecord) -> None:
        if self._dir_fd is not None and entry.server not in self._live:
            with contextlib.suppress(OSError):
                os.unlink(_file_name(entry.server), dir_fd=self._dir_fd)

    async def stop_leftovers(self, grace: float) -> list[str]:
        """Stop every process group a previous daemon left behind: SIGTERM, ``grace`` seconds,
        SIGKILL. Returns one line per group stopped (for the log). Records that no longer match a
        live process are dropped unsignalled."""
        if not self.claim():
            if self._problem:
                log.error("previous daemon's processes not checked", problem=self._problem)
            return []
        stopped: list[str] = []
        pending: list[ProcessRecord] = []
        for entry in self.leftovers():
            pids = kill_group(entry, signal.SIGTERM)
            if pids:
                what = f"{entry.server}: {procfs.describe(entry.pid) if entry.pid in pids else f'group {entry.pgid}'}"
                log.warning("stopping a managed process left by a previous daemon", server=entry.server,
                            pid=entry.pid, pgid=entry.pgid, pids=pids, daemon_pid=entry.daemon_pid)
                stopped.append(what)
                pending.append(entry)
            else:
                self._drop(entry)
        pending = await _wait_gone(pending, grace)
        for entry in pending:
            log.warning("a previous daemon's process ignored SIGTERM; killing its group", server=entry.server,
                        pgid=entry.pgid)
            kill_group(entry, signal.SIGKILL)
        await _wait_gone(pending, 2.0)
        for entry in self.leftovers():
            if still_ours(entry):
                log.error("a previous daemon's process survived SIGKILL (uninterruptible?)", server=entry.server,
                          pgid=entry.pgid)
            else:
                self._drop(entry)
        return stopped


async def _wait_gone(entries: list[ProcessRecord], seconds: float) -> list[ProcessRecord]:
    """Those of ``entries`` still running after up to ``seconds`` (they are not our children, so
    there is no wait() to block on: look every 50 ms)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        entries = [e for e in entries if still_ours(e)]
        if not entries or loop.time() >= deadline:
            return entries
        await asyncio.sleep(0.05)


def _file_name(server: str) -> str:
    # server names are validated (letters, digits, '.', '_', '-'); refuse anything that could
    # name another directory entry
    if not server or server in (".", "..") or "/" in server or "\0" in server:
        raise ValueError(f"not a server name: {server!r}")
    return server + _SUFFIX


_REGISTRY: weakref.WeakValueDictionary[str, ProcessRecords] = weakref.WeakValueDictionary()


def records_for(state_dir: Path) -> ProcessRecords:
    """The one ``ProcessRecords`` of ``state_dir`` in this process (the supervisor and its
    managed processes share it; one lock, one in-memory view)."""
    directory = os.path.abspath(Path(state_dir) / RECORDS_DIR)
    existing = _REGISTRY.get(directory)
    if existing is None:
        existing = ProcessRecords(Path(directory))
        _REGISTRY[directory] = existing
    return existing
