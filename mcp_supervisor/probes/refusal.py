"""A refused connection told at once: no SDK session is built to learn that nobody is listening.

Why: when a gateway with 200 servers behind it goes away, every warm check of every one of them
used to fail its light request, then go through a full SDK connect (a session task, anyio task
groups, an httpx request, exception groups to unwrap) only to be told "connection refused"; and so
on every tick for as long as the outage lasted. That was most of a storm's CPU. A refusal is a
fact the kernel states in one syscall: the light check's own refusal is classified as it is, and
while a server keeps refusing, each check is one TCP connect until its port accepts again; only
then does the SDK connect (and negotiate the era) as before.

The wording is ``classify.refused_verdict``'s, so a server's reason does not change with the path
that found the refusal (a repeat is recognised as a repeat, not news).
"""

from __future__ import annotations

import asyncio
import errno
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` (aiohttp's connector error is an ``OSError``) says the port refused."""
    return isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED
    )


async def port_refuses(url: str, timeout: float) -> bool | None:
    """One TCP connect to ``url``'s host and port: True refused, False accepted, None no verdict.

    No verdict (``None``) for a URL without a host, a name that does not resolve or a connect
    that does not finish within ``timeout``: the SDK's connect then says what it is, as before.
    The connection is closed at once; nothing is sent on it.
    """
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if port is None:
        return None
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(asyncio.Protocol, host, port)
    except TimeoutError:
        return None
    except OSError as exc:
        return True if is_refusal(exc) else None
    transport.abort()
    return False
