"""Know the pid of every stdio server the SDK spawns, and sweep its process group afterwards.

Why: ``mcp.client.stdio`` starts the server in a new session (pgid = pid) but kills the group only
when the leader outlives the grace period. A server that exits on stdin EOF while a child of it
ignores SIGTERM leaves that child behind (seen with a real test server). The SDK does not expose
the process, so the spawn function is wrapped once to report the pid to the session that spawned
it (a context variable set in that session's task); after the transport's own shutdown the prober
signals whatever is left in the group: TERM, then KILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mcp.client.stdio as _sdk_stdio

SPAWNED: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("mcp_probe_spawned", default=None)

_installed = False


def install() -> None:
    """Wrap the SDK's spawn function (idempotent; a no-op if the SDK changed its shape)."""
    global _installed
    if _installed:
        return
    original = getattr(_sdk_stdio, "_create_platform_compatible_process", None)
    if original is None:
        return

    async def spawn(*args: Any, **kwargs: Any) -> Any:
        process = await original(*args, **kwargs)
        sink = SPAWNED.get()
        if sink is not None:
            sink.append(int(process.pid))
        return process

    _sdk_stdio._create_platform_compatible_process = spawn
    _installed = True


def kill_groups(pgids: Iterable[int]) -> None:
    """SIGKILL whole process groups at once (a failed or abandoned stdio instance)."""
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is in the group; zombies wait for a reaper, not us."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


async def _wait_gone(pgid: int, seconds: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while group_alive(pgid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)  # the group is not our child: nothing to await
    return True


async def sweep_group(pgid: int, grace: float = 1.0) -> bool:
    """TERM then KILL whatever is left in the process group; True if something had to be signalled."""
    if not group_alive(pgid):
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        if await _wait_gone(pgid, wait):
            return True
    return True
