"""One refresh-token exchange, and what a failed token request means for a person.

Why the daemon sends the refresh request itself rather than letting the SDK's flow do it inline:
the flow refreshes only inside a request that found the token expired (too late: the job's call
would wait for it), treats every refusal alike (it forgets the tokens and starts a browser login,
which a daemon cannot do), and loses the error code. Here the request is still the SDK's
(``OAuthClientProvider._refresh_token``: client authentication, the RFC 8707 ``resource``), sent
with a deadline; the answer is parsed into the token and the refusal into a ``GrantProblem``:
``invalid_grant`` is a person's (``login``), an HTML page, a 5xx or a hang are transient.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import httpx2
from mcp.client.auth import OAuthClientProvider, OAuthFlowError
from mcp.shared.auth import (
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    OAuthToken,
    ProtectedResourceMetadata,
)
from mcp_types import LATEST_PROTOCOL_VERSION
from pydantic import ValidationError

from mcp_supervisor.auth.discovery import DiscoveryError
from mcp_supervisor.auth.lock import LockError
from mcp_supervisor.auth.store import EncryptedTokenStorage, Record
from mcp_supervisor.config import ServerConfig

FATAL_ERRORS = ("invalid_client", "invalid_grant", "unauthorized_client")
_ERROR_CODE = re.compile(r'"error"\s*:\s*"([a-z_]+)"')


class GrantProblem(Exception):
    """A token request failed: ``str()`` is the sentence for ``status`` (never a token)."""

    def __init__(self, sentence: str, *, fatal: bool = False, code: str | None = None) -> None:
        super().__init__(sentence)
        self.fatal = fatal
        self.code = code


def login_command(server: ServerConfig) -> str:
    return f"supervisorctl-mcp login {server.name}"


def refusal(server: ServerConfig, code: str) -> GrantProblem:
    """The sentence for a refusal only a person can fix (``code`` in ``FATAL_ERRORS``)."""
    auth = server.auth
    assert auth is not None
    if auth.machine:
        return GrantProblem(
            f"the authorization server refused OAuth client '{auth.client_id}' ({code}): check auth.client_id and "
            "the secret or key auth points to, or that the client is still enabled there, then run: "
            "supervisorctl-mcp reload", fatal=True, code=code)
    if code == "invalid_grant":
        return GrantProblem(
            f"the authorization server no longer accepts the OAuth grant of {server.name} (invalid_grant: revoked, "
            f"expired or its refresh token reused); a person must sign in again: run: {login_command(server)}",
            fatal=True, code=code)
    return GrantProblem(
        f"the authorization server refused the OAuth client of {server.name} ({code}); check auth.client_id, or "
        f"unset it to register a new client, then run: {login_command(server)}", fatal=True, code=code)


def problem_text(server: ServerConfig, exc: BaseException) -> tuple[str, bool]:
    """A secret-free sentence for a failed token request, and whether only a person can fix it."""
    if isinstance(exc, GrantProblem):
        return str(exc), exc.fatal
    if isinstance(exc, (LockError, DiscoveryError)):
        return f"{exc}; retrying with backoff", False
    text = str(exc)
    match = _ERROR_CODE.search(text)
    code = match.group(1) if match else None
    if code in FATAL_ERRORS:
        problem = refusal(server, code)
        return str(problem), True
    if isinstance(exc, OAuthFlowError):
        first = text.split(":", 1)[0][:160]
        return f"OAuth token request failed ({first}); retrying with backoff", False
    return f"OAuth token request failed ({type(exc).__name__}); retrying with backoff", False


def configured_client(server: ServerConfig) -> OAuthClientInformationFull | None:
    auth = server.auth
    if auth is None or auth.client_id is None:
        return None
    method = "client_secret_basic" if auth.client_secret else "none"
    return OAuthClientInformationFull(redirect_uris=None, client_id=auth.client_id, client_secret=auth.client_secret,
                                      token_endpoint_auth_method=method, scope=auth.scope)


@dataclass(frozen=True)
class Refreshed:
    token: OAuthToken
    refresh_expires_in: float | None


async def _request(server: ServerConfig, record: Record, storage: EncryptedTokenStorage) -> httpx2.Request:
    auth = server.auth
    assert auth is not None and record.token is not None
    provider = OAuthClientProvider(server.url or "", OAuthClientMetadata(redirect_uris=None, scope=auth.scope),
                                   storage)
    context = provider.context
    context.current_tokens = record.token
    context.client_info = record.client_info or configured_client(server)
    context.protocol_version = LATEST_PROTOCOL_VERSION  # always send the RFC 8707 resource
    if record.oauth_metadata:
        context.oauth_metadata = OAuthMetadata.model_validate(record.oauth_metadata)
    if record.resource_metadata:
        context.protected_resource_metadata = ProtectedResourceMetadata.model_validate(record.resource_metadata)
    if context.client_info is None:
        raise GrantProblem(f"no OAuth client is known for {server.name}: run: {login_command(server)}", fatal=True)
    if context.oauth_metadata is None and auth.token_url is None:
        raise GrantProblem(f"the token endpoint of {server.name} is unknown (no metadata stored): run: "
                           f"{login_command(server)}, or set auth.token_url", fatal=True)
    request = await provider._refresh_token()  # the SDK request, sent on our schedule
    if auth.token_url:
        request = httpx2.Request("POST", auth.token_url, headers=request.headers, content=request.content)
    return request


async def refresh(client: httpx2.AsyncClient, server: ServerConfig, record: Record,
                  storage: EncryptedTokenStorage) -> Refreshed:
    """Send the refresh token once; the new tokens (the old refresh token carried over if not rotated)."""
    request = await _request(server, record, storage)
    where = request.url.copy_with(query=None)
    try:
        response = await client.send(request)
    except httpx2.TimeoutException:
        raise GrantProblem(f"the token endpoint {where} did not answer in time; retrying with backoff") from None
    except httpx2.HTTPError as exc:
        raise GrantProblem(f"the token endpoint {where} cannot be reached ({type(exc).__name__}); retrying with "
                           "backoff") from None
    try:
        body = json.loads(response.content)
    except ValueError:
        kind = response.headers.get("content-type", "?").split(";")[0]
        raise GrantProblem(f"the token endpoint {where} answered HTTP {response.status_code} with {kind}, not JSON "
                           "(a proxy or login page in the way?); retrying with backoff") from None
    if response.status_code != 200 or not isinstance(body, dict) or "error" in body:
        code = body.get("error") if isinstance(body, dict) else None
        if code in FATAL_ERRORS:
            raise refusal(server, str(code))
        raise GrantProblem(f"the token endpoint {where} refused the refresh (HTTP {response.status_code}"
                           f"{', ' + str(code)[:40] if code else ''}); retrying with backoff")
    try:
        token = OAuthToken.model_validate(body)
    except ValidationError:
        raise GrantProblem(f"the token endpoint {where} answered without a usable token; retrying with backoff") from None
    prior = record.token
    assert prior is not None
    if token.refresh_token is None:
        token.refresh_token = prior.refresh_token
    if token.scope is None:
        token.scope = prior.scope
    ends = body.get("refresh_expires_in") or body.get("refresh_token_expires_in")
    return Refreshed(token, float(ends) if isinstance(ends, (int, float)) and ends > 0 else None)
