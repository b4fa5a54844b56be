"""What the server's side of the proxy does to a job's calls: a rate limit is a pause, not an error.

A real SDK server (``tests/servers/proxied.py``) sits behind a gateway (``tests/servers/
http_proxy.py``) that answers 429 with ``Retry-After`` for a while, as a gateway does when a key's
quota is spent; the real daemon proxies it. What the job notices: its read-only call is held and
answered once the limit lifts (no error), its non-idempotent call gets at once an error with the
server's words and when the limit lifts, and that call never reached the server.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.live_daemon import PY, api, daemon_process, free_port, http_server, supervisor_table, wait_for
from tests.servers.fixtures import start_http_server
from tests.servers.http_proxy import Proxy
from tests.test_proxy import PROXIED, text

pytestmark = pytest.mark.timeout(120)


async def test_a_rate_limited_server_holds_safe_calls_and_answers_unsafe_ones_with_when_it_lifts(
        short_tmp: Path) -> None:
    counts = short_tmp / "charges.txt"
    backend = start_http_server(argv=[PY, str(PROXIED), "http", "{port}", str(counts)])
    gateway = await Proxy(backend.url, retry_after="1").start()
    port = free_port()
    gateway_port = int(gateway.url.rsplit(":", 1)[1].split("/")[0])
    config = short_tmp / "mcp-supervisor.toml"
    config.write_text(supervisor_table(short_tmp) + f'\n[proxy]\nlisten = "127.0.0.1:{port}"\nhold = "10s"\n'
                      + http_server("gw", gateway_port, interval="300ms", timeout="2s"))
    loop = asyncio.get_running_loop()
    try:
        with daemon_process(config):
            token_file = short_tmp / "state" / "proxy.token"
            await loop.run_in_executor(None, wait_for, token_file.exists, 30, "the proxy's token")
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
                                      timeout=30)
            url = f"http://127.0.0.1:{port}/servers/gw/mcp"
            async with http, Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
                await client.list_tools()  # the proxy learns which tools are read-only
                gateway.mode = "429"
                try:
                    await client.call_tool("charge", {"amount": 5})
                    refused = "no error"
                except MCPError as exc:
                    refused = str(exc)
                lifts = loop.call_later(2.5, setattr, gateway, "mode", "pass")
                started = time.monotonic()
                held = await client.call_tool("lookup", {"query": "q"})
                waited = time.monotonic() - started
                lifts.cancel()
            _status, info = api(short_tmp / "ctl.sock", "/v1/proxy")
    finally:
        await gateway.stop()
        backend.stop()
    assert "'charge'" in refused and "rate limited until" in refused, refused
    assert "slow down: 60 requests a minute" in refused and "not marked safe to repeat" in refused
    assert not counts.exists()  # the refused call never reached the server
    assert not held.is_error and text(held).startswith("found q"), text(held)
    assert waited >= 1.0, waited  # held until the gateway let calls through again
    figures = info["counts"]["servers"]["gw"]
    assert figures["held"] >= 1 and figures["failed"] >= 1, figures
    print(f"read-only call held {waited:.2f} s through the limit; counts {figures}")
