"""Sweep a process group after its leader exited: TERM, a grace period, KILL.

Why: a server that exits on stdin EOF while a child of it ignores SIGTERM leaves that child
behind (seen with a real test server). ``spawn/child.py`` starts every child as the leader of a
new process group (pgid = pid), so after the leader exits whatever is left in the group is its
own. The sweep finds and watches the group's members with psutil in a worker thread, never on the
event loop (reading the whole process table and polling non-children would stall it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import psutil


def _members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of the group: one pass over the process table (in a thread)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return found


def _still_alive(members: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in members:
        try:  # is_running() compares the start time too: a reused pid is not our process
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            continue
    return alive


def _wait_gone(members: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Wait (blocking; run in a thread) until the known members are gone; what is left.

    Not ``psutil.wait_procs``: for a member that is our own child it would reap it, stealing the
    exit status from the code that spawned it; zombies count as gone (they wait for a reaper).
    """
    deadline = time.monotonic() + seconds
    delay = 0.005
    alive = _still_alive(members)
    while alive and time.monotonic() < deadline:
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.1)
        alive = _still_alive(alive)
    return alive


def _sweep(pgid: int, grace: float) -> bool:
    members = _members(pgid)
    if not members:
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        members = _wait_gone(members, wait)
        if not members:
            return True
    return True


async def sweep_group(pgid: int, grace: float = 1.0) -> bool:
    """TERM then KILL whatever is left in the process group; True if something had to be signalled.

    Runs in a worker thread: finding the group's members reads the whole process table, and waiting
    for them is a poll (they are not our children); neither may stall the event loop.
    """
    return await asyncio.to_thread(_sweep, pgid, grace)
