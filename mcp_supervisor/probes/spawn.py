"""Know the pid of every stdio server the SDK spawns, and sweep its process group afterwards.

Why: ``mcp.client.stdio`` starts the server in a new session (pgid = pid) but kills the group only
when the leader outlives the grace period. A server that exits on stdin EOF while a child of it
ignores SIGTERM leaves that child behind (seen with a real test server). The SDK does not expose
the process, so the spawn function is wrapped once to report the pid to the session that spawned
it (a context variable set in that session's task); after the transport's own shutdown the prober
signals whatever is left in the group: TERM, then KILL after a grace period. The sweep finds and
watches the group's members with psutil in a worker thread, never on the event loop. If an SDK
release drops the private hook, the daemon says so in its log instead of silently not sweeping.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import time
from collections.abc import Iterable
from typing import Any

import mcp.client.stdio as _sdk_stdio
import psutil

from mcp_supervisor.logging import get_logger

SPAWNED: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("mcp_probe_spawned", default=None)

_installed = False
_HOOK = "_create_platform_compatible_process"
"""The SDK's private spawn function; wrapped because the SDK exposes no other way to learn the pid."""
log = get_logger("mcp_supervisor.probes")


def _sdk_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mcp")
    except PackageNotFoundError:
        return "unknown"


def install() -> None:
    """Wrap the SDK's spawn function (idempotent; a no-op if the SDK changed its shape)."""
    global _installed
    if _installed:
        return
    original = getattr(_sdk_stdio, _HOOK, None)
    if original is None:
        _installed = True  # say it once, not at every probe
        log.warning(
            f"the MCP SDK no longer has mcp.client.stdio.{_HOOK}: stdio probe servers' process groups are not "
            "swept after a probe (children that ignore SIGTERM may be left behind); please report this",
            sdk_version=_sdk_version(),
        )
        return

    async def spawn(*args: Any, **kwargs: Any) -> Any:
        process = await original(*args, **kwargs)
        sink = SPAWNED.get()
        if sink is not None:
            sink.append(int(process.pid))
        return process

    setattr(_sdk_stdio, _HOOK, spawn)
    _installed = True


def kill_groups(pgids: Iterable[int]) -> None:
    """SIGKILL whole process groups at once (a failed or abandoned stdio instance)."""
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


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
