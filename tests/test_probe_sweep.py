"""The process-group sweep after a spawned child's leader exits: psutil in a worker thread."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from mcp_supervisor.spawn import sweep as spawn
from tests.servers.fixtures import pid_alive

# A leader that exits at once, leaving a child that ignores SIGTERM in its process group.
ORPHAN_MAKER = (
    "import subprocess, sys\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(\"ready\", flush=True); time.sleep(60)'], "
    "stdout=subprocess.PIPE)\n"
    "child.stdout.readline()\n"
    "print(child.pid, flush=True)\n"
)


async def test_sweep_kills_what_ignores_term_without_blocking_the_loop() -> None:
    leader = subprocess.Popen([sys.executable, "-c", ORPHAN_MAKER], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    leader.wait(timeout=30)
    assert pid_alive(child) and os.getpgid(child) == leader.pid
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        signalled = await spawn.sweep_group(leader.pid, grace=0.5)
    finally:
        task.cancel()
    assert signalled is True
    assert not pid_alive(child)
    assert ticks >= 5, f"the event loop ran only {ticks} times during a sweep of at least 0.5 s"
    assert await spawn.sweep_group(leader.pid) is False  # nothing left: nothing signalled


async def test_an_empty_group_is_not_signalled() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait(timeout=30)
    assert await spawn.sweep_group(proc.pid) is False
