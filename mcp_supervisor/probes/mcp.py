"""MCP probes over stdio, Streamable HTTP and legacy SSE through the official SDK client.

Cost model (see DESIGN "Cost in the probing process"): WARM reuses a kept-open session (HTTP/SSE)
or a warm stdio instance and sends the lightest request the era has (``server/discover`` on
2026-07-28 connections, ``ping`` on handshake-era ones); COLD builds everything fresh (the path an
MCP client takes); TOOLS lists the tools on the kept-open session and checks ``expected_tools``.
A kept-open HTTP session that fails for any reason but a timeout is replaced at once and the
check retried (a restarted server answers 404/400 for the old session); a warm stdio instance that
died is reported ``crashed`` and respawned on the next probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar

from mcp import Client
from mcp_types import Tool

from mcp_supervisor.auth.registry import auth_hint
from mcp_supervisor.config import ServerConfig
from mcp_supervisor.health.model import FailureClass, ProbeKind, ProbeResult
from mcp_supervisor.probes.classify import Verdict, classify, is_refused, missing_tools, refused_verdict
from mcp_supervisor.probes.conn import Conn
from mcp_supervisor.probes.context import ProbeContext, probe_timeout
from mcp_supervisor.probes.contracts import Memo, fingerprint
from mcp_supervisor.probes.light import send as send_light
from mcp_supervisor.probes.ratelimit import limited_text
from mcp_supervisor.probes.refusal import is_refusal, port_refuses
from mcp_supervisor.probes.session import ConnectInfo, PhaseTimeout, SessionClosed
from mcp_supervisor.redact import REDACTOR, Redactor, server_secrets
from mcp_supervisor.spawn import Role, SpawnRefused, SpawnSpec, spec_for_server

T = TypeVar("T")
_log = logging.getLogger(__name__)

_MAX_TOOL_PAGES = 50
_REFUSED_PHASE = "handshake"
"""The phase the SDK's connect names for a refusal (its first request opens the connection)."""
_LIGHT_MISSES_MAX = 3
"""Light checks in a row that failed where the SDK's reconnect then succeeded: past this, the
server evidently does not take the raw request (an unusual implementation) and its warm checks go
through the SDK session; cheaper than a full reconnect on every probe, and still correct."""


async def _light_request(client: Client) -> None:
    """The cheapest round trip the negotiated era offers."""
    session = client.session
    if session.initialize_result is not None:
        await session.send_ping()
    else:
        await session.send_discover(client.protocol_version)


async def _tool_names(client: Client) -> list[Tool]:
    """Every page of ``tools/list`` (the tools themselves: their contracts are fingerprinted)."""
    names: list[Tool] = []
    cursor: str | None = None
    for _ in range(_MAX_TOOL_PAGES):
        page = await client.list_tools(cursor=cursor)
        names.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return names


