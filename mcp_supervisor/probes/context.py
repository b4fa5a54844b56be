"""Resources every prober of one daemon shares: one HTTP client, a limit on cold spawns.

Why shared: a fresh ``httpx2.AsyncClient`` per probe is most of the 55-61 ms CPU a fresh SDK
connect costs. One long-lived client keeps a connection pool across all servers; per-server
headers are added by a request hook from a context variable set inside each session's task, and
a response hook records statuses there, so a 401 is classified as ``auth`` even though the SDK
turns it into a generic error.
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field

import httpx2

_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)
_LIMITS = httpx2.Limits(max_connections=2000, max_keepalive_connections=1000, keepalive_expiry=60.0)


@dataclass
class HttpSink:
    """Per-session HTTP facts: headers to send, statuses seen (bounded)."""

    headers: dict[str, str] = field(default_factory=dict)
    statuses: list[int] = field(default_factory=list)

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
    if sink is not None:
        sink.record(response.status_code)


def make_http_client(
    headers: dict[str, str] | None = None,
    timeout: httpx2.Timeout | None = None,
    auth: httpx2.Auth | None = None,
) -> httpx2.AsyncClient:
    """An httpx2 client with the probe hooks; also usable as the SSE transport's client factory."""
    return httpx2.AsyncClient(
        headers=headers,
        timeout=timeout or _HTTP_TIMEOUT,
        auth=auth,
        limits=_LIMITS,
        event_hooks={"request": [_on_request], "response": [_on_response]},
    )


class ProbeContext:
    """Shared, long-lived resources for all probers of one daemon."""

    def __init__(self, *, max_concurrent_cold: int = 2) -> None:
        self.max_concurrent_cold = max_concurrent_cold
        self._cold: asyncio.Semaphore | None = None
        self._http: httpx2.AsyncClient | None = None
        self._closed = False

    @property
    def cold_slots(self) -> asyncio.Semaphore:
        """Limits concurrent cold stdio spawns (each costs ~1.3 s of CPU for a Python server)."""
        if self._cold is None:
            self._cold = asyncio.Semaphore(self.max_concurrent_cold)
        return self._cold

    def http_client(self) -> httpx2.AsyncClient:
        if self._closed:
            raise RuntimeError("ProbeContext is closed")
        if self._http is None:
            self._http = make_http_client()
        return self._http

    async def aclose(self) -> None:
        self._closed = True
        client, self._http = self._http, None
        if client is not None:
            await client.aclose()
