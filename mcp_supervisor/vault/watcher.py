"""Which watched files changed, from inotify on their folders, with a slow lstat re-check as a net.

Why inotify on the folder, not the file: editors and MCP clients replace files by rename, and a
file that is deleted and recreated is a new inode; a folder watch sees every name in it. Why a
safety net anyway: inotify misses changes on network file systems, a folder that is itself
replaced loses its watch, and the queue can overflow. The net is an ``lstat`` per file every few
seconds, in a worker thread, so the event loop never waits on a disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from asyncinotify import Event, Inotify, Mask, Watch

from mcp_supervisor.logging import get_logger

log = get_logger("mcp_supervisor.vault")

_MASK = (
    Mask.CLOSE_WRITE
    | Mask.MODIFY
    | Mask.ATTRIB
    | Mask.CREATE
    | Mask.DELETE
    | Mask.MOVED_FROM
    | Mask.MOVED_TO
    | Mask.DELETE_SELF
    | Mask.MOVE_SELF
    | Mask.ONLYDIR
    | Mask.DONT_FOLLOW
    | Mask.EXCL_UNLINK
)
Signature = tuple[int, int, int, int] | None
DEBOUNCE = 0.3
"""Seconds a file must stay quiet before it is judged: editors write in several steps."""
SAFETY_INTERVAL = 5.0
"""Seconds between lstat re-checks of every watched file (the net under inotify)."""


def signature(path: Path) -> Signature:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino, info.st_mode)


class FolderWatcher:
    """Marks ``changed[name] = monotonic time`` for each watched file touched, and sets ``wake``."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = dict(paths)
        self.by_folder: dict[Path, dict[str, str]] = {}
        for name, path in paths.items():
            self.by_folder.setdefault(path.parent, {})[path.name] = name
        self.changed: dict[str, float] = {}
        self.wake = asyncio.Event()
        self._inotify: Inotify | None = None
        self._watches: dict[Path, Watch] = {}
        self._signatures: dict[str, Signature] = {}
        self.started = asyncio.Event()
        """Set once watches are in place (or inotify is known to be missing): changes from then on count."""

    def mark(self, name: str, now: float | None = None) -> None:
        self.changed[name] = time.monotonic() if now is None else now
        self.wake.set()

    def ensure_watches(self) -> None:
        """(Re)add a watch for every folder that has none (missing folders are retried later)."""
        if self._inotify is None:
            return
        for folder in self.by_folder:
            if folder in self._watches:
                continue
            try:
                self._watches[folder] = self._inotify.add_watch(folder, _MASK)
            except OSError:
                continue

    async def safety_check(self) -> None:
        """The net: compare every file's lstat with the last one; re-add lost folder watches."""
        fresh = await asyncio.to_thread(lambda: {name: signature(path) for name, path in self.paths.items()})
        now = time.monotonic()
        for name, sig in fresh.items():
            if name in self._signatures and sig != self._signatures[name]:
                self.changed.setdefault(name, now)
        self._signatures = fresh
        self.ensure_watches()

    async def run(self) -> None:
        try:
            self._signatures = await asyncio.to_thread(lambda: {n: signature(p) for n, p in self.paths.items()})
            try:
                self._inotify = Inotify()
            except OSError as exc:
                log.warning("inotify is not available; watched configs are checked every few seconds", error=str(exc))
                return
            self.ensure_watches()
            self.started.set()
            async for event in self._inotify:
                self._handle(event)
        finally:
            self.started.set()  # whatever happened, the watch loop must not wait for us forever
            if self._inotify is not None:
                self._inotify.close()
                self._inotify = None

    def _handle(self, event: Event) -> None:
        now = time.monotonic()
        if Mask.Q_OVERFLOW in event.mask:
            for name in self.paths:
                self.changed[name] = now
            self.wake.set()
            return
        watch = event.watch
        folder = watch.path if watch is not None else None
        if folder is None or folder not in self.by_folder:
            return
        names = self.by_folder[folder]
        if Mask.IGNORED in event.mask or Mask.DELETE_SELF in event.mask or Mask.MOVE_SELF in event.mask:
            if self._watches.get(folder) is watch:
                del self._watches[folder]  # the net re-adds it once a folder is there again
                if Mask.MOVE_SELF in event.mask and self._inotify is not None and watch is not None:
                    try:  # it follows the folder to its new name; we watch the path
                        self._inotify.rm_watch(watch)
                    except OSError:
                        pass
            for name in names.values():
                self.changed[name] = now
        elif event.name is not None and str(event.name) in names:
            self.changed[names[str(event.name)]] = now
        else:
            return
        self.wake.set()


async def watch_loop(
    watcher: FolderWatcher,
    check_intervals: dict[str, float],
    heal: Callable[[str], Awaitable[Any]],
    jobs: list[tuple[float, Callable[[], Awaitable[Any]]]],
) -> None:
    """Call ``heal(name)`` when a file has been quiet for ``DEBOUNCE`` after a change, or every
    ``check_intervals[name]`` anyway; run each job every its interval. Sleeps until the next
    deadline or inotify wakes it: no polling on the event loop."""
    now = time.monotonic()
    next_check = {name: now + interval for name, interval in check_intervals.items()}
    next_safety = now + SAFETY_INTERVAL
    next_job = [now + interval for interval, _ in jobs]
    while True:
        now = time.monotonic()
        due_at = min(next_safety, *next_job, *next_check.values(), *(t + DEBOUNCE for t in watcher.changed.values()))
        if due_at > now and not watcher.wake.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(due_at - now):
                    await watcher.wake.wait()
        watcher.wake.clear()
        now = time.monotonic()
        if now >= next_safety:
            next_safety = now + SAFETY_INTERVAL
            await watcher.safety_check()
        for name, interval in check_intervals.items():
            changed_at = watcher.changed.get(name)
            if (changed_at is not None and now - changed_at >= DEBOUNCE) or now >= next_check[name]:
                watcher.changed.pop(name, None)
                next_check[name] = now + interval
                await heal(name)
        for index, (interval, job) in enumerate(jobs):
            if now >= next_job[index]:
                next_job[index] = now + interval
                await job()
