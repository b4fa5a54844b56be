"""One server's access token: obtained with the SDK's client-credentials provider, renewed ahead.

Why the SDK's provider driven as an httpx Auth flow: ``ClientCredentialsOAuthProvider`` carries
the whole protocol (the 401 challenge, RFC 9728 and RFC 8414 discovery, issuer checks, the RFC 8707
``resource`` parameter, client authentication, the token response's validation) but only runs
inside a request. So a renewal is one request to the MCP server with the provider as ``auth`` and
no token held: the server's 401 starts the flow, the provider stores the new token in our
encrypted storage, and the retried request proves the server takes it. One renewal is in flight
per server (``refresh`` joins a running one); it starts at 80 % of the token's lifetime, so a
probe (or a job) never waits for it. A refusal of the client itself (``invalid_client``,
``invalid_grant``, ``unauthorized_client``) is a person's problem: the token is dropped, the
probes' 401 then makes the server ``needs_human`` with ``problem`` as the fix, and no retry is made
until the config changes (a reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
import warnings
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp.client.auth import OAuthFlowError
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider

from mcp_supervisor.auth.store import EncryptedTokenStorage
from mcp_supervisor.config import ServerConfig
from mcp_supervisor.logging import get_logger

log = get_logger("mcp_supervisor.auth")

RENEW_AT = 0.8
"""Share of the token's lifetime after which it is renewed."""
DEFAULT_LIFETIME = 3600.0
"""Assumed lifetime of a token whose response has no ``expires_in``."""
MAX_BACKOFF = 60.0
FATAL_ERRORS = ("invalid_client", "invalid_grant", "unauthorized_client")
_PING = b'{"jsonrpc":"2.0","id":"mcp-supervisor-auth","method":"ping"}'
_ERROR_CODE = re.compile(r'"error"\s*:\s*"([a-z_]+)"')


class _Provider(ClientCredentialsOAuthProvider):
    """The SDK provider, with a configured ``token_url`` taking the place of the discovered one."""

    def __init__(self, server: ServerConfig) -> None:
        auth = server.auth
        assert auth is not None
        self._token_url = auth.token_url
        with warnings.catch_warnings():  # no issuer: the discovered one (documented in configuration.md)
            warnings.simplefilter("ignore")
            super().__init__(server.url or "", _NoStorage(), auth.client_id, auth.client_secret,
                             scope=auth.scope, issuer=auth.issuer)

    def _get_token_endpoint(self) -> str:
        return self._token_url or super()._get_token_endpoint()


class _NoStorage:
    """The provider's storage until the owner sets its own (the constructor needs one)."""

    async def get_tokens(self) -> None:
        return None

    async def set_tokens(self, tokens: Any) -> None:
        return None

    async def get_client_info(self) -> None:
        return None

    async def set_client_info(self, client_info: Any) -> None:
        return None


@dataclass
class TokenFacts:
    """What may be shown about a token: never the token."""

    expires_at: float | None = None
    obtained_at: float | None = None
    next_refresh_at: float | None = None
    renewals: int = 0
    failures: int = 0
    problem: str | None = None


def _lifetime(expires_in: int | None) -> float:
    return float(expires_in) if expires_in and expires_in > 0 else DEFAULT_LIFETIME


def problem_text(server: ServerConfig, exc: BaseException) -> tuple[str, bool]:
    """A secret-free sentence for a failed renewal, and whether only a person can fix it."""
    auth = server.auth
    assert auth is not None
    text = str(exc)
    match = _ERROR_CODE.search(text)
    code = match.group(1) if match else None
    if code in FATAL_ERRORS:
        return (f"the authorization server refused OAuth client '{auth.client_id}' ({code}): check "
                "auth.client_id and the secret auth.client_secret points to, or that the client is still "
                "enabled there, then run: supervisorctl-mcp reload", True)
    if isinstance(exc, OAuthFlowError):
        first = text.split(":", 1)[0][:160]
        return f"OAuth token request failed ({first}); retrying with backoff", False
    return f"OAuth token request failed ({type(exc).__name__}); retrying with backoff", False


class TokenOwner:
    """The single holder of one server's access token in the daemon."""

    def __init__(self, server: ServerConfig, storage: EncryptedTokenStorage, timeout: float = 15.0) -> None:
        self.server = server
        self.facts = TokenFacts()
        self._storage = storage
        self._timeout = timeout
        self._provider = _Provider(server)
        self._provider.context.storage = storage
        self._bearer: str | None = None
        self._renew_at = 0.0  # monotonic
        self._inflight: asyncio.Task[None] | None = None
        self.fatal = False
        self.settled = asyncio.Event()
        """Set once a first token is held or a first attempt failed: the first probe waits for it."""

    @property
    def bearer(self) -> str | None:
        """The current access token, for the probes' Authorization header only."""
        return self._bearer

    async def load(self) -> None:
        """A token stored by an earlier run, if still inside its renewal window, is used as is."""
        token = await self._storage.get_tokens()
        obtained = self._storage.obtained_at
        if token is None or obtained is None:
            return
        lifetime = _lifetime(token.expires_in)
        age = time.time() - obtained
        if age < lifetime * RENEW_AT:
            self._take(token.access_token, obtained, lifetime, time.monotonic() - age)

    async def refresh(self) -> None:
        """Renew now; a renewal already running is joined, never doubled (single flight)."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._renew(), name=f"oauth {self.server.name}")
        await asyncio.shield(self._inflight)

    async def run(self) -> None:
        """Renew at 80 % of each lifetime; after a transient failure retry with backoff."""
        await self.load()
        if self._bearer is not None:
            self.settled.set()
        backoff = 1.0
        while not self.fatal:
            delay = self._renew_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self.refresh()
                backoff = 1.0
                self.settled.set()
            except Exception as exc:  # every failure becomes a sentence, never a crash
                self.settled.set()
                problem, fatal = problem_text(self.server, exc)
                self.facts.failures += 1
                self.facts.problem = problem
                log.warning("auth: token renewal failed", server=self.server.name, problem=problem)
                if fatal:
                    self.fatal = True
                    self._bearer = None  # the probes' 401 makes it needs_human with the problem
                    self.facts.next_refresh_at = None
                    return
                self._renew_at = time.monotonic() + backoff * (0.75 + random.random() / 2)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _renew(self) -> None:
        context = self._provider.context
        # the lifetime counts from the request's start: the token cannot be older than that
        started_wall, started_mono = time.time(), time.monotonic()
        self._storage.requested_at = started_wall
        context.clear_tokens()  # no token held: the server's 401 starts the SDK's flow
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        async with httpx2.AsyncClient(auth=self._provider, timeout=self._timeout) as client:
            await client.post(self.server.url or "", content=_PING, headers=headers)
        token = context.current_tokens
        if token is None:
            raise OAuthFlowError("the server did not ask for a token (no 401 challenge): is auth needed here?")
        self._take(token.access_token, started_wall, _lifetime(token.expires_in), started_mono)
        self.facts.renewals += 1
        self.facts.problem = None
        log.info("auth: access token renewed", server=self.server.name,
                 expires_in=token.expires_in, renewals=self.facts.renewals)

    def _take(self, access_token: str, obtained_wall: float, lifetime: float, obtained_mono: float) -> None:
        self._bearer = access_token
        self._renew_at = obtained_mono + lifetime * RENEW_AT
        self.facts.obtained_at = obtained_wall
        self.facts.expires_at = obtained_wall + lifetime
        self.facts.next_refresh_at = obtained_wall + lifetime * RENEW_AT

    async def aclose(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._inflight
