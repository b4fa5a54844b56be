"""Where a server's tokens come from: RFC 9728 then RFC 8414 discovery, with the SDK's helpers.

Why not only inside the SDK's provider flow: ``login`` must know, before it starts, whether the
authorization server offers the device grant (``device_authorization_endpoint``, a field the SDK's
``OAuthMetadata`` model drops), and the daemon must refresh after a restart without a 401 to start
from. So the same steps the SDK's flow takes (the URL lists, the response parsing, the issuer
check, the RFC 8707 resource check) are driven here with its own functions, and the raw documents
are kept in the token record. A document that lies (another issuer, another resource), answers
HTML, redirects in a loop or hangs becomes a ``DiscoveryError`` naming the URL and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp.client.auth import OAuthFlowError
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    create_oauth_metadata_request,
    extract_resource_metadata_from_www_auth,
    issuers_match,
    validate_metadata_issuer,
)
from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url
from pydantic import ValidationError

_PING = b'{"jsonrpc":"2.0","id":"mcp-supervisor-auth","method":"ping"}'
_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
MAX_REDIRECTS = 5


class DiscoveryError(Exception):
    """Discovery failed; the text names the URL, what was wrong and what to check."""


@dataclass(frozen=True)
class Discovered:
    oauth: dict[str, Any]
    """The authorization server's metadata as published (``device_authorization_endpoint`` too)."""
    resource: dict[str, Any] | None

    @property
    def metadata(self) -> OAuthMetadata:
        return OAuthMetadata.model_validate(self.oauth)

    @property
    def resource_metadata(self) -> ProtectedResourceMetadata | None:
        return ProtectedResourceMetadata.model_validate(self.resource) if self.resource else None

    @property
    def device_endpoint(self) -> str | None:
        value = self.oauth.get("device_authorization_endpoint")
        return value if isinstance(value, str) and value.startswith(("http://", "https://")) else None


def http_client(timeout: float) -> httpx2.AsyncClient:
    """Redirects followed but bounded (a loop is an error, not a hang); every phase has a deadline."""
    return httpx2.AsyncClient(timeout=timeout, follow_redirects=True, max_redirects=MAX_REDIRECTS)


async def _get_json(client: httpx2.AsyncClient, url: str) -> tuple[int, Any]:
    try:
        response = await client.send(create_oauth_metadata_request(url))
    except httpx2.TooManyRedirects:
        raise DiscoveryError(f"{url} redirects in a loop (more than {MAX_REDIRECTS} redirects)") from None
    except httpx2.TimeoutException:
        raise DiscoveryError(f"{url} did not answer in time") from None
    except httpx2.HTTPError as exc:
        raise DiscoveryError(f"{url} cannot be reached ({type(exc).__name__})") from None
    if response.status_code != 200:
        return response.status_code, None
    try:
        return 200, json.loads(response.content)
    except ValueError:
        kind = response.headers.get("content-type", "?").split(";")[0]
        raise DiscoveryError(f"{url} answered {kind}, not a JSON metadata document") from None


async def discover(client: httpx2.AsyncClient, server_url: str, issuer: str | None = None) -> Discovered:
    """The server's protected-resource metadata and its authorization server's metadata."""
    try:
        challenge = await client.post(server_url, content=_PING, headers=_HEADERS)
    except httpx2.HTTPError as exc:
        raise DiscoveryError(f"the server {server_url} cannot be reached ({type(exc).__name__})") from None
    pointer = extract_resource_metadata_from_www_auth(challenge) if challenge.status_code == 401 else None
    resource: dict[str, Any] | None = None
    prm: ProtectedResourceMetadata | None = None
    for url in build_protected_resource_metadata_discovery_urls(pointer, server_url):
        status, body = await _get_json(client, url)
        if status != 200:
            continue
        try:
            prm = ProtectedResourceMetadata.model_validate(body)
        except ValidationError:
            raise DiscoveryError(f"{url} is not protected-resource metadata (RFC 9728)") from None
        expected = resource_url_from_server_url(server_url)
        if prm.resource and not check_resource_allowed(requested_resource=expected,
                                                       configured_resource=str(prm.resource)):
            raise DiscoveryError(f"{url} describes another resource ({prm.resource}, not {expected}): the server "
                                 "publishes metadata that lies about itself")
        resource = body
        break
    advertised = [str(a) for a in prm.authorization_servers] if prm else []
    auth_server = next((a for a in advertised if issuer and issuers_match(a, issuer)), advertised[0] if advertised
                       else issuer)
    for url in build_oauth_authorization_server_metadata_discovery_urls(auth_server, server_url):
        status, body = await _get_json(client, url)
        if status != 200:
            continue
        try:
            metadata = OAuthMetadata.model_validate(body)
        except ValidationError:
            raise DiscoveryError(f"{url} is not authorization-server metadata (RFC 8414)") from None
        try:
            validate_metadata_issuer(metadata, auth_server or str(metadata.issuer))
            if issuer is not None and not issuers_match(str(metadata.issuer), issuer):
                raise OAuthFlowError(f"issuer {metadata.issuer} is not the configured auth.issuer {issuer}")
        except OAuthFlowError as exc:
            raise DiscoveryError(f"{url} names another issuer ({exc}): the metadata lies or points elsewhere") from None
        return Discovered(body, resource)
    raise DiscoveryError(f"no authorization-server metadata found for {server_url} (tried {auth_server or 'its origin'}); "
                         "set auth.issuer or auth.token_url")
