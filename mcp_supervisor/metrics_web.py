"""TLS and basic auth for the TCP ``/metrics`` listener, as exporter-toolkit does them.

Why bcrypt with a cache of successes: the hashes in ``basic_auth_users`` are bcrypt (cost 10 is
~50-100 ms of CPU per check), and Prometheus sends the same credentials every scrape; like
exporter-toolkit, a user+password pair that verified once is remembered (by a SHA-256 of the
pair, never the password), so a scrape costs one dictionary lookup. Failures are never cached,
run one at a time, and an unknown user is checked against a dummy hash so that the answer time
does not tell which user names exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from mcp_supervisor.config.fleet import MetricsSettings, TLSServerConfig

_REALM = 'Basic realm="mcp-supervisor metrics", charset="UTF-8"'
_DUMMY = b"$2b$10$" + b"C" * 53  # a well-formed hash no password matches, for unknown users
_CACHE_MAX = 64
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """A server context from ``tls_server_config``; OSError/SSLError name the file that failed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "TLS13" else ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"[metrics] tls_server_config: cannot load cert_file {tls.cert_file} / key_file "
                         f"{tls.key_file}: {exc}") from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(str(tls.client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"[metrics] tls_server_config: cannot load client_ca_file {tls.client_ca_file}: "
                             f"{exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class BasicAuth:
    """aiohttp middleware checking ``Authorization: Basic`` against bcrypt hashes."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {name: hashed.encode() for name, hashed in users.items()}
        self._verified: dict[bytes, None] = {}
        self._checking = asyncio.Lock()

    @staticmethod
    def _credentials(request: web.Request) -> tuple[str, bytes] | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic" or not token:
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user, sep, password = decoded.partition(b":")
        if not sep:
            return None
        try:
            return user.decode(), password
        except UnicodeDecodeError:
            return None

    async def allowed(self, request: web.Request) -> bool:
        found = self._credentials(request)
        if found is None:
            return False
        user, password = found
        remembered = hashlib.sha256(user.encode() + b"\0" + password).digest()
        if remembered in self._verified:
            return True
        hashed = self._users.get(user, _DUMMY)
        async with self._checking:  # bcrypt is deliberately slow: one guess at a time
            ok = await asyncio.to_thread(_checkpw, password, hashed)
        if ok and user in self._users:
            if len(self._verified) >= _CACHE_MAX:
                self._verified.pop(next(iter(self._verified)))
            self._verified[remembered] = None
            return True
        return False

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not await self.allowed(request):
            return web.Response(status=401, text="Unauthorized\n", headers={"WWW-Authenticate": _REALM})
        return await handler(request)


def _checkpw(password: bytes, hashed: bytes) -> bool:
    import bcrypt

    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:  # a malformed hash: never a match
        return False


def listener_security(settings: MetricsSettings) -> tuple[ssl.SSLContext | None, list[Any]]:
    """The SSL context and middlewares ``[metrics]`` asks for (ValueError names what is wrong)."""
    effective = settings.web_config()
    context = ssl_context(effective.tls_server_config) if effective.tls_server_config is not None else None
    middlewares: list[Any] = []
    if effective.basic_auth_users:
        middlewares.append(BasicAuth(effective.basic_auth_users).middleware)
    return context, middlewares
