"""A server's ``auth = { type = "oauth", ... }`` table: how the daemon obtains its access tokens.

Why a model of its own (and not more ``headers``): a static bearer token in a header expires and a
person renews it; an OAuth client the daemon holds renews itself (``mcp_supervisor/auth/``). Two
kinds of grant: machine grants (``client_credentials`` with a secret, ``private_key_jwt`` with a
key) need no person at all; person grants (``device_code``, ``authorization_code``) need one
``supervisorctl-mcp login NAME``, after which the daemon renews with the refresh token.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mcp_supervisor.config.base import Duration, _Model

_URL = re.compile(r"^https?://[^/\s]+")
MACHINE_GRANTS = ("client_credentials", "private_key_jwt")
PERSON_GRANTS = ("device_code", "authorization_code")
Grant = Literal["client_credentials", "private_key_jwt", "device_code", "authorization_code"]


class OAuthConfig(_Model):
    """An OAuth 2.1 client of one server."""

    type: Literal["oauth"]
    grant: Grant = "client_credentials"
    client_id: str | None = Field(default=None, min_length=1)
    """Unset (person grants only): ``login`` registers a client (RFC 7591) and stores it."""
    client_secret: str | None = Field(default=None, min_length=1)
    """Keep it out of the file: ``client_secret = "${file:/etc/mcp-supervisor/jira.secret}"``."""
    private_key_file: str | None = Field(default=None, min_length=1)
    """``private_key_jwt``: the path of the PEM key that signs the client assertion (mode 0600 or
    0400, a regular file; read at each signing, so a rotated key is used without a reload)."""
    signing_algorithm: str = "RS256"
    scopes: list[str] = Field(default_factory=list)
    token_url: str | None = None
    """The token endpoint; unset: discovered (RFC 9728 protected-resource metadata of the server,
    then the authorization server's RFC 8414 metadata)."""
    issuer: str | None = None
    """The authorization server the credentials belong to; when set they are sent nowhere else."""
    refresh_before: Duration | None = None
    """Renew this long before the access token expires (unset: at 80 % of its lifetime)."""
    refresh_lifetime: Duration | None = None
    """How long a grant (its refresh tokens) lives after ``login``, when the server does not say
    (``refresh_expires_in``): the daemon warns ``refresh_warn`` before it ends."""
    refresh_warn: Duration = 3 * 86400.0
    redirect_port: int = Field(default=8765, ge=1, le=65535)
    """``authorization_code``: the loopback port of the redirect (``http://127.0.0.1:PORT/callback``)."""

    @field_validator("token_url", "issuer")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and "${" not in value and not _URL.match(value):
            raise ValueError(f"{value!r} is not an http(s) URL (e.g. 'https://auth.example.com/token')")
        return value

    @field_validator("scopes")
    @classmethod
    def _scope_words(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not scope or any(ch.isspace() for ch in scope):
                raise ValueError(f"scope {scope!r} must be one word; list each scope on its own")
        return value

    @model_validator(mode="after")
    def _credentials_for_grant(self) -> OAuthConfig:
        if self.grant in MACHINE_GRANTS and self.client_id is None:
            raise ValueError(f"grant {self.grant!r} needs client_id (the client registered at the authorization "
                             "server); only the person grants 'device_code' and 'authorization_code' register one")
        if self.grant == "client_credentials" and self.client_secret is None:
            raise ValueError("grant 'client_credentials' needs client_secret, e.g. client_secret = "
                             "\"${file:/etc/mcp-supervisor/NAME.secret}\" (or use grant = 'private_key_jwt' "
                             "with private_key)")
        if self.grant == "private_key_jwt" and self.private_key_file is None:
            raise ValueError("grant 'private_key_jwt' needs private_key_file, the path of the PEM signing key: "
                             "private_key_file = \"/etc/mcp-supervisor/NAME.pem\"")
        return self

    @property
    def machine(self) -> bool:
        """A grant the daemon completes alone (no ``login``)."""
        return self.grant in MACHINE_GRANTS

    @property
    def scope(self) -> str | None:
        """The space-separated ``scope`` parameter (None: let the server's metadata decide)."""
        return " ".join(self.scopes) or None
