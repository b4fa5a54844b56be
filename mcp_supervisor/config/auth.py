"""A server's ``auth = { type = "oauth", ... }`` table: how the daemon obtains its access tokens.

Why a model of its own (and not more ``headers``): a static bearer token in a header expires and a
person renews it; an OAuth client the daemon holds renews itself (``mcp_supervisor/auth/``). Only
the machine grant ``client_credentials`` is supported so far; the other grants the MCP
authorization spec names are refused at load with what to use meanwhile, rather than accepted
and never used.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from mcp_supervisor.config.base import _Model

_URL = re.compile(r"^https?://[^/\s]+")


class OAuthConfig(_Model):
    """An OAuth 2.1 client of one server (a configured client; no dynamic registration)."""

    type: Literal["oauth"]
    grant: str = "client_credentials"
    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    """Keep it out of the file: ``client_secret = "${file:/etc/mcp-supervisor/jira.secret}"``."""
    scopes: list[str] = Field(default_factory=list)
    token_url: str | None = None
    """The token endpoint; unset: discovered (RFC 9728 protected-resource metadata of the server,
    then the authorization server's RFC 8414 metadata)."""
    issuer: str | None = None
    """The authorization server the credentials belong to; when set they are sent nowhere else."""

    @field_validator("grant")
    @classmethod
    def _supported_grant(cls, value: str) -> str:
        if value != "client_credentials":
            raise ValueError(
                f"grant {value!r} is not supported yet: only 'client_credentials' (a machine grant, no "
                "login) is; for a person's grant meanwhile put a token in headers.Authorization"
            )
        return value

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

    @property
    def scope(self) -> str | None:
        """The space-separated ``scope`` parameter (None: let the server's metadata decide)."""
        return " ".join(self.scopes) or None
