"""Shared fixtures, and the session-wide guarantee that the suite leaves no process behind."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.fixtures import descendants_of

_SHARED_SCOPES = ("module", "package", "session")


def _xdist_group(item: pytest.Item) -> str | None:
    """The worker group of a test under ``pytest -n N --dist loadgroup`` (``make test``): tests that
    share a module-, package- or session-scoped fixture of their own (a live daemon per module, the
    private Docker engine, an npm install) run on one worker, so that fixture starts once; the rest
    are spread one by one. The conftest's own session fixtures run on every worker (per process)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    groups = set()
    for name in info.names_closure:
        for fixturedef in info.name2fixturedefs.get(name, ()):
            if fixturedef.scope not in _SHARED_SCOPES or fixturedef.baseid in ("", "tests"):
                continue  # plugins' and this conftest's fixtures: per worker by design
            if fixturedef.scope == "module" and fixturedef.baseid.endswith(".py"):
                groups.add(fixturedef.baseid)
            else:
                groups.add(f"{fixturedef.scope}:{name}")
    return "+".join(sorted(groups)) if groups else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests for xdist's ``loadgroup`` (before xdist reads the marks); no-op without xdist."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        group = _xdist_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


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
