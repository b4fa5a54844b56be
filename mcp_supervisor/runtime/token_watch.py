"""Warn before a bearer token expires: 7 days ahead, 1 day ahead, and once expired.

Why in the daemon and not only on a 401: by the time the server answers 401 the morning job has
already failed. The token's own ``exp`` (JWTs) or the config's ``token_expires`` says when; the
person gets one warning per level naming the server and the variable to renew, never the token.
Warnings are remembered per token (its expiry and a hash, never the text): a renewed token (a
reload, a new value in a ``${file:...}``) is a new token, and its 7-day, 1-day and expired warnings
fire again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from mcp_supervisor.config import Config, ServerConfig
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.health.tokens import ExpiryWarning, expiry_message, expiry_warning, find_token
from mcp_supervisor.logging import get_logger

log = get_logger("mcp_supervisor.tokens")
CHECK_INTERVAL = 3600.0

Sent = set[tuple[str, ExpiryWarning, str]]
"""(server, level, token identity): what was already said about which token."""


def due_warnings(
    config: Config, now: datetime, sent: Sent, environ: Mapping[str, str]
) -> list[tuple[ServerConfig, ExpiryWarning, str]]:
    """Pure apart from ``sent``: the warnings to send now, each once per server, level and token.

    What was said about a token that is no longer configured is forgotten, so a renewed token
    starts with a clean slate (and ``sent`` cannot grow without bound).
    """
    due = []
    current: Sent = set()
    for server in config.servers:
        found = find_token(server, environ)
        if found is None:
            continue
        expires, source, identity = found
        current |= {key for key in sent if key[0] == server.name and key[2] == identity}
        level = expiry_warning(expires, now)
        if level is None or (server.name, level, identity) in sent:
            continue
        key = (server.name, level, identity)
        current.add(key)
        due.append((server, level, expiry_message(server.name, source, expires, level)))
    sent.clear()
    sent.update(current)
    return due


async def watch_token_expiry(config: Callable[[], Config], bus: EventBus, interval: float = CHECK_INTERVAL) -> None:
    sent: Sent = set()
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
