"""``login``: the one step a person does for a person grant, and a refresh on demand.

Why here and not in the CLI: it is the token owner's protocol, in the owner's store and under the
owner's lock. The device grant (RFC 8628, ``device.py``) where the authorization server offers it
(a headless host: the URL and the code are printed); else authorization code + PKCE through the
SDK's ``OAuthClientProvider`` with a loopback redirect (``http://127.0.0.1:PORT/callback``; the URL
is printed; ``docs/operations.md`` shows the ssh port forward for a remote host). Without a
configured ``client_id`` a client is registered (RFC 7591, the SDK's request) and kept in the
store. The record (tokens, client, the authorization server's metadata, the grant's start) is
written under the server's lock, as the daemon's user: the daemon picks it up within a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx2
from aiohttp import web
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.oauth2 import check_registration_usable
from mcp.client.auth.utils import create_client_registration_request, handle_registration_response
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.shared.auth_utils import resource_url_from_server_url

from mcp_supervisor.auth.device import device_login
from mcp_supervisor.auth.discovery import Discovered, discover, http_client
from mcp_supervisor.auth.exchange import GrantProblem, configured_client
from mcp_supervisor.auth.lock import refresh_lock
from mcp_supervisor.auth.owner import TokenOwner
from mcp_supervisor.auth.store import EncryptedTokenStorage, Record
from mcp_supervisor.config import ServerConfig

DEVICE = "urn:ietf:params:oauth:grant-type:device_code"
Say = Callable[[str], None]


def _redirect(server: ServerConfig) -> str:
    assert server.auth is not None
    return f"http://127.0.0.1:{server.auth.redirect_port}/callback"


def _usable(client: OAuthClientInformationFull | None, grant: str, redirect: str) -> bool:
    if client is None:
        return False
    if grant == DEVICE:
        return DEVICE in (client.grant_types or [])
    return redirect in [str(uri) for uri in client.redirect_uris or []]


async def _client(server: ServerConfig, found: Discovered, stored: Record | None, grant: str,
                  say: Say) -> OAuthClientInformationFull:
    """The configured client, the one registered earlier, or a new registration (RFC 7591)."""
    fixed = configured_client(server)
    if fixed is not None:
        return fixed
    redirect = _redirect(server)
    previous = stored.client_info if stored else None
    if _usable(previous, grant, redirect) and previous is not None and previous.issuer == str(found.metadata.issuer):
        return previous
    assert server.auth is not None
    metadata = OAuthClientMetadata(  # no scope: the client may ask for what the server challenges
        client_name="mcp-supervisor", token_endpoint_auth_method="none",
        redirect_uris=None if grant == DEVICE else [redirect],
        grant_types=[grant, "refresh_token"], response_types=[] if grant == DEVICE else ["code"])
    request = create_client_registration_request(found.metadata, metadata, resource_url_from_server_url(server.url or ""))
    async with http_client(15.0) as http:
        response = await http.send(request)
    info = await handle_registration_response(response)
    check_registration_usable(info)
    info.issuer = str(found.metadata.issuer)
    say(f"registered OAuth client {info.client_id} at {found.metadata.issuer}")
    return info


def _with_offline(scope: str | None, found: Discovered) -> str | None:
    """Ask for ``offline_access`` too where the server has it (as the SDK's flow does, SEP-2207):
    many servers issue a refresh token only then."""
    supported = found.metadata.scopes_supported or []
    if scope is None or "offline_access" not in supported or "offline_access" in scope.split():
        return scope
    return f"{scope} offline_access"


class _Capture:
    """The SDK provider's storage during a login: it starts from nothing (a new grant) and what it
    stores is kept here until the whole record is written under the lock."""

    def __init__(self, client: OAuthClientInformationFull) -> None:
        self.client = client
        self.token: OAuthToken | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.token = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def _code_login(server: ServerConfig, client: OAuthClientInformationFull, say: Say, wait: float) -> OAuthToken:
    assert server.auth is not None
    got: asyncio.Future[AuthorizationCodeResult] = asyncio.get_running_loop().create_future()

    async def callback(request: web.Request) -> web.Response:
        query = request.query
        if "error" in query and not got.done():
            why = f"{query['error']}: {query.get('error_description', '')}"[:200]
            got.set_exception(GrantProblem(f"the authorization server refused the sign-in ({why})"))
            return web.Response(text=f"Sign-in refused ({why}).\n", status=400)
        if not got.done():
            got.set_result(AuthorizationCodeResult(code=query.get("code", ""), state=query.get("state"),
                                                   iss=query.get("iss")))
        return web.Response(text="Signed in: mcp-supervisor has the grant. You can close this window.\n")

    async def show(url: str) -> None:
        say(f"To sign in, open this URL in a browser:\n{url}")

    async def answer() -> AuthorizationCodeResult:
        return await asyncio.wait_for(got, wait)

    app = web.Application()
    app.router.add_get("/callback", callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", server.auth.redirect_port).start()
    except OSError as exc:
        await runner.cleanup()
        raise GrantProblem(f"cannot listen on 127.0.0.1:{server.auth.redirect_port} for the redirect ({exc.strerror});"
                           " set auth.redirect_port to a free port") from None
    capture = _Capture(client)
    metadata = OAuthClientMetadata(redirect_uris=[_redirect(server)],
                                   scope=server.auth.scope, token_endpoint_auth_method="none")
    provider = OAuthClientProvider(server.url or "", metadata, capture, show, answer)
    try:
        async with httpx2.AsyncClient(auth=provider, timeout=wait) as http:
            await http.post(server.url or "", content=b'{"jsonrpc":"2.0","id":"login","method":"ping"}',
                            headers={"Accept": "application/json, text/event-stream",
                                     "Content-Type": "application/json"})
    finally:
        await runner.cleanup()
    if capture.token is None:
        raise GrantProblem("the server did not ask for a token (no 401 challenge): is auth needed here?")
    return capture.token


async def login(server: ServerConfig, storage: EncryptedTokenStorage, say: Say, *, wait: float = 900.0,
                timeout: float = 15.0) -> Record:
    """Sign in once; the record is written (under the lock) and returned."""
    auth = server.auth
    assert auth is not None and server.url
    async with http_client(timeout) as http:
        found = await discover(http, server.url, auth.issuer)
    device = auth.grant == "device_code" and found.device_endpoint is not None
    if auth.grant == "device_code" and not device:
        say("the authorization server offers no device grant; using authorization code + PKCE instead")
    stored = storage.read()
    client = await _client(server, found, stored, DEVICE if device else "authorization_code", say)
    started = time.time()
    refresh_ends: float | None = None
    if device:
        resource = str(found.resource_metadata.resource) if found.resource_metadata else (
            resource_url_from_server_url(server.url))
        raw: dict[str, Any] = await device_login(client, found.device_endpoint or "", str(found.metadata.token_endpoint),
                                                 _with_offline(auth.scope, found), resource, say, timeout, wait)
        token = OAuthToken.model_validate(raw)
        ends = raw.get("refresh_expires_in") or raw.get("refresh_token_expires_in")
        refresh_ends = started + float(ends) if isinstance(ends, (int, float)) and ends > 0 else None
    else:
        token = await _code_login(server, client, say, wait)
    record = Record(token=token, obtained_at=started, granted_at=started, refresh_expires_at=refresh_ends,
                    client_info=client, oauth_metadata=found.oauth, resource_metadata=found.resource)
    async with refresh_lock(storage.lock_path):
        storage.write(record)
    return record


async def refresh_once(server: ServerConfig, storage: EncryptedTokenStorage) -> TokenOwner:
    """Renew now from this process, under the same lock as the daemon (``login --refresh``)."""
    owner = TokenOwner(server, storage)
    await owner.refresh(force=True)
    return owner
