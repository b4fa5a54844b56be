"""The proxy's sessions per server: who owns which backend link, and when they are woken or dropped.

Why one modern session per server but one legacy session per client: a 2026-era request carries
everything it needs, so all of them can share one backend link; a handshake-era client has its
own negotiated session (capabilities, subscriptions, log level) that the proxy must restore for
it alone after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mcp_supervisor.config import Config, ServerConfig
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.logging import get_logger
from mcp_supervisor.proxy.actions import Stats
from mcp_supervisor.proxy.core import SessionCore
from mcp_supervisor.proxy.links import BackendLink, HttpLink, OnLost, OnMessage, SseLink, link_auth
from mcp_supervisor.proxy.safety import ToolSafety, patterns
from mcp_supervisor.proxy.session import RETRY_MAX_SPAWN, ProxySession

log = get_logger("mcp_supervisor.proxy")
SWEEP_EVERY = 60.0


class TooManySessions(Exception):
    pass


@dataclass
class ServerProxy:
    """Everything the proxy keeps for one supervised server."""

    name: str
    safety: ToolSafety
    stats: Stats = field(default_factory=Stats)
    modern: ProxySession | None = None
    sessions: dict[str, ProxySession] = field(default_factory=dict)

    restoring: set[int] = field(default_factory=set)
    """Sessions between a backend loss and the answer to every call it held (ids of the objects)."""
    before: Stats | None = None
    started: float = 0.0

    def all_sessions(self) -> list[ProxySession]:
        return list(self.sessions.values()) + ([self.modern] if self.modern is not None else [])


class ProxyService:
    def __init__(self, config: Callable[[], Config], status: Callable[[], dict[str, Any]],
                 bus: EventBus | None = None, *,
                 limits: Callable[[str], tuple[float, str] | None] | None = None) -> None:
        self._config = config
        self._status = status
        self._limits = limits
        """A server's rate limit as the supervisor knows it (until, on the loop's clock; its words)."""
        self._bus = bus
        self.servers: dict[str, ServerProxy] = {}
        self._indexed: Config | None = None
        self._by_name: dict[str, ServerConfig] = {}
        self._http: aiohttp.ClientSession | None = None
        self.unauthorized = 0
        self.rejected = 0
        self._closing: set[asyncio.Task[None]] = set()

    # --- lookups -----------------------------------------------------------------------------

    def server_config(self, name: str) -> ServerConfig | None:
        config = self._config()
        if config is not self._indexed:  # once per config (a reload makes a new one), not per request
            self._indexed, self._by_name = config, {s.name: s for s in config.servers}
        return self._by_name.get(name)

    def known_names(self) -> list[str]:
        return sorted(s.name for s in self._config().servers)

    def _proxy(self, server: ServerConfig) -> ServerProxy:
        proxy = self.servers.get(server.name)
        if proxy is None:
            proxy = self.servers[server.name] = ServerProxy(server.name, ToolSafety(patterns(server.retry_tools)))
        else:
            proxy.safety.retry_patterns = patterns(server.retry_tools)  # a reload may change them
        return proxy

    @property
    def max_body(self) -> int:
        return self._config().proxy.max_body

    def session_count(self) -> int:
        return sum(len(p.sessions) for p in self.servers.values())

    def state_text(self, name: str) -> str:
        """'its state is backoff: crashed (killed by SIGKILL)': what the client is told past the hold."""
        entry = next((s for s in self._status().get("servers", []) if s.get("name") == name), None)
        if entry is None:
            return "it is no longer supervised"
        reason = entry.get("reason") or entry.get("message") or ""
        return f"its state is {entry.get('state')}" + (f": {reason}" if reason else "")

    # --- sessions ----------------------------------------------------------------------------

    def _session(self, server: ServerConfig, era: str, session_id: str = "") -> ProxySession:
        proxy = self._proxy(server)
        hold = self._config().proxy.hold
        core = SessionCore(era=era, server=server.name, hold=hold, safety=proxy.safety, stats=proxy.stats)
        session = ProxySession(core, self._link_factory(server), lambda: self.state_text(server.name), session_id,
                               self._episode)
        if self._limits is not None:
            limits, name = self._limits, server.name
            session.limits = lambda: limits(name)
        if server.transport == "stdio":
            session.retry_max = RETRY_MAX_SPAWN
            session.standby_wanted = server.standby > 0
        return session

    def _episode(self, session: ProxySession, restoring: bool) -> None:
        """A server's restart as the proxy lived it: from the first session that lost its backend
        to the last held call answered; then one ``proxy`` event for the record: "3 calls held
        0.6 s during the restart, 0 failed"."""
        proxy = self.servers.get(session.core.server)
        if proxy is None:
            return
        now = asyncio.get_running_loop().time()
        if restoring:
            if not proxy.restoring:
                proxy.before = Stats(**vars(proxy.stats))
                proxy.stats.max_held = 0.0
                proxy.started = now
            proxy.restoring.add(id(session))
            return
        proxy.restoring.discard(id(session))
        if proxy.restoring or proxy.before is None or self._bus is None:
            return
        before, proxy.before = proxy.before, None
        data = {
            "event": "restored",
            "held": proxy.stats.held - before.held,
            "retried": proxy.stats.retried - before.retried,
            "failed": proxy.stats.failed - before.failed,
            "max_held_s": round(proxy.stats.max_held, 3),
            "duration_s": round(now - proxy.started, 3),
            "reason": session.last_loss,
        }
        proxy.stats.max_held = max(proxy.stats.max_held, before.max_held)
        self._bus.publish(Event(kind="proxy", server=proxy.name, data=data))

    def new_legacy(self, server: ServerConfig) -> ProxySession:
        if self.session_count() >= self._config().proxy.max_sessions:
            raise TooManySessions(f"{self._config().proxy.max_sessions} proxy sessions are open ([proxy] max_sessions)")
        session = self._session(server, "legacy", secrets.token_hex(16))
        self._proxy(server).sessions[session.id] = session
        return session

    def internal_session(self, server: ServerConfig) -> ProxySession:
        """A handshake-era session the proxy itself uses (deep checks); not a client's, not counted."""
        return self._session(server, "legacy")

    def legacy(self, name: str, session_id: str) -> ProxySession | None:
        proxy = self.servers.get(name)
        return proxy.sessions.get(session_id) if proxy is not None else None

    def modern(self, server: ServerConfig) -> ProxySession:
        proxy = self._proxy(server)
        if proxy.modern is None or proxy.modern.closed:
            proxy.modern = self._session(server, "modern")
        return proxy.modern

    async def drop(self, name: str, session_id: str) -> bool:
        proxy = self.servers.get(name)
        session = proxy.sessions.pop(session_id, None) if proxy is not None else None
        if session is None:
            return False
        await session.close()
        return True

    def forget_failed(self, session: ProxySession) -> None:
        """A session whose handshake never succeeded holds nothing worth keeping."""
        for proxy in self.servers.values():
            if proxy.sessions.get(session.id) is session:
                del proxy.sessions[session.id]
                task = asyncio.ensure_future(session.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    # --- backend links -----------------------------------------------------------------------

    def _link_factory(self, server: ServerConfig) -> Callable[[OnMessage, OnLost], BackendLink]:
        def make(on_message: OnMessage, on_lost: OnLost) -> BackendLink:
            current = self.server_config(server.name) or server  # a reload may have moved it
            http = self._client()
            if current.transport == "stdio":
                from mcp_supervisor.proxy.stdio_link import StdioLink

                return StdioLink(current, self._config().state_dir, on_message, on_lost)
            auth = link_auth(current)
            if current.transport == "sse":
                return SseLink(current.url or "", http, current.headers, on_message, on_lost, auth)
            return HttpLink(current.url or "", http, current.headers, on_message, on_lost, auth)

        return make

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60.0)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0)
            # no cookies (a backend's cookie must not travel to another job's call), nothing from the environment
            self._http = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                               cookie_jar=aiohttp.DummyCookieJar())
        return self._http

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Wake a server's sessions when something happens to it (a restart ends their wait
        sooner than their retry timer would), and drop sessions idle past ``session_idle``."""
        if self._bus is None:
            return
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + SWEEP_EVERY
        with self._bus.subscription() as queue:
            while True:
                with contextlib.suppress(TimeoutError):
                    event = await asyncio.wait_for(queue.get(), max(0.0, next_sweep - loop.time()))
                    proxy = self.servers.get(event.server or "")
                    if proxy is not None and event.kind in ("state", "probe", "action_done", "process_exit"):
                        for session in proxy.all_sessions():
                            session.wake()
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + SWEEP_EVERY
                    await self.sweep(loop.time())

    async def sweep(self, now: float) -> None:
        idle = self._config().proxy.session_idle
        for proxy in self.servers.values():
            for session_id, session in list(proxy.sessions.items()):
                if now - session.last_used > idle and not session.core.calls:
                    await self.drop(proxy.name, session_id)

    async def close(self) -> None:
        for proxy in self.servers.values():
            for session in proxy.all_sessions():
                await session.close("the supervisor is stopping")
            proxy.sessions.clear()
            proxy.modern = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    def figures(self) -> dict[str, Any]:
        """For /metrics and status: sessions open and calls held, retried and failed per server."""
        return {
            "unauthorized": self.unauthorized,
            "rejected": self.rejected,
            "servers": {
                name: {"sessions": len(p.sessions), "held": p.stats.held, "retried": p.stats.retried,
                       "failed": p.stats.failed, "held_seconds": round(p.stats.held_seconds, 3),
                       "max_held": round(p.stats.max_held, 3),
                       "backend_pids": [pid for x in p.all_sessions() if (pid := x.backend_pid) is not None],
                       "standbys": [x.standby_state for x in p.all_sessions() if x.standby_state is not None],
                       "standby_pids": [pid for x in p.all_sessions() if (pid := x.standby_pid) is not None]}
                for name, p in self.servers.items()
            },
        }
