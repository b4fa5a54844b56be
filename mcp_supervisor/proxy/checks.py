"""Deep checks (``[[servers.checks]]``): a real ``tools/call`` with an expected answer, on a schedule.

Why: ``tools/list`` passes while every real call fails when the trouble is behind the server (an
expired upstream token, a dead database). A failed check is the failure class ``check`` with the
tool's own error text; an auth-shaped one (401, "token expired", ...) is ``auth``, so it goes to
``needs_human`` like a 401 and is never "fixed" by restarts. The checks run through a session the
proxy owns for that server (``judge`` is pure; ``DeepChecks`` the schedule). A check that cannot
reach the server says nothing: the probes already report that, and a stale check failure must
not keep a recovered server down.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from mcp_supervisor.config import DeepCheck, ServerConfig
from mcp_supervisor.events import Event
from mcp_supervisor.health.model import FailureClass, ProbeKind, ProbeResult
from mcp_supervisor.logging import get_logger
from mcp_supervisor.probes.ratelimit import says_rate_limited
from mcp_supervisor.proxy.service import ProxyService
from mcp_supervisor.proxy.session import ProxySession
from mcp_supervisor.proxy.wire import BACKEND_UNAVAILABLE, Message

log = get_logger("mcp_supervisor.proxy")
AUTH_SHAPED = re.compile(
    r"\b(401|403|unauthori[sz]ed|forbidden|invalid[_ -]?(?:token|credentials|api[_ -]?key)|"
    r"(?:token|credentials?)\s+(?:has\s+|have\s+)?(?:expired|revoked)|expired\s+token|"
    r"authentication\s+(?:failed|required)|not\s+authenticated|access\s+denied)\b", re.IGNORECASE)
RETRY_FAILED = 10.0
"""A failed check is repeated at least this often, so a fixed upstream heals the server soon."""
IDLE_LOOK = 5.0
"""With nothing due the schedule looks again after this long (a reload may add checks): no busy loop."""
CLIENT_INFO = {"name": "mcp-supervisor-deep-check", "version": "1"}


def answer_text(answer: Message) -> str:
    if isinstance(answer.get("error"), dict):
        return str(answer["error"].get("message", ""))
    result = answer.get("result") if isinstance(answer.get("result"), dict) else {}
    content = result.get("content") if isinstance(result, dict) else None
    parts = [str(c.get("text", "")) for c in content or [] if isinstance(c, dict)]
    return "".join(parts)


def judge(check: DeepCheck, answer: Message) -> tuple[FailureClass | None, str]:
    """(None, text) when the answer is what the check expects, else (class, why)."""
    text = answer_text(answer)
    if "error" in answer:
        why = f"the server refused the call: {text}"
    else:
        result = answer.get("result") if isinstance(answer.get("result"), dict) else {}
        is_error = bool(result.get("isError")) if isinstance(result, dict) else False
        if is_error != check.is_error:
            why = f"the tool answered with an error: {text}" if is_error else f"the tool did not fail as expected: {text}"
        elif check.expect is not None and not re.search(check.expect, text):
            why = f"the answer does not match {check.expect!r}: {text}"
        else:
            return None, text
    cls = FailureClass.AUTH if AUTH_SHAPED.search(text) else FailureClass.CHECK
    if says_rate_limited(text):  # "rate limit exceeded" in a tool result: up, held back, never restarted
        return FailureClass.RATE_LIMITED, f"rate limited (deep check {check.tool}): {text[:300]}"
    return cls, f"deep check {check.tool}: {why[:500]}"


class DeepChecks:
    def __init__(self, service: ProxyService, supervisor: Any) -> None:
        self._service = service
        self._supervisor = supervisor
        self._sessions: dict[str, ProxySession] = {}
        self._due: dict[tuple[str, int], float] = {}
        self._running: dict[tuple[str, int], asyncio.Task[None]] = {}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                now = loop.time()
                wake = now + IDLE_LOOK
                for server in self._supervisor.config.servers:
                    for index, check in enumerate(server.checks):
                        key = (server.name, index)
                        task = self._running.get(key)
                        due = self._due.get(key, 0.0)
                        if (task is None or task.done()) and now >= due:
                            self._running[key] = asyncio.ensure_future(self._check(server, index, check))
                        else:
                            wake = min(wake, max(due, now + 0.25))
                await asyncio.sleep(wake - now)
        finally:
            for task in self._running.values():
                task.cancel()
            for session in self._sessions.values():
                await session.close("the supervisor is stopping")

    async def _check(self, server: ServerConfig, index: int, check: DeepCheck) -> None:
        loop = asyncio.get_running_loop()
        verdict: FailureClass | None = None
        started = loop.time()
        try:
            answer = await asyncio.wait_for(self._call(server, check), check.timeout)
        except (TimeoutError, OSError):
            answer = None
        if answer is None or (isinstance(answer.get("error"), dict) and answer["error"].get("code") == BACKEND_UNAVAILABLE):
            self._due[(server.name, index)] = loop.time() + min(check.interval, RETRY_FAILED)
            return  # the server is not there: the probes say so; this check has no verdict
        verdict, text = judge(check, answer)
        latency = (loop.time() - started) * 1000.0
        runner = self._supervisor.runners.get(server.name)
        if runner is not None:
            failure = None if verdict is None else ProbeResult(ok=False, failure=verdict, latency_ms=latency,
                                                                message=text, kind=ProbeKind.TOOLS)
            runner.check_result(failure)
        self._supervisor.bus.publish(Event(kind="check", server=server.name, data={
            "tool": check.tool, "ok": verdict is None, "failure_class": str(verdict) if verdict else None,
            "detail": "" if verdict is None else text, "latency_ms": round(latency, 1)}))
        delay = check.interval if verdict is None else min(check.interval, RETRY_FAILED)
        self._due[(server.name, index)] = loop.time() + delay

    async def _call(self, server: ServerConfig, check: DeepCheck) -> Message:
        session = await self._session(server)
        message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": check.tool, "arguments": dict(check.arguments)}}
        return await self._ask(session, message)

    async def _session(self, server: ServerConfig) -> ProxySession:
        """The proxy's own handshake-era session with the server, opened once and kept."""
        session = self._sessions.get(server.name)
        if session is not None and not session.closed and session.core.init_result is not None:
            return session
        if session is not None:
            await session.close()
        session = self._service.internal_session(server)
        self._sessions[server.name] = session
        answer = await self._ask(session, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": CLIENT_INFO}})
        if "error" in answer:
            del self._sessions[server.name]
            await session.close()
            raise OSError(answer_text(answer))
        return session

    @staticmethod
    async def _ask(session: ProxySession, message: Message) -> Message:
        key, queue = session.request(message)
        try:
            while True:
                answer, final = await queue.get()
                if final:
                    return answer
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                session.client_gone(key)
            raise
