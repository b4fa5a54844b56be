"""Cross-process locks on a vault location, restic-style: one small file per holder in ``locks/``.

Why not ``flock``: a location may be a network mount shared by several hosts, and a lock must
say who holds it (pid, host, time) so a person can judge a stuck one. Why shared and exclusive:
backups, restores and verify may run side by side (blobs are content-addressed and written
atomically), but retention deletes blobs no kept snapshot references, so it must run alone: a
backup that found a blob already present, or wrote one whose manifest is not there yet, would
otherwise lose it to a concurrent cleanup.

A lock is stale when its process is gone (same host) or it is older than ``STALE_AFTER_S`` (any
host, as restic judges); stale locks are removed by whoever finds them.

Why a ``LockStore``: an off-host location (sftp, rclone) keeps its lock files the same way, only
written and listed through its transport (``vault/remote.py``); the waiting and fairness rules
below are one piece of code for both.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Protocol

from mcp_supervisor.vault.crypto import VaultError

STALE_AFTER_S = 30 * 60.0
WAIT_S = 60.0


class LocationLocked(VaultError):
    pass


@dataclass(frozen=True)
class LockInfo:
    path: PurePath
    pid: int
    host: str
    time: float
    exclusive: bool

    def describe(self) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.time))
        return f"{kind} lock of pid {self.pid} on {self.host} since {when} ({self.path})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(info: LockInfo, now: float, host: str) -> bool:
    if now - info.time > STALE_AFTER_S:
        return True
    return info.host == host and not _alive(info.pid)


def _read(path: Path) -> LockInfo | None:
    try:
        return parse_body(path, path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # a torn or foreign file: treat as a fresh exclusive lock until it ages out (never guess)
        try:
            return LockInfo(path, -1, "?", path.stat().st_mtime, True)
        except OSError:
            return None


def holders(root: Path) -> list[LockInfo]:
    folder = root / "locks"
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if name.startswith("."):
            continue
        info = _read(folder / name)
        if info is not None:
            found.append(info)
    return found


class LockStore(Protocol):
    """Where one location's lock files live: a folder, or an off-host location's ``locks/``."""

    where: str

    def publish(self, name: str, body: bytes) -> PurePath: ...

    def remove(self, path: PurePath) -> None: ...

    def holders(self) -> list[LockInfo]: ...


class FolderLocks:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def publish(self, name: str, body: bytes) -> PurePath:
        folder = self.root / "locks"
        folder.mkdir(exist_ok=True, mode=0o700)
        _publish(folder / name, body)
        return folder / name

    def remove(self, path: PurePath) -> None:
        Path(path).unlink(missing_ok=True)

    def holders(self) -> list[LockInfo]:
        return holders(self.root)


def lock_body(exclusive: bool) -> bytes:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(),
                       "exclusive": exclusive}).encode()


def parse_body(path: PurePath, data: bytes) -> LockInfo:
    """ValueError/KeyError/TypeError for a torn or foreign body."""
    raw = json.loads(data)
    return LockInfo(path, int(raw["pid"]), str(raw["host"]), float(raw["time"]), bool(raw["exclusive"]))


def location_lock(root: Path, *, exclusive: bool, wait: float | None = None) -> contextlib.AbstractContextManager[None]:
    """Hold a shared or exclusive lock on vault location ``root`` (which must exist)."""
    return hold(FolderLocks(root), exclusive=exclusive, wait=wait)


@contextlib.contextmanager
def hold(store: LockStore, *, exclusive: bool, wait: float | None = None) -> Iterator[None]:
    """Hold a shared or exclusive lock in ``store``.

    Fairness: a shared locker steps back whenever an exclusive lock file exists; an exclusive one
    waiting only for shared holders keeps its file (so no new backup starts) until they finish;
    two exclusive ones both step back and retry after a random pause.
    """
    host = socket.gethostname()
    name = secrets.token_hex(16)
    body = lock_body(exclusive)
    deadline = time.monotonic() + (WAIT_S if wait is None else wait)
    mine: PurePath | None = None
    try:
        while True:
            if mine is None:
                mine = store.publish(name, body)
            blocking = _conflicts(store, mine, exclusive, host)
            if not blocking:
                break
            if time.monotonic() > deadline:
                raise _locked(store.where, blocking)
            if exclusive and not any(info.exclusive for info in blocking):
                time.sleep(0.005 + random.random() * 0.01)
                continue
            store.remove(mine)
            mine = None
            time.sleep(0.02 + random.random() * 0.08)
        yield
    finally:
        if mine is not None:
            store.remove(mine)


def _publish(path: Path, body: bytes) -> None:
    """Write the lock file whole, then give it its name: a kill -9 midway leaves only a dot-file
    (ignored, and collected later), never a torn lock that would block everyone until it ages out."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, body)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def collect_torn(root: Path, older_than: float) -> None:
    """Remove lock temp files a killed process left (call with the exclusive lock held)."""
    cutoff = time.time() - older_than
    for path in (root / "locks").glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if path.lstat().st_mtime < cutoff:
                path.unlink()


def _conflicts(store: LockStore, mine: PurePath, exclusive: bool, host: str) -> list[LockInfo]:
    now = time.time()
    blocking: list[LockInfo] = []
    for info in store.holders():
        if info.path == mine:
            continue
        if is_stale(info, now, host):
            with contextlib.suppress(FileNotFoundError):
                store.remove(info.path)
            continue
        if exclusive or info.exclusive:
            blocking.append(info)
    return blocking


def _locked(where: str, blocking: list[LockInfo]) -> LocationLocked:
    return LocationLocked(
        f"vault location {where} is locked: {blocking[0].describe()}; if that process is gone for good, "
        "remove that lock file"
    )
