"""An MCP server protected by OAuth with the SDK's own resource-server support (``mcp.server.auth``).

The token verifier checks the JWT access token against the authorization server's published keys
(its JWKS, found through its RFC 8414 metadata): signature, issuer, audience (this server's URL,
RFC 8707) and expiry. The SDK's bearer middleware answers 401 with the RFC 9728
``resource_metadata`` pointer, which is how a client discovers where to get a token.
``python tests/servers/oauth_resource.py PORT ISSUER [SEEN [REVOKED]]`` serves ``http://127.0.0.1:PORT/mcp``;
with SEEN every distinct token it accepted is appended to that file (so a test can look for the
token text where it must never be); a token listed in the file REVOKED is refused (401), as a
server does whose admin revoked a session.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

import jwt
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer


class JwksVerifier:
    def __init__(self, issuer: str, audience: str, seen: str | None = None, revoked: str | None = None) -> None:
        self._seen_file = seen
        self._revoked = revoked
        self._seen: set[str] = set()
        with urllib.request.urlopen(f"{issuer}/.well-known/oauth-authorization-server", timeout=10) as answer:
            metadata = json.load(answer)
        self._keys = jwt.PyJWKClient(metadata["jwks_uri"], cache_keys=False)
        self._issuer = issuer
        self._audience = audience

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            key = self._keys.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=["RS256", "PS256", "ES256", "EdDSA"],
                                issuer=self._issuer, audience=self._audience)
        except jwt.PyJWTError:
            return None
        if self._revoked and os.path.exists(self._revoked):
            with open(self._revoked, encoding="utf-8") as listed:
                if token in listed.read().split():
                    return None
        if self._seen_file and token not in self._seen:
            self._seen.add(token)
            with open(self._seen_file, "a", encoding="utf-8", opener=lambda p, f: os.open(p, f, 0o600)) as out:
                out.write(token + "\n")
        return AccessToken(token=token, client_id=str(claims.get("client_id", "")),
                           scopes=str(claims.get("scope", "")).split(), expires_at=int(claims["exp"]),
                           resource=self._audience)


def main() -> None:
    port, issuer, seen = int(sys.argv[1]), sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else None)
    revoked = sys.argv[4] if len(sys.argv) > 4 else None
    url = f"http://127.0.0.1:{port}/mcp"
    server = MCPServer("oauth-protected", token_verifier=JwksVerifier(issuer, url, seen, revoked),
                       auth=AuthSettings(issuer_url=issuer, resource_server_url=url, required_scopes=["mcp"]))

    @server.tool()
    def whoami() -> str:
        """Answer who is calling (proves a tool call passes the bearer check)."""
        return "an OAuth client"

    server.run("streamable-http", host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
