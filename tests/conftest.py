"""Shared fixtures, and the session-wide guarantee that the suite leaves no process behind."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest


def _children_of(pid: int) -> dict[int, str]:
    """Live (non-zombie) descendants of ``pid``, read from /proc: {pid: command line}."""
    parents: dict[int, int] = {}
    info: dict[int, tuple[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # the command name may contain spaces or parentheses: split after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        info[int(entry.name)] = (fields[0], cmdline)
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                state, cmdline = info[child]
                if state != "Z":
                    found[child] = cmdline
                frontier.append(child)
    return found


def leftover_children(timeout: float = 5.0) -> dict[int, str]:
    """Wait (with a deadline) for children that are on their way out; return what is still alive."""
    deadline = time.monotonic() + timeout
    while True:
        alive = _children_of(os.getpid())
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


@pytest.fixture(scope="session", autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    before = set(_children_of(os.getpid()))
    yield
    alive = {pid: cmd for pid, cmd in leftover_children().items() if pid not in before}
    assert not alive, f"the test session left processes behind: {alive}"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory for Unix sockets (sun_path is limited to ~107 bytes)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="mcps-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sock_path(short_tmp: Path) -> Path:
    """Where a test's control socket lives (its directory is made by the server)."""
    return short_tmp / "run" / "ctl.sock"


@pytest.fixture
async def api(control: Any, sock_path: Path) -> AsyncIterator[Any]:
    """The real control API server on a real Unix socket, driven by the module's ``control``
    fixture (a ``tests.test_api.DrivenControl``): the one copy for the API, CLI and guardian tests."""
    from mcp_supervisor.api.server import start_api_server

    server = await start_api_server(control, sock_path, heartbeat=0.2)
    try:
        yield server
    finally:
        await server.close()
