"""The read-only status page, served by the daemon on a loopback TCP address (``[web] listen``).

Why a separate listener from the control socket: the socket carries actions and is guarded by
SO_PEERCRED; the page carries none, so anyone on this machine who can reach loopback may read it,
and nothing on it can change anything. Only GET routes exist; the page is files inside the package
(no CDN, no build step); live updates come from server-sent events that only say "something changed".

Why the live streams are capped (``[web] max_event_streams``) and the listen backlog is left at
aiohttp's 128: anyone on this machine can open streams, and each holds a bus subscription and a
file descriptor; past the cap a 503 comes at once (counted in ``/metrics``). A small accept queue
keeps each burst of new connections the event loop takes in at once small (asyncio accepts up to
``backlog`` per wake-up), so a flood of 2 000 page connections is spread by the kernel instead of
stalling the control socket's ``ready`` (``bench/bench_flood.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mcp_supervisor import sse
from mcp_supervisor.api.event_stream import StreamGate, stream_events
from mcp_supervisor.config.listen import parse_listen
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.logging import get_logger
from mcp_supervisor.web.summary import DAYS, IncidentLog, PageRecord, RecordData, build_summary

_STATIC = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
HEARTBEAT = 15.0
MAX_STREAMS = 256
"""Default of ``[web] max_event_streams``: open live views of the page (a tab holds one)."""
log = get_logger("mcp_supervisor.web")


class StatusPage:
    """Owns the page's aiohttp runner and its incident log; start() binds, close() unbinds."""

    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        bus: EventBus,
        *,
        title: str,
        scrub: Callable[[str], str],
        record: PageRecord | None = None,
        heartbeat: float = HEARTBEAT,
        max_streams: int | None = MAX_STREAMS,
    ) -> None:
        self._status = status
        self._bus = bus
        self.title = title
        self._scrub = scrub
        self.record = record
        self._heartbeat = heartbeat
        self.incidents = IncidentLog()
        self.streams = StreamGate(max_streams)
        self._runner: web.AppRunner | None = None
        self._feed: asyncio.Task[None] | None = None
        self._warm: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.port: int | None = None

    async def summary(self) -> dict[str, Any]:
        now = time.time()
        data: RecordData | None = None
        if self.record is not None:
            try:
                data = await self.record.page_data(DAYS, now)
            except Exception as exc:  # the record is a view; the page must still show the live states
                log.warning("status page: the record could not be read", error=str(exc))
        return build_summary(self._status(), title=self.title, now=now, scrub=self._scrub, record=data,
                             incident_log=self.incidents)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/summary", self._summary)
        app.router.add_get("/api/events", self._events)
        app.on_response_prepare.append(self._secure_headers)
        return app

    def collector(self) -> Collector:
        """Register on the daemon's metrics registry: open streams, the cap, refusals."""
        return _StreamCollector(self.streams)

    async def start(self, listen: str) -> None:
        host, port = parse_listen(listen)
        self._feed = asyncio.create_task(self._follow_incidents(), name="status-page-incidents")
        warm = getattr(self.record, "warm", None)
        if warm is not None:  # the past days' cells once, before the first visitor asks
            self._warm = asyncio.create_task(self._warm_record(warm), name="status-page-warm")
        # handler_cancellation: a live view whose tab closed frees its stream slot at once
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0,
                                     handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        addresses = self._runner.addresses  # the bound port when port 0 was asked
        self.port = int(addresses[0][1]) if addresses else port

    async def _warm_record(self, warm: Any) -> None:
        try:
            await warm(DAYS)
        except Exception as exc:
            log.warning("status page: the record could not be read", error=str(exc))

    async def close(self) -> None:
        self._stopping.set()
        if self._warm is not None:
            self._warm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warm
        if self._feed is not None:
            self._feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _follow_incidents(self) -> None:
        with self._bus.subscription() as queue:
            while True:
                event = await queue.get()
                if event.kind == "state" and event.server:
                    changed = getattr(self.record, "changed", None)
                    if changed is not None:
                        changed()
                    self.incidents.on_state(event.server, str(event.data.get("old")), str(event.data.get("new")),
                                            event.at, event.data.get("failure_class"))

    # --- handlers -----------------------------------------------------------------------------

    @staticmethod
    async def _secure_headers(request: web.Request, response: web.StreamResponse) -> None:
        for key, value in _HEADERS.items():
            response.headers.setdefault(key, value)

    async def _index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC or name == "index.html":
            raise web.HTTPNotFound(text="not found")
        return self._file(name)

    @staticmethod
    def _file(name: str) -> web.Response:
        body = resources.files("mcp_supervisor.web").joinpath("static", name).read_bytes()
        return web.Response(body=body, content_type=_STATIC[name], charset="utf-8")

    async def _summary(self, request: web.Request) -> web.Response:
        return web.json_response(await self.summary(), dumps=lambda d: json.dumps(d, default=str))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """'Something changed' pings (server name and state only); the page re-reads the summary."""
        return await stream_events(request, self._bus, _change_frame, stopping=self._stopping,
                                   heartbeat=self._heartbeat, hello=sse.frame("{}", event="hello"), gate=self.streams,
                                   refused=_too_many_streams)


def _change_frame(event: Event) -> bytes | None:
    if event.kind not in ("state", "config", "daemon", "report"):
        return None
    return sse.frame(json.dumps({"kind": event.kind, "server": event.server, "state": event.data.get("new")}),
                     event="change")


def _too_many_streams() -> web.Response:
    """Past the cap: 503 at once, and the connection closed (an idle keep-alive would hold the slot's fd)."""
    response = web.json_response(
        {"error": {"code": "too_many_streams", "message": "too many live views of this page are open; retry later"}},
        status=503, headers={"Retry-After": "10", "Connection": "close"},
    )
    response.force_close()
    return response


class _StreamCollector(Collector):
    """The page's live-update streams, for ``/metrics`` (read at scrape time, never stale)."""

    def __init__(self, gate: StreamGate) -> None:
        self._gate = gate

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily("mcp_supervisor_status_page_streams", "Open live-update streams of the status page.",
                                value=self._gate.open)
        yield GaugeMetricFamily("mcp_supervisor_status_page_streams_limit",
                                "The cap on open streams of the status page ([web] max_event_streams).",
                                value=self._gate.limit if self._gate.limit is not None else float("inf"))
        yield CounterMetricFamily("mcp_supervisor_status_page_streams_refused",
                                  "Live-update streams refused with 503 because the cap was reached.",
                                  value=self._gate.refused)
