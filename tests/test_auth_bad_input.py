"""OAuth bad input: discovery documents that lie or loop, token endpoints that hang or answer HTML,
a lock file planted as a symlink. Each is a sentence naming the place and the fix, and nothing
stored is lost (the token file is the same bytes after a failed refresh or login).

The other side is a real HTTP server (aiohttp on loopback) that misbehaves in one way per route;
the discovery and the refresh are the daemon's own code paths (``auth.discovery``,
``auth.owner``), and ``login`` runs as the CLI binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from mcp.shared.auth import OAuthToken

from mcp_supervisor.auth.discovery import DiscoveryError, discover, http_client
from mcp_supervisor.auth.lock import LockError, refresh_lock
from mcp_supervisor.auth.owner import TokenOwner
from mcp_supervisor.auth.store import EncryptedTokenStorage, Record, token_key
from mcp_supervisor.config import ServerConfig
from mcp_supervisor.redact import REDACTOR
from tests.live_daemon import BIN

ACCESS = "eyJhbGciOiJSUzI1NiJ9.access-1c4e.sig-77aa"
REFRESH = "refresh-token-5d2b9f"


class Liar:
    """An MCP server and its 'authorization server' on one port; ``mode`` picks the lie."""

    def __init__(self) -> None:
        self.mode = "honest"
        self.port = 0
        self.token_requests = 0
        self.current = REFRESH
        """The one refresh token that may be used next (rotation); any other is a reuse."""
        self.reused = 0
        self.release = asyncio.Event()
        """Set at teardown: a hanging answer ends then (the test's client gave up long before)."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def mcp(self, request: web.Request) -> web.Response:
        return web.Response(status=401, headers={
            "WWW-Authenticate": f'Bearer resource_metadata="{self.base}/prm"'})

    async def prm(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "loop":
            raise web.HTTPFound(f"{self.base}/prm-again")
        resource = "http://elsewhere.example/mcp" if self.mode == "other-resource" else f"{self.base}/mcp"
        return web.json_response({"resource": resource, "authorization_servers": [self.base]})

    async def prm_again(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"{self.base}/prm")

    async def metadata(self, request: web.Request) -> web.Response:
        if self.mode == "html-metadata":
            return web.Response(text="<html>Sign in to continue</html>", content_type="text/html")
        issuer = "http://impostor.example" if self.mode == "other-issuer" else self.base
        return web.json_response({"issuer": issuer, "authorization_endpoint": f"{self.base}/authorize",
                                  "token_endpoint": f"{self.base}/token", "response_types_supported": ["code"],
                                  "device_authorization_endpoint": f"{self.base}/device"})

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        if self.mode == "hang":
            await self.release.wait()
        if self.mode == "html-token":
            return web.Response(status=502, text=f"<html>Bad gateway {REFRESH}</html>", content_type="text/html")
        if self.mode == "invalid_grant":
            return web.json_response({"error": "invalid_grant", "error_description": "grant revoked"}, status=400)
        sent = (await request.post()).get("refresh_token")
        if sent is not None and sent != self.current:
            self.reused += 1  # a real server would now revoke the whole grant
            return web.json_response({"error": "invalid_grant", "error_description": "reused"}, status=400)
        self.current = f"{REFRESH}-{self.token_requests}"
        return web.json_response({"access_token": f"{ACCESS}-{self.token_requests}", "token_type": "Bearer",
                                  "expires_in": 60, "refresh_token": self.current})


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Liar]:
    server = Liar()
    app = web.Application()
    app.router.add_post("/mcp", server.mcp)
    app.router.add_get("/prm", server.prm)
    app.router.add_get("/prm-again", server.prm_again)
    app.router.add_get("/.well-known/oauth-authorization-server", server.metadata)
    app.router.add_get("/.well-known/openid-configuration", server.metadata)
    app.router.add_post("/token", server.token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = int(runner.addresses[0][1])
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


@pytest.fixture
async def liar() -> AsyncIterator[Liar]:
    async with serving() as server:
        yield server


def _server(liar: Liar, **auth: Any) -> ServerConfig:
    return ServerConfig(name="notes", transport="http", url=f"{liar.base}/mcp",
                        auth={"type": "oauth", "grant": "device_code", "client_id": "mcp-device", **auth})


async def test_discovery_that_lies_loops_or_answers_html_is_named(liar: Liar) -> None:
    async with http_client(2.0) as client:
        found = await discover(client, f"{liar.base}/mcp")
        assert found.device_endpoint == f"{liar.base}/device"
        expected = {"other-resource": "describes another resource", "loop": "redirects in a loop",
                    "other-issuer": "names another issuer", "html-metadata": "answered text/html"}
        for mode, words in expected.items():
            liar.mode = mode
            with pytest.raises(DiscoveryError) as caught:
                await discover(client, f"{liar.base}/mcp")
            assert words in str(caught.value) and liar.base in str(caught.value), (mode, str(caught.value))


async def test_a_failed_refresh_keeps_the_token_and_says_why(liar: Liar, tmp_path: Path) -> None:
    server = _server(liar)
    storage = EncryptedTokenStorage(tmp_path, "notes", token_key(tmp_path, None))
    async with http_client(2.0) as client:
        found = await discover(client, f"{liar.base}/mcp")
    storage.write(Record(token=OAuthToken(access_token=ACCESS, token_type="Bearer", expires_in=60,
                                          refresh_token=REFRESH),
                         obtained_at=time.time() - 55, granted_at=time.time() - 55, oauth_metadata=found.oauth,
                         resource_metadata=found.resource))
    before = storage.path.read_bytes()
    owner = TokenOwner(server, storage, timeout=0.5)
    owner.adopt(storage.read())
    for mode, words in (("hang", "did not answer in time"), ("html-token", "answered HTTP 502 with text/html")):
        liar.mode = mode
        assert not await owner.renew_now()
        assert words in (owner.facts.problem or "") and "retrying" in (owner.facts.problem or "")
        assert REFRESH not in (owner.facts.problem or "")
        assert owner.bearer == ACCESS and not owner.fatal  # the current token stays in use
        assert storage.path.read_bytes() == before  # nothing lost
    liar.mode = "invalid_grant"
    assert not await owner.renew_now()
    assert owner.fatal and owner.bearer is None
    assert "invalid_grant" in (owner.facts.problem or "") and "supervisorctl-mcp login notes" in (owner.facts.problem or "")
    assert storage.path.read_bytes() == before  # the record stays for a person to look at; login replaces it

    liar.mode = "honest"  # a login elsewhere wrote a new grant: taken without a restart
    storage.update(token=OAuthToken(access_token=ACCESS + "-login", token_type="Bearer", expires_in=60,
                                    refresh_token=REFRESH + "-login"), obtained_at=time.time())
    assert owner.adopt(storage.read()) and not owner.fatal and owner.bearer == ACCESS + "-login"
    liar.current = REFRESH + "-login"
    assert await owner.renew_now() and owner.bearer == f"{ACCESS}-{liar.token_requests}"
    stored = storage.read()
    assert stored is not None and stored.token is not None and stored.token.refresh_token == liar.current
    # the held tokens are known to the process's redactor: an echo anywhere is masked
    said = REDACTOR.text(f"server said: {owner.bearer} / {liar.current}")
    assert owner.bearer not in said and liar.current not in said
    await owner.aclose()


async def test_login_against_a_lying_server_names_it_and_changes_nothing(liar: Liar, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"""[supervisor]
state_dir = "{tmp_path}/state"
[[servers]]
name = "notes"
transport = "http"
url = "{liar.base}/mcp"
auth = {{ type = "oauth", grant = "device_code", client_id = "mcp-device" }}
""")
    storage = EncryptedTokenStorage(tmp_path / "state", "notes", token_key(tmp_path / "state", None))
    storage.write(Record(token=OAuthToken(access_token=ACCESS, token_type="Bearer", refresh_token=REFRESH),
                         obtained_at=time.time()))
    before = storage.path.read_bytes()
    liar.mode = "other-issuer"
    done = await asyncio.to_thread(subprocess.run, [str(BIN / "supervisorctl-mcp"), "--config", str(config), "login",
                                                    "notes", "--wait", "5"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert "notes" in done.stderr and "names another issuer" in done.stderr and "Traceback" not in done.stderr
    assert storage.path.read_bytes() == before


async def test_a_planted_lock_file_is_refused(tmp_path: Path) -> None:
    storage = EncryptedTokenStorage(tmp_path, "notes", token_key(tmp_path, None))
    target = tmp_path / "elsewhere"
    os.symlink(target, storage.lock_path)
    with pytest.raises(LockError) as caught:
        async with refresh_lock(storage.lock_path):
            pass
    assert "not a link" in str(caught.value) and not target.exists()
    os.unlink(storage.lock_path)
    storage.lock_path.write_text("")
    storage.lock_path.chmod(0o644)
    with pytest.raises(LockError) as caught:
        async with refresh_lock(storage.lock_path):
            pass
    assert f"rm {storage.lock_path}" in str(caught.value)
