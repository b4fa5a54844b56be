"""The machine grants: the SDK's ``client_credentials`` and ``private_key_jwt`` providers.

Why the SDK's providers driven as an httpx Auth flow: they carry the whole protocol (the 401
challenge, RFC 9728 and RFC 8414 discovery, issuer checks, the RFC 8707 ``resource`` parameter,
client authentication by secret or by a signed RFC 7523 assertion, the token response's
validation) but only run inside a request. So obtaining a token is one request to the MCP server
with the provider as ``auth`` and no token held: the server's 401 starts the flow, the provider
stores the new token in the encrypted storage, and the retried request proves the server takes it.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import jwt
from mcp.client.auth import OAuthClientProvider, OAuthFlowError
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)
from mcp.shared.auth import OAuthToken

from mcp_supervisor.auth.exchange import GrantProblem
from mcp_supervisor.auth.store import EncryptedTokenStorage
from mcp_supervisor.config import ServerConfig

_PING = b'{"jsonrpc":"2.0","id":"mcp-supervisor-auth","method":"ping"}'
_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class _Configured:
    """A configured ``token_url`` takes the place of the discovered one; stored tokens are never
    loaded by the flow (the owner decides when a token is renewed, not the flow)."""

    _token_url: str | None

    def _get_token_endpoint(self) -> str:
        return self._token_url or super()._get_token_endpoint()  # type: ignore[misc]

    async def _initialize(self) -> None:
        self.context.client_info = self._fixed_client_info  # type: ignore[attr-defined]
        self._initialized = True


class _Secret(_Configured, ClientCredentialsOAuthProvider):
    pass


class _Signed(_Configured, PrivateKeyJWTOAuthProvider):
    pass


def read_private_key(server: ServerConfig) -> str:
    """The PEM key of ``auth.private_key_file``: a regular file (not a link) readable by its owner only."""
    auth = server.auth
    assert auth is not None and auth.private_key_file is not None
    path = os.path.expanduser(auth.private_key_file)
    fix = "point auth.private_key_file at the PEM key (a regular file, chmod 600), then run: supervisorctl-mcp reload"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise GrantProblem(f"the private key {path} of {server.name} cannot be opened ({exc.strerror}); {fix}",
                           fatal=True) from None
    with os.fdopen(fd, "r", encoding="ascii", errors="replace") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
            raise GrantProblem(f"the private key {path} of {server.name} is not a regular file of mode 0600/0400 "
                               f"(mode {stat.S_IMODE(info.st_mode):04o}); {fix}", fatal=True)
        return handle.read()


def _file_signer(server: ServerConfig) -> Callable[[str], Awaitable[str]]:
    """Signs each assertion with the key read afresh (a rotated key file is used at once)."""
    auth = server.auth
    assert auth is not None and auth.client_id is not None
    client_id, algorithm = auth.client_id, auth.signing_algorithm

    async def sign(audience: str) -> str:
        signer = SignedJWTParameters(issuer=client_id, subject=client_id, signing_key=read_private_key(server),
                                     signing_algorithm=algorithm)
        try:
            return await signer.create_assertion_provider()(audience)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise GrantProblem(f"the private key of {server.name} cannot sign a {algorithm} assertion "
                               f"({type(exc).__name__}); point auth.private_key_file at a PEM key for "
                               "auth.signing_algorithm, then run: supervisorctl-mcp reload", fatal=True) from None

    return sign


def machine_provider(server: ServerConfig, storage: EncryptedTokenStorage) -> OAuthClientProvider:
    auth = server.auth
    assert auth is not None and auth.client_id is not None
    provider: _Secret | _Signed
    with warnings.catch_warnings():  # no issuer: the discovered one (documented in configuration.md)
        warnings.simplefilter("ignore")
        if auth.grant == "private_key_jwt":
            provider = _Signed(server.url or "", storage, auth.client_id, _file_signer(server),
                               scope=auth.scope, issuer=auth.issuer)
        else:
            assert auth.client_secret is not None
            provider = _Secret(server.url or "", storage, auth.client_id, auth.client_secret, scope=auth.scope,
                               issuer=auth.issuer)
    provider._token_url = auth.token_url
    return provider


async def obtain(provider: OAuthClientProvider, server: ServerConfig, timeout: float) -> OAuthToken:
    """One request with no token held: the 401 runs the SDK's flow, which stores the token."""
    context = provider.context
    context.clear_tokens()
    kwargs: dict[str, Any] = {"auth": provider, "timeout": timeout}
    async with httpx2.AsyncClient(**kwargs) as client:
        await client.post(server.url or "", content=_PING, headers=_HEADERS)
    token = context.current_tokens
    if token is None:
        raise OAuthFlowError("the server did not ask for a token (no 401 challenge): is auth needed here?")
    return token
