"""The proxy inside the daemon: one object the daemon starts, routes and stops (wiring only).

Why here and not in daemon.py: the daemon stays a list of services; what the proxy needs at
start (its token file, its listener, its control-socket routes, its /metrics series) is the
proxy's own business. A proxy that cannot start (a port in use, a token file others can read)
is logged with the fix and the supervisor runs on without it, like the status page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mcp_supervisor.config import Config
from mcp_supervisor.health.model import State
from mcp_supervisor.logging import get_logger
from mcp_supervisor.proxy.server import ProxyHandlers, ProxyServer
from mcp_supervisor.proxy.service import ProxyService
from mcp_supervisor.proxy.token import TokenFileError, ensure_token

log = get_logger("mcp_supervisor.proxy")
SOCKET_PREFIX = "/v1/proxy"


def token_path(config: Config) -> Path:
    return config.proxy.token_file or Path(config.state_dir) / "proxy.token"


class ProxyRuntime:
    def __init__(self, supervisor: Any) -> None:
        self._supervisor = supervisor
        self.service = ProxyService(lambda: supervisor.config, supervisor.status, supervisor.bus, limits=self._limit)
        self.server: ProxyServer | None = None

    def _limit(self, name: str) -> tuple[float, str] | None:
        """(until, the reason) while the server's machine holds it back for a rate limit."""
        runner = self._supervisor.runners.get(name)
        machine = getattr(runner, "machine", None)
        if machine is None or machine.state is not State.RATE_LIMITED or machine.hold_until is None:
            return None
        return machine.hold_until, machine.reason

    def add_routes(self, app: web.Application) -> None:
        """``/v1/proxy/<name>/mcp`` on the control socket, for the stdio bridge (no token), and
        ``GET /v1/proxy``: where the proxy listens and what it counted (for ``run`` and reports)."""
        ProxyHandlers(self.service).add_routes(app, SOCKET_PREFIX)
        app.router.add_get(SOCKET_PREFIX, self._info)

    def info(self) -> dict[str, Any]:
        config: Config = self._supervisor.config
        listening = self.server is not None and config.proxy.listen
        return {
            "listen": config.proxy.listen if listening else None,
            "token_file": str(token_path(config)) if listening else None,
            "servers": [s.name for s in config.servers],
            "counts": self.service.figures(),
        }

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response(self.info())

    def register_metrics(self, registry: Any) -> None:
        registry.register(_Collector(self.service))

    async def start(self, config: Config) -> None:
        if not config.proxy.listen:
            return
        path = token_path(config)
        try:
            token = ensure_token(path)
        except (TokenFileError, OSError) as exc:
            log.error("cannot serve the proxy; the supervisor runs without it", error=str(exc))
            return
        server = ProxyServer(self.service, token, config.proxy.max_body)
        try:
            await server.start(config.proxy.listen)
        except OSError as exc:
            log.error("cannot serve the proxy; the supervisor runs without it", listen=config.proxy.listen,
                      error=str(exc))
            await server.close()
            return
        self.server = server
        log.info("proxy listening", url=f"http://{config.proxy.listen}/servers/<name>/mcp", token_file=str(path))

    async def run(self) -> None:
        from mcp_supervisor.proxy.checks import DeepChecks

        await asyncio.gather(self.service.run(), DeepChecks(self.service, self._supervisor).run())

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
        await self.service.close()


class _Collector:
    """Read at scrape time: refusals, open sessions, and calls held, retried and failed per server."""

    def __init__(self, service: ProxyService) -> None:
        self._service = service

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        figures = self._service.figures()
        prefix = "mcp_supervisor_proxy"
        yield CounterMetricFamily(f"{prefix}_unauthorized", "Proxy requests refused for a missing or wrong token.",
                                  value=figures["unauthorized"])
        yield CounterMetricFamily(f"{prefix}_rejected", "Proxy requests refused as malformed or too large.",
                                  value=figures["rejected"])
        sessions = GaugeMetricFamily(f"{prefix}_sessions", "Open handshake-era client sessions.", labels=["server"])
        counters = {kind: CounterMetricFamily(f"{prefix}_calls_{kind}", f"Client calls {kind} across backend restarts.",
                                              labels=["server"]) for kind in ("held", "retried", "failed")}
        for name, entry in figures["servers"].items():
            sessions.add_metric([name], entry["sessions"])
            for kind, family in counters.items():
                family.add_metric([name], entry[kind])
        yield sessions
        yield from counters.values()
