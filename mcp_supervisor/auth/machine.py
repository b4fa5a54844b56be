"""The machine grants: the SDK's ``client_credentials`` and ``private_key_jwt`` providers.

Why the SDK's providers driven as an httpx Auth flow: they carry the whole protocol (the 401
challenge, RFC 9728 and RFC 8414 discovery, issuer checks, the RFC 8707 ``resource`` parameter,
client authentication by secret or by a signed RFC 7523 assertion, the token response's
validation) but only run inside a request. So obtaining a token is one request to the MCP server
with the provider as ``auth`` and no token held: the server's 401 starts the flow, the provider
stores the new token in the encrypted storage, and the retried request proves the server takes it.
"""

from __future__ import annotations

import warnings
from typing import Any

import httpx2
from mcp.client.auth import OAuthClientProvider, OAuthFlowError
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)
from mcp.shared.auth import OAuthToken

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


def machine_provider(server: ServerConfig, storage: EncryptedTokenStorage) -> OAuthClientProvider:
    auth = server.auth
    assert auth is not None and auth.client_id is not None
    provider: _Secret | _Signed
    with warnings.catch_warnings():  # no issuer: the discovered one (documented in configuration.md)
        warnings.simplefilter("ignore")
        if auth.grant == "private_key_jwt":
            assert auth.private_key is not None
            signer = SignedJWTParameters(issuer=auth.client_id, subject=auth.client_id, signing_key=auth.private_key,
                                         signing_algorithm=auth.signing_algorithm)
            provider = _Signed(server.url or "", storage, auth.client_id, signer.create_assertion_provider(),
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
