"""Resources every prober of one daemon shares: HTTP clients, turns for handshakes and cold spawns.

Why shared: a fresh ``httpx2.AsyncClient`` per probe is most of the 55-61 ms CPU a fresh SDK
connect costs. Long-lived clients (one per origin, one TLS context for all) keep connections
open across probes; per-server headers are added by a request hook from a context variable set
inside each session's task, and a response hook records statuses there, so a 401 is classified as
``auth`` even though the SDK turns it into a generic error.

Why no connection cap per origin: every kept-open session of the ``initialize`` era held one
connection for its GET stream as long as it lived, so a cap of C connections silently starved the
(C+1)th server behind one gateway forever ("no answer within the deadline"); probe sessions no
longer open that stream (``_NoListeningStream``), and no cap comes back. The number of
connections is already bounded by the config (one session per HTTP server, one stream and one
request each); the one limit that matters under load, how many handshakes run at once, is a
config key (``[supervisor] max_concurrent_handshakes``), and a turn waited for is never counted
against a probe's deadline: the deadline starts when the turn comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx2

from mcp_supervisor.config import ServerConfig
from mcp_supervisor.probes.turns import Turns

if TYPE_CHECKING:
    import aiohttp

_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)
_LIMITS = httpx2.Limits(max_connections=None, max_keepalive_connections=4, keepalive_expiry=60.0)
"""Per origin: no cap on connections (see above); few idle ones kept, as the pool checks every
connection it holds on each request."""
_SLOW_TURN_LOG_EVERY = 60.0
"""Seconds between two log lines saying handshakes queued for longer than a probe timeout."""

_LIMIT_BODY = 512
"""Bytes of a 429's body kept for the server's own words ("rate limited until ...: <words>")."""

_log = logging.getLogger(__name__)

OUTER_DEADLINE: contextvars.ContextVar[asyncio.Timeout | None] = contextvars.ContextVar(
    "mcp_probe_outer_deadline", default=None
)
"""The runner's last-resort deadline around a whole probe; a wait for a turn pushes it back."""

TURN_GRANTED: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "mcp_probe_turn_granted", default=None
)
"""Called when a waited-for handshake turn comes: the probe's deadline starts then, and so does the
runner's measure of how late the loop was during it (a wait in the queue is no part of it)."""
TIMEOUT_SCALE: contextvars.ContextVar[float] = contextvars.ContextVar("mcp_probe_timeout_scale", default=1.0)
"""How many times ``probe.timeout`` this check's deadlines are: the runner widens them for a check
re-run because the last one timed out while the daemon's own event loop was late (``observe.py``)."""


def probe_timeout(server: ServerConfig) -> float:
    """The deadline of one probe phase of ``server`` for the check running now."""
    return server.probe.timeout * TIMEOUT_SCALE.get()


_ssl_context: ssl.SSLContext | None = None


