"""The stdio probe's process-group sweep: psutil in a worker thread, and a vanished SDK hook is logged."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys

import mcp.client.stdio as sdk_stdio
import pytest

from mcp_supervisor.logging import setup_logging
from mcp_supervisor.probes import spawn
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


def test_a_vanished_sdk_hook_is_logged_not_silently_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(sdk_stdio, spawn._HOOK)
    monkeypatch.setattr(spawn, "_installed", False)
    stream = io.StringIO()
    setup_logging("info", "json", (), stream=stream)
    try:
        spawn.install()
        spawn.install()  # once is enough
    finally:
        setup_logging("info", "json", (), stream=sys.stderr)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(records) == 1 and records[0]["level"] == "warning"
    assert spawn._HOOK in records[0]["event"] and "not swept" in records[0]["event"]
    assert not hasattr(sdk_stdio, spawn._HOOK)
