"""What the server's side of the proxy does to a job's calls: a rate limit is a pause, not an error,
and an OAuth server gets the daemon's current access token (the job never holds it).

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

from tests.live_daemon import (
    PY,
    api,
    daemon_process,
    free_port,
    http_server,
    server_status,
    supervisor_table,
    wait_for,
)
from tests.oidc_fixture import SECRET, TTL, AuthServer, auth_server
from tests.servers.fixtures import start_http_server
from tests.servers.http_proxy import Proxy
from tests.test_proxy import PROXIED, text

__all__ = ["auth_server"]  # the module's own oidc-provider (pytest fixture)

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


def test_the_proxy_sends_the_owners_token_and_renews_it_once_on_a_401(auth_server: AuthServer, short_tmp: Path) -> None:
    """The job holds only the proxy's token; the daemon adds the OAuth access token. When the
    server revokes the token the daemon holds (401), the proxy asks the owner for a new one once
    and the job's call goes through; the job never sees either token."""
    seen, revoked = auth_server.seen, auth_server.revoked
    port = free_port()
    sock = short_tmp / "ctl.sock"
    try:
        secret = short_tmp / "jira.secret"
        secret.write_text(SECRET)
        secret.chmod(0o600)
        auth = (f'auth = {{ type = "oauth", grant = "client_credentials", client_id = "mcp-supervisor", '
                f'client_secret = "${{file:{secret}}}", scopes = ["mcp"], issuer = "{auth_server.issuer}" }}')
        config = short_tmp / "mcp-supervisor.toml"
        config.write_text(supervisor_table(short_tmp) + f'\n[proxy]\nlisten = "127.0.0.1:{port}"\n'
                          + http_server("jira", auth_server.resource_port, auth, interval="5s", timeout="2s"))
        with daemon_process(config):
            wait_for(lambda: server_status(sock, "jira")["state"] == "healthy", 40, "jira healthy with a token",
                     ignore=(OSError, KeyError, StopIteration, AssertionError))
            token = (short_tmp / "state" / "proxy.token").read_text().strip()

            async def whoami() -> tuple[bool, str]:
                http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
                url = f"http://127.0.0.1:{port}/servers/jira/mcp"
                async with http, Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
                    result = await client.call_tool("whoami", {})
                    return result.is_error, text(result)

            assert asyncio.run(whoami()) == (False, "an OAuth client")
            renewals = server_status(sock, "jira")["auth"]["renewals"]
            wait_for(lambda: server_status(sock, "jira")["auth"]["renewals"] > renewals, 3 * TTL, "a renewal")
            wait_for(lambda: len(seen.read_text().split()) > renewals + 1, 10, "the renewed token in use")
            held = seen.read_text().split()[-1]
            revoked.write_text(held)  # the server revokes the token the daemon holds (next renewal ~8 s away)
            started = time.monotonic()
            assert asyncio.run(whoami()) == (False, "an OAuth client")
            took = time.monotonic() - started
            tokens = seen.read_text().split()
            log = (short_tmp / "daemon.log").read_text()
    finally:
        revoked.unlink(missing_ok=True)
    assert tokens[-1] != held and tokens.index(held) == len(tokens) - 2, "one new token, obtained on the 401"
    assert not any(t in log for t in tokens)
    print(f"call across the revoked token took {took:.2f} s (one renewal on the 401)")


async def test_the_hot_path_http_client_follows_a_redirect_streams_chunks_and_survives_a_closed_idle_connection(
        ) -> None:
    """``proxy/http1.py`` against aiohttp's server: a 307 to ``/mcp/`` (a server mounted there), a
    chunked answer read as it comes, and a kept-alive connection the server closed while idle (the
    request is sent again on a new one, never lost)."""
    from aiohttp import web

    from mcp_supervisor.proxy.http1 import ConnectError, Pool

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/mcp/")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for part in (b"data: one\n\n", b"data: " + await request.read() + b"\n\n"):
            await response.write(part)
        return response

    app = web.Application()
    app.router.add_post("/mcp", redirect)
    app.router.add_post("/mcp/", stream)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    pool = Pool()
    try:
        for _ in range(2):
            async with pool.post(f"http://127.0.0.1:{port}/mcp", b"two", {"Accept": "text/event-stream"}) as response:
                assert response.status == 200 and response.headers["content-type"] == "text/event-stream"
                assert b"".join([c async for c in response.chunks()]) == b"data: one\n\ndata: two\n\n"
            await asyncio.sleep(0.5)  # past the server's keep-alive: it closes the idle connection
        with pytest.raises(ConnectError):
            async with pool.post(f"http://127.0.0.1:{free_port()}/mcp", b"", {}):
                pass
    finally:
        pool.close()
        await runner.cleanup()
