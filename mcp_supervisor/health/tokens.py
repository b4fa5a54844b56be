"""Token expiry, decided purely: when should a person be told to renew a bearer token?

Why read a JWT without verifying it: the supervisor is not the token's audience and has no key; it
only needs the ``exp`` claim to warn a week and a day ahead, before a 401 ruins the morning job.
The token itself never leaves this function: callers get a datetime, never the text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from mcp_supervisor.config import ServerConfig

ExpiryWarning = Literal["expired", "1d", "7d"]


def jwt_expiry(token: str) -> datetime | None:
    """The ``exp`` claim of a JWT (``Bearer`` prefix allowed), or None for anything else."""
    text = token.strip()
    if text.lower().startswith("bearer "):
        text = text[7:].strip()
    parts = text.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def configured_expiry(day: date) -> datetime:
    """``token_expires = 2026-12-31`` means the token is good through the end of that UTC day."""
    return datetime.combine(day + timedelta(days=1), time.min, UTC)


def expiry_warning(expires_at: datetime, now: datetime) -> ExpiryWarning | None:
    """Which warning is due: 'expired', '1d' (within a day), '7d' (within a week), or None."""
    left = expires_at - now
    if left <= timedelta(0):
        return "expired"
    if left <= timedelta(days=1):
        return "1d"
    if left <= timedelta(days=7):
        return "7d"
    return None


def expiry_message(server: str, source: str, expires_at: datetime, warning: ExpiryWarning) -> str:
    """A secret-free instruction: which server, which variable, when, and what to do."""
    when = expires_at.strftime("%Y-%m-%d %H:%M UTC")
    if warning == "expired":
        return f"{server}: the token in {source} expired at {when}; renew it and update {source}"
    span = "within a day" if warning == "1d" else "within 7 days"
    return f"{server}: the token in {source} expires {span} ({when}); renew it and update {source}"


def token_expiry(server: ServerConfig, environ: Mapping[str, str]) -> tuple[datetime, str] | None:
    """When the server's token expires and where it lives (a variable or header name), if known."""
    found = find_token(server, environ)
    return (found[0], found[1]) if found is not None else None


def find_token(server: ServerConfig, environ: Mapping[str, str]) -> tuple[datetime, str, str] | None:
    """Expiry, where it lives, and an identity of the token (a hash prefix; never the token)."""
    if server.token_expires is not None:
        expires = configured_expiry(server.token_expires)
        return expires, server.token_env or "the configured token", f"date:{expires.isoformat()}"
    candidates: list[tuple[str, str]] = []
    if server.token_env and environ.get(server.token_env):
        candidates.append((environ[server.token_env], server.token_env))
    for header, value in server.headers.items():
        if header.lower() == "authorization":
            candidates.append((value, server.token_env or f"header {header}"))
    for token, source in candidates:
        exp = jwt_expiry(token)
        if exp is not None:
            return exp, source, hashlib.sha256(token.encode()).hexdigest()[:16]
    return None
