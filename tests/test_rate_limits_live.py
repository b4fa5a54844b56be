"""A rate-limiting gateway in front of a real SDK server: an answer, not an outage.

The official SDK server keeps running; the recording proxy (tests/servers/http_proxy.py) answers
429 with ``Retry-After`` for a while, as a gateway does when a key's quota is spent. What a user
notices: one ``rate_limited`` state (ready, with the server's words), probes spaced by the
``Retry-After`` instead of every interval, no restart, no alert, no downtime in the record.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mcp_supervisor.events import Event
from mcp_supervisor.health.model import State
from tests.live_daemon import http_server, make_config, state, until
from tests.servers.fixtures import ServerProcess, start_http_server
from tests.servers.http_proxy import Proxy
from tests.test_history_daemon import supervised_with_record

pytestmark = pytest.mark.timeout(90)

RETRY_AFTER = 2.0
LIMITED_FOR = 7.0


@pytest.fixture(scope="module")
def sdk_server() -> Iterator[ServerProcess]:
    server = start_http_server("http")
    yield server
    server.stop()


async def test_429_with_retry_after_is_one_rate_limited_state_no_restart_no_downtime(
    tmp_path: Path, sdk_server: ServerProcess
) -> None:
    proxy = await Proxy(sdk_server.url, retry_after=f"{RETRY_AFTER:g}").start()
    port = urlsplit(proxy.url).port
    assert port is not None
    config = make_config(tmp_path, http_server("gw", port, interval="250ms", timeout="2s", failure_threshold=2))
    try:
        async with supervised_with_record(config) as (sup, history):
            await until(sup, lambda: state(sup, "gw") is State.HEALTHY, 20, "gw healthy")
            since = time.time()
            seen: list[Event] = []
            proxy.mode = "429"
            await until(sup, lambda: state(sup, "gw") is State.RATE_LIMITED, 10, "gw rate limited", seen)
            status = sup.status()
            ready = sup.readiness(["gw"])
            with sup.bus.subscription() as queue:
                end = asyncio.get_running_loop().time() + LIMITED_FOR
                while (left := end - asyncio.get_running_loop().time()) > 0:
                    try:
                        async with asyncio.timeout(left):
                            seen.append(await queue.get())
                    except TimeoutError:
                        break
            proxy.mode = "pass"
            await until(sup, lambda: state(sup, "gw") is State.HEALTHY, 20, "gw healthy again", seen)
            report = await history.report(since - 1, time.time() + 1, "custom")
    finally:
        await proxy.stop()

    moves = [(e.data.get("old"), e.data.get("new")) for e in seen if e.kind == "state"]
    assert moves == [("healthy", "rate_limited"), ("rate_limited", "healthy")], moves
    assert not [e for e in seen if e.kind in ("notify", "action", "action_started", "restart")]
    limited = [e.at for e in seen if e.kind == "probe" and e.data.get("failure_class") == "rate_limited"]
    assert len(limited) >= 3, limited
    gaps = [b - a for a, b in itertools.pairwise(limited)]
    assert min(gaps) >= RETRY_AFTER - 0.3, gaps  # 250 ms probes, held back by Retry-After

    entry = next(s for s in status["servers"] if s["name"] == "gw")
    assert entry["state"] == "rate_limited"
    assert "rate limited until" in entry["reason"] and "slow down: 60 requests a minute" in entry["reason"]
    assert ready["ready"] is True and ready["rate_limited"][0]["name"] == "gw"
    assert report["servers"]["gw"]["down_s"] == 0
    print(f"rate limited for {LIMITED_FOR:g}s: {len(limited)} probes, gaps {[round(g, 2) for g in gaps]}")