class McpProber:
    """Probes one MCP server; keeps at most one warm connection; never raises but CancelledError."""

    def __init__(self, server: ServerConfig, context: ProbeContext) -> None:
        self.server = server
        self._context = context
        self._warm: Conn | None = None
        self._open: set[Conn] = set()
        self._refused: str | None = None
        self._redactor = Redactor(server_secrets(server))
        self._lock = asyncio.Lock()
        self._closed = False
        self._light_misses = 0
        self._contract_memo: Memo = {}
        self._refusing = False
        """The last check was refused (nobody listening): the next connect is a TCP connect first
        (``probes/refusal.py``), and only a port that accepts gets an SDK connect."""

    # ---- public ------------------------------------------------------------------------------

    async def probe(self, kind: ProbeKind) -> ProbeResult:
        started = time.perf_counter()
        if self.server.config_problem:
            return ProbeResult(
                ok=False,
                failure=FailureClass.CONFIG,
                kind=kind,
                message=f"not probed: {self.server.config_problem}",
                hint="import the file (supervisorctl-mcp import FILE) and review its commands, or run the "
                "supervisor as the file's owner" if self.server.config_problem.startswith("not run:") else
                f"fix the client file or restore it (supervisorctl-mcp restore {self.server.config}); "
                "the servers follow it once it reads again",
            )
        if self.server.missing_env:
            names = ", ".join(self.server.missing_env)
            return ProbeResult(
                ok=False,
                failure=FailureClass.CONFIG,
                kind=kind,
                message=f"not probed: unresolved variables in the config: {names}",
                hint=f"set {names} in the supervisor's environment (or fix the reference) and reload",
            )
        async with self._lock:
            if self._closed:
                return ProbeResult(ok=False, failure=FailureClass.CONFIG, kind=kind, message="prober is closed")
            try:
                if kind is ProbeKind.COLD:
                    result = await self._cold(kind, started)
                else:
                    result = await self._warm_check(kind, started)
            except asyncio.CancelledError:
                await self._abort()
                raise
            except Exception as exc:  # a prober bug must not kill the daemon's loop
                _log.exception("probe of %s failed unexpectedly", self.server.name)
                await self._drop_warm()
                return self._failed(kind, started, {}, Verdict(FailureClass.PROTOCOL,
                                                               f"probe error: {type(exc).__name__}"))
        return result

    @property
    def warm_pid(self) -> int | None:
        """Pid (= process group) of the warm stdio instance, if one is running."""
        conn = self._warm
        if conn is None or not conn.worker.alive:
            return None
        return conn.pid

    async def aclose(self) -> None:
        self._closed = True
        async with self._lock:
            await self._drop_warm()

    # ---- kinds -------------------------------------------------------------------------------

    async def _cold(self, kind: ProbeKind, started: float) -> ProbeResult:
        if self.server.transport != "stdio":
            return await self._cold_once(kind, started)
        async with self._cold_slot() as got:
            if got:
                return await self._cold_once(kind, time.perf_counter())
        # Every slot stayed busy for a whole timeout: a queue is not an outage. Check the warm
        # instance instead; the next cold probe gets its turn.
        result = await self._warm_check(ProbeKind.WARM, started, wait_for_slot=False)
        return replace(result, message=f"{result.message} (cold spawn deferred: spawn slots busy)")

    @asynccontextmanager
    async def _cold_slot(self) -> AsyncIterator[bool]:
        """A spawn slot from the context, waiting at most one timeout (False: none came free)."""
        slots = self._context.cold_slots
        try:
            async with asyncio.timeout(probe_timeout(self.server)):
                await slots.acquire()
        except TimeoutError:
            yield False
            return
        try:
            yield True
        finally:
            slots.release()

    async def _cold_once(self, kind: ProbeKind, started: float) -> ProbeResult:
        phases: dict[str, float] = {}
        if await self._still_refused():
            return self._failed(kind, started, phases, refused_verdict(_REFUSED_PHASE))
        conn = self._new_conn("probe")
        if isinstance(conn, Verdict):
            return self._failed(kind, started, phases, conn)
        try:
            info = await self._connect(conn, phases)
            if isinstance(info, Verdict):
                return self._failed(kind, started, phases, info)
            t0 = time.perf_counter()
            try:
                names = await conn.worker.run(_tool_names, phase="tools", timeout=probe_timeout(self.server))
            except Exception as exc:
                return self._failed(kind, started, phases, await self._verdict(conn, exc, "tools"))
            phases["tools"] = _ms(t0)
            return self._ok(kind, started, phases, info, names)
        finally:
            await conn.aclose()

    async def _warm_check(self, kind: ProbeKind, started: float, *, wait_for_slot: bool = True) -> ProbeResult:
        job: Callable[[Client], Awaitable[Any]] = _tool_names if kind is ProbeKind.TOOLS else _light_request
        phase = "tools" if kind is ProbeKind.TOOLS else "request"
        retry = self.server.transport != "stdio"
        phases: dict[str, float] = {}
        fresh = False
        light_missed = False
        while True:
            conn = self._warm
            if conn is not None and not conn.worker.alive and self.server.transport == "stdio":
                # the warm instance ended on its own since the last probe: that is a crash to
                # report; the next probe spawns a new one
                error = conn.worker.error or SessionClosed("warm instance ended")
                verdict = await self._verdict(conn, error, "request")
                self._warm = None
                if verdict.failure not in (FailureClass.CRASHED, FailureClass.OOM):
                    verdict = Verdict(FailureClass.CRASHED, _crash_text(conn), verdict.hint)
                return self._failed(kind, started, phases, verdict)
            if conn is None or not conn.worker.alive:
                await self._drop_warm()
                if await self._still_refused():
                    return self._failed(kind, started, phases, refused_verdict(_REFUSED_PHASE))
                made = self._new_conn("warm")
                if isinstance(made, Verdict):
                    return self._failed(kind, started, phases, made)
                conn = made
                if self.server.transport == "stdio" and wait_for_slot:
                    async with self._cold_slot():  # spawn anyway if no slot comes free in time
                        info = await self._connect(conn, phases)
                else:
                    info = await self._connect(conn, phases)
                if isinstance(info, Verdict):
                    await conn.aclose()
                    return self._failed(kind, started, phases, info)
                self._warm, fresh = conn, True
            t0 = time.perf_counter()
            use_light = kind is ProbeKind.WARM and not fresh and self._light_misses < _LIGHT_MISSES_MAX
            light = conn.light_request() if use_light else None
            if light is not None:
                try:
                    async with asyncio.timeout(probe_timeout(self.server)):
                        await send_light(self._context.light_session(), light)
                except TimeoutError:
                    verdict = await self._verdict(conn, PhaseTimeout(phase, probe_timeout(self.server)), phase)
                    await self._drop_warm()
                    return self._failed(kind, started, phases, verdict)
                except Exception as exc:  # 401, 404 (expired session), bad reply: the SDK says which
                    if is_refusal(exc):  # nobody listens: a fact, no SDK connect needed to learn it
                        await self._drop_warm(force=True)  # no goodbye (DELETE) to a closed port
                        return self._failed(kind, started, phases, refused_verdict(_REFUSED_PHASE))
                    if _log.isEnabledFor(logging.DEBUG):
                        _log.debug("light check of %s failed (%s); reconnecting", self.server.name,
                                   type(exc).__name__)
                    await self._drop_warm()
                    retry, light_missed = False, True
                    continue
                self._light_misses = 0
                phases[phase] = _ms(t0)
                return self._ok(kind, started, phases, conn.worker.info, None)
            try:
                value = await conn.worker.run(job, phase=phase, timeout=probe_timeout(self.server))
            except Exception as exc:
                if retry and not fresh and not isinstance(exc, TimeoutError):
                    await self._drop_warm()  # expired session / restarted server: reconnect once
                    retry = False
                    continue
                verdict = await self._verdict(conn, exc, phase)
                await self._drop_warm()
                return self._failed(kind, started, phases, verdict)
            phases[phase] = _ms(t0)
            names = value if kind is ProbeKind.TOOLS else None
            if light_missed:
                self._light_misses += 1
                if self._light_misses == _LIGHT_MISSES_MAX:
                    _log.info("the light warm check of %s keeps failing where the SDK succeeds; "
                              "its warm checks use the SDK session from now on", self.server.name)
            return self._ok(kind, started, phases, conn.worker.info, names)

    # ---- helpers -----------------------------------------------------------------------------

    async def _still_refused(self) -> bool:
        """A server that refused last time gets one TCP connect before any SDK connect (``refusal.py``)."""
        if not self._refusing or self.server.transport == "stdio" or not self._context.direct:
            return False
        return bool(await port_refuses(self.server.url or "", probe_timeout(self.server)))

    async def _connect(self, conn: Conn, phases: dict[str, float]) -> ConnectInfo | Verdict:
        try:
            if self.server.transport == "stdio":  # spawns take cold slots instead
                info = await conn.start()
            else:  # the deadline starts inside conn.start(), when the turn has come
                async with self._context.handshake_turn(probe_timeout(self.server)):
                    info = await conn.start()
        except Exception as exc:
            phase = exc.phase if isinstance(exc, PhaseTimeout) else conn.worker.phase.name
            phases.update(conn.worker.info.phases_ms)
            return await self._verdict(conn, exc, phase)
        phases.update(info.phases_ms)
        return info

    async def _verdict(self, conn: Conn, exc: BaseException, phase: str) -> Verdict:
        await conn.aclose(force=True)  # the process is gone, so its stderr is complete
        info = conn.exit_info
        if info is not None and info.oom:  # the kernel ended it: not the server's own crash
            return Verdict(FailureClass.OOM, f"server {info.text}",
                           "raise limits.memory of this server, or find what makes it grow")
        verdict = classify(exc, conn.obs, phase=phase)
        oauth_fix = auth_hint(self.server) if verdict.failure is FailureClass.AUTH else None
        return replace(verdict, hint=oauth_fix) if oauth_fix else verdict

    def _new_conn(self, role: Role) -> Conn | Verdict:
        spec: SpawnSpec | None = None
        if self.server.transport == "stdio":
            try:
                spec = spec_for_server(self.server, state_dir=self._context.state_dir, role=role)
            except SpawnRefused as exc:  # says why and what to set; said once in the log too
                if str(exc) != self._refused:
                    self._refused = str(exc)
                    _log.warning("stdio server cannot start: %s", exc)
                return Verdict(FailureClass.CONFIG, str(exc),
                               "set 'user' (and 'group') of this server, or fix the permissions named, then: "
                               f"supervisorctl-mcp probe {self.server.name}")
            self._refused = None
        conn = Conn(self.server, self._context, spec)
        self._open.add(conn)
        conn.on_close = self._open.discard
        return conn

    async def _abort(self) -> None:
        """The probe was cancelled: stop every connection it had open before the cancel goes on."""
        self._warm = None
        for conn in list(self._open):
            try:
                await conn.aclose(force=True)
            except asyncio.CancelledError:
                continue
            except Exception:  # best effort; the next probe starts clean anyway
                continue

    async def _drop_warm(self, *, force: bool = False) -> None:
        conn, self._warm = self._warm, None
        if conn is not None:
            await conn.aclose(force=force)

    def _ok(
        self, kind: ProbeKind, started: float, phases: dict[str, float], info: ConnectInfo, tools: list[Tool] | None
    ) -> ProbeResult:
        self._refusing = False
        names = [tool.name for tool in tools] if tools is not None else None
        who = " ".join(x for x in (info.server_name, info.server_version) if x) or "server"
        parts = [f"{who} answered", f"protocol {info.protocol_version}"]
        degraded: str | None = None
        if names is not None:
            parts.append(f"{len(names)} tools")
            missing = missing_tools(self.server.probe.expected_tools, names)
            if missing:
                degraded = f"missing expected tools: {', '.join(missing)}"
                parts.append(degraded)
        return ProbeResult(
            ok=True,
            kind=kind,
            latency_ms=_ms(started),
            message=", ".join(parts),
            phases_ms={k: round(v, 3) for k, v in phases.items()},
            degraded=degraded,
            server_name=info.server_name,
            server_version=info.server_version,
            protocol_version=info.protocol_version,
            tool_count=len(names) if names is not None else None,
            tools=fingerprint(tools, self._contract_memo) if tools is not None else None,
        )

    def _failed(self, kind: ProbeKind, started: float, phases: dict[str, float], verdict: Verdict) -> ProbeResult:
        self._refusing = is_refused(verdict)
        message = verdict.message
        if verdict.failure is FailureClass.RATE_LIMITED:
            message = limited_text(verdict.message, verdict.retry_after, self.server.probe.interval)
        return ProbeResult(
            ok=False,
            failure=verdict.failure,
            kind=kind,
            latency_ms=_ms(started),
            message=self._redact(message),
            phases_ms={k: round(v, 3) for k, v in phases.items()},
            hint=self._redact(verdict.hint) if verdict.hint else None,
            retry_after=verdict.retry_after,
        )

    def _redact(self, text: str) -> str:
        """Blank out secrets a server's stderr or an error text may echo (the shared redactor's rules)."""
        return REDACTOR.text(self._redactor.text(text))


def _crash_text(conn: Conn) -> str:
    info = conn.exit_info
    if info is not None and info.oom:
        return f"warm instance {info.text}"
    tail = conn.obs.stderr_tail.strip()
    return f"warm instance exited between probes; stderr: {tail}" if tail else "warm instance exited between probes"


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000
