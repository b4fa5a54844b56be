"""Warn before a bearer token expires: 7 days ahead, 1 day ahead, and once expired.

Why in the daemon and not only on a 401: by the time the server answers 401 the morning job has
already failed. The token's own ``exp`` (JWTs) or the config's ``token_expires`` says when; the
person gets one warning per level naming the server and the variable to renew, never the token.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from mcp_supervisor.config import Config, ServerConfig
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.health.tokens import ExpiryWarning, configured_expiry, expiry_message, expiry_warning, jwt_expiry
from mcp_supervisor.logging import get_logger

log = get_logger("mcp_supervisor.tokens")
CHECK_INTERVAL = 3600.0


def token_expiry(server: ServerConfig, environ: Mapping[str, str]) -> tuple[datetime, str] | None:
    """When the server's token expires and where it lives (a variable or header name), if known."""
    if server.token_expires is not None:
        return configured_expiry(server.token_expires), server.token_env or "the configured token"
    candidates: list[tuple[str, str]] = []
    if server.token_env and environ.get(server.token_env):
        candidates.append((environ[server.token_env], server.token_env))
    for header, value in server.headers.items():
        if header.lower() == "authorization":
            candidates.append((value, server.token_env or f"header {header}"))
    for token, source in candidates:
        expires = jwt_expiry(token)
        if expires is not None:
            return expires, source
    return None


def due_warnings(
    config: Config, now: datetime, sent: set[tuple[str, ExpiryWarning]], environ: Mapping[str, str]
) -> list[tuple[ServerConfig, ExpiryWarning, str]]:
    """Pure apart from ``sent``: the warnings to send now, each once per server and level."""
    due = []
    for server in config.servers:
        found = token_expiry(server, environ)
        if found is None:
            continue
        expires, source = found
        level = expiry_warning(expires, now)
        if level is None or (server.name, level) in sent:
            continue
        sent.add((server.name, level))
        due.append((server, level, expiry_message(server.name, source, expires, level)))
    return due


async def watch_token_expiry(config: Callable[[], Config], bus: EventBus, interval: float = CHECK_INTERVAL) -> None:
    sent: set[tuple[str, ExpiryWarning]] = set()
    while True:
        for server, level, message in due_warnings(config(), datetime.now(UTC), sent, os.environ):
            severity = "critical" if level in ("expired", "1d") else "warning"
            log.warning("token expiry", server=server.name, level=level, detail=message)
            bus.publish(
                Event(
                    kind="notify",
                    server=server.name,
                    data={"notify": "token_expiry", "severity": severity, "detail": message, "level": level},
                )
            )
        await asyncio.sleep(interval)