def _shared_ssl() -> ssl.SSLContext:
    """One TLS context for every client: building one costs ~17 ms CPU and ~0.8 MB."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


@dataclass
class HttpSink:
    """Per-session HTTP facts: headers to send, statuses seen (bounded), the session id given."""

    headers: Mapping[str, str] = field(default_factory=dict)
    statuses: list[int] = field(default_factory=list)
    session_id: str | None = None
    """``Mcp-Session-Id`` of a handshake-era session: the light warm check sends it back."""
    limits: list[tuple[str | None, str]] = field(default_factory=list)
    """Each HTTP 429 seen: (its ``Retry-After`` header, the start of its body: the server's words)."""

    def record(self, status: int) -> None:
        self.statuses.append(status)
        if len(self.statuses) > 16:
            del self.statuses[:-16]


CURRENT_SINK: contextvars.ContextVar[HttpSink | None] = contextvars.ContextVar("mcp_probe_sink", default=None)


async def _on_request(request: httpx2.Request) -> None:
    sink = CURRENT_SINK.get()
    if sink is not None and sink.headers:
        for key, value in sink.headers.items():
            request.headers[key] = value


async def _on_response(response: httpx2.Response) -> None:
    sink = CURRENT_SINK.get()
    if sink is not None and not response.extensions.get(_LOCAL):
        sink.record(response.status_code)
        if response.status_code == 429 and len(sink.limits) < 4:
            body = await response.aread()  # small, and kept: the SDK reads the same bytes after us
            sink.limits.append((response.headers.get("retry-after"), body[:_LIMIT_BODY].decode("utf-8", "replace")))
        session_id = response.headers.get("mcp-session-id")
        if session_id:
            sink.session_id = session_id


_LOCAL = "mcp_supervisor_local"
"""Marks a response this process made up (never a server's: its status is not recorded)."""


class _NoListeningStream(httpx2.AsyncBaseTransport):
    """Declines the SDK's optional GET stream (server-initiated messages) of a probe session: 405.

    Why: a probe never needs a message the server sends on its own, and each kept-open GET stream
    held a connection per server and woke the daemon for every keep-alive ping the server sends
    (every 15 s per stream: 13 wake-ups a second at 200 servers, a tenth of the steady CPU). The
    specification lets a client not open it (and a server answer 405); the SDK then tries once
    more after a second and goes on without it. Everything else goes to the network.
    """

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and "text/event-stream" in request.headers.get("accept", ""):
            return httpx2.Response(405, request=request, extensions={_LOCAL: True})
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def make_http_client(
    headers: dict[str, str] | None = None,
    timeout: httpx2.Timeout | None = None,
    auth: httpx2.Auth | None = None,
    *,
    listen: bool = True,
) -> httpx2.AsyncClient:
    """An httpx2 client with the probe hooks; also usable as the SSE transport's client factory
    (whose GET is the connection itself: ``listen`` stays True there)."""
    return httpx2.AsyncClient(
        headers=headers,
        verify=_shared_ssl(),
        timeout=timeout or _HTTP_TIMEOUT,
        auth=auth,
        limits=_LIMITS,
        transport=None if listen else _NoListeningStream(httpx2.AsyncHTTPTransport(verify=_shared_ssl(),
                                                                                  limits=_LIMITS)),
        event_hooks={"request": [_on_request], "response": [_on_response]},
    )


class ProbeContext:
    """Shared, long-lived resources for all probers of one daemon."""

    def __init__(
        self, *, max_concurrent_cold: int = 2, max_concurrent_handshakes: int = 16, state_dir: Path | None = None,
        pressure: Callable[[], float] | None = None,
    ) -> None:
        self.max_concurrent_cold = max_concurrent_cold
        self.max_concurrent_handshakes = max_concurrent_handshakes
        self.state_dir = state_dir
        """Where stdio servers' private HOMEs go (``<state_dir>/homes``); None: a private temp dir."""
        self._cold: asyncio.Semaphore | None = None
        self._handshakes = Turns(max_concurrent_handshakes, pressure)
        """``pressure``: the event loop's recent lateness in seconds (fewer turns while it is late)."""
        self.turns_waited = 0
        """Handshakes that had to wait for a turn (``status``: the queue is working)."""
        self.longest_turn_wait = 0.0
        self._slow_logged_at = -_SLOW_TURN_LOG_EVERY
        self._http: dict[tuple[str, str, int | None], httpx2.AsyncClient] = {}
        self._light: aiohttp.ClientSession | None = None
        self._closed = False
        self._direct: bool | None = None

    @property
    def direct(self) -> bool:
        """No proxy in the environment: a TCP connect to a server's port is what a request would make."""
        if self._direct is None:
            import urllib.request

            self._direct = not urllib.request.getproxies_environment()
        return self._direct

    @property
    def cold_slots(self) -> asyncio.Semaphore:
        """Limits concurrent cold stdio spawns (each costs ~1.3 s of CPU for a Python server)."""
        if self._cold is None:
            self._cold = asyncio.Semaphore(self.max_concurrent_cold)
        return self._cold

    @asynccontextmanager
    async def handshake_turn(self, timeout: float) -> AsyncIterator[None]:
        """Hold one of ``max_concurrent_handshakes`` turns for a connect + handshake.

        Start-up, reload and a gateway coming back are a queue, not a stampede: a handshake that
        has to wait does so before its deadline starts (the caller starts its deadline inside),
        and the runner's outer deadline (``OUTER_DEADLINE``) is suspended while it waits. A wait
        longer than one probe timeout is logged (at most once a minute) with the key to raise.
        """
        slots = self._handshakes
        if not slots.busy():
            await slots.acquire()
        else:
            await self._wait_for_turn(slots, timeout)
        try:
            yield
        finally:
            slots.release()

    async def _wait_for_turn(self, slots: Turns, timeout: float) -> None:
        """Wait with the runner's outer deadline suspended, then move it back by the wait."""
        loop = asyncio.get_running_loop()
        queued = loop.time()
        outer = OUTER_DEADLINE.get()
        when = outer.when() if outer is not None else None
        if outer is not None and when is not None:
            outer.reschedule(None)
        try:
            await slots.acquire()
        finally:
            waited = loop.time() - queued
            if outer is not None and when is not None:
                with contextlib.suppress(RuntimeError):  # the outer scope is already leaving
                    outer.reschedule(when + waited)
        granted = TURN_GRANTED.get()
        if granted is not None:
            granted()
        self.turns_waited += 1
        self.longest_turn_wait = max(self.longest_turn_wait, waited)
        if waited > timeout and time.monotonic() - self._slow_logged_at > _SLOW_TURN_LOG_EVERY:
            self._slow_logged_at = time.monotonic()
            _log.warning("handshakes are queued: one waited %.1f s for a turn; [supervisor] "
                         "max_concurrent_handshakes = %d limits them (raise it on a machine with "
                         "more cores)", waited, self.max_concurrent_handshakes)

    def http_client(self, url: str = "") -> httpx2.AsyncClient:
        """The long-lived client for ``url``'s origin.

        One per origin, not one for all: httpx's pool scans every connection it holds on each
        request, so a single pool over 200 servers made each probe cost O(200) socket checks.
        """
        if self._closed:
            raise RuntimeError("ProbeContext is closed")
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "", parts.port)
        client = self._http.get(key)
        if client is None:
            client = self._http[key] = make_http_client(listen=False)  # Streamable HTTP only
        return client

    def light_session(self) -> aiohttp.ClientSession:
        """The aiohttp session of the light warm checks (``probes/light.py``), made on first use.

        One for all servers: aiohttp's pool hands out a kept-alive connection per host in O(1),
        so unlike httpx it needs no split per origin. Proxies from the environment are honoured
        as the SDK's httpx client honours them, but only looked up per request when one is set.
        """
        if self._closed:
            raise RuntimeError("ProbeContext is closed")
        if self._light is None:
            import urllib.request

            import aiohttp

            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=0, ssl=_shared_ssl(), keepalive_timeout=60.0, ttl_dns_cache=300
            )
            self._light = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=bool(urllib.request.getproxies_environment()),
                timeout=aiohttp.ClientTimeout(total=None),  # the prober bounds every check itself
            )
        return self._light

    async def aclose(self) -> None:
        self._closed = True
        clients, self._http = list(self._http.values()), {}
        light, self._light = self._light, None
        for client in clients:
            await client.aclose()
        if light is not None:
            await light.close()
