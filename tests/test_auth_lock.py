"""Single flight across processes: several processes renewing one rotating grant at once never
send the same refresh token twice.

Four forked processes (each its own ``TokenOwner``, as the daemon and CLIs are) force five
renewals each against a token endpoint that rotates the refresh token and counts any reuse (a
real server would revoke the grant). Each renewal takes the lock file, re-reads the store and sends
the refresh token it found there: 20 rotations, 0 reuses, and the store holds the last one.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp.shared.auth import OAuthToken

from mcp_supervisor.auth.discovery import discover, http_client
from mcp_supervisor.auth.login import refresh_once
from mcp_supervisor.auth.store import EncryptedTokenStorage, Record, token_key
from mcp_supervisor.config import ServerConfig
from tests.test_auth_bad_input import ACCESS, REFRESH, Liar, serving


@pytest.fixture
def liar_thread() -> Iterator[Liar]:
    """The token endpoint on its own event loop in a thread (the test itself forks)."""
    loop = asyncio.new_event_loop()
    ready: list[Liar] = []
    stop = asyncio.Event()

    async def run() -> None:
        async with serving() as server:
            ready.append(server)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),))
    thread.start()
    deadline = time.monotonic() + 10
    while not ready and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def _renew_five(server: ServerConfig, state_dir: Path, key: bytes) -> None:
    async def five() -> None:
        for _ in range(5):
            await refresh_once(server, EncryptedTokenStorage(state_dir, "notes", key))

    asyncio.run(five())


def test_processes_renewing_at_once_never_reuse_a_refresh_token(liar_thread: Liar, tmp_path: Path) -> None:
    server = ServerConfig(name="notes", transport="http", url=f"{liar_thread.base}/mcp",
                          auth={"type": "oauth", "grant": "device_code", "client_id": "mcp-device"})
    key = token_key(tmp_path, None)

    async def found() -> tuple[dict[str, object], dict[str, object] | None]:
        async with http_client(5.0) as client:
            discovered = await discover(client, f"{liar_thread.base}/mcp")
        return discovered.oauth, discovered.resource

    oauth, resource = asyncio.run(found())
    storage = EncryptedTokenStorage(tmp_path, "notes", key)
    storage.write(Record(token=OAuthToken(access_token=ACCESS, token_type="Bearer", expires_in=60,
                                          refresh_token=REFRESH), obtained_at=time.time(), oauth_metadata=oauth,
                         resource_metadata=resource))
    fork = multiprocessing.get_context("fork")
    workers = [fork.Process(target=_renew_five, args=(server, tmp_path, key)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert liar_thread.reused == 0 and liar_thread.token_requests == 20
    stored = storage.read()
    assert stored is not None and stored.token is not None and stored.token.refresh_token == liar_thread.current
