"""Shared fixtures, and the session-wide guarantee that the suite leaves no process behind."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.fixtures import descendants_of


def leftover_children(timeout: float = 5.0) -> dict[int, str]:
    """Wait (with a deadline) for children that are on their way out; return what is still alive."""
    deadline = time.monotonic() + timeout
    while True:
        alive = descendants_of(os.getpid())
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


@pytest.fixture(scope="session", autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    before = set(descendants_of(os.getpid()))
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
