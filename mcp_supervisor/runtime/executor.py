"""The executor: performs one recovery action and says whether it worked.

Why it returns ``(ok, detail)`` and never raises: the health machine decides what happens next
from the outcome (next rung, backoff, needs_human), so every failure must come back to it as an
outcome, not disappear as an exception in a task nobody awaits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

from mcp_supervisor.config import ServerConfig
from mcp_supervisor.health.model import EnterFallback, RecoveryAction, Recreate, Restart, RestoreConfig

if TYPE_CHECKING:
    from mcp_supervisor.actuators.container import DockerActuator


class _Restartable(Protocol):
    async def restart(self) -> Any: ...


class _Vault(Protocol):
    async def restore(self, name: str, snapshot_id: str | None = None, to: Any = None) -> Any: ...


Outcome = tuple[bool, str]


def _judge(value: Any, what: str) -> Outcome:
    """Actuators may return None, a bool, or a result object with ``ok``; all mean the same here."""
    if value is False:
        return False, f"{what} failed"
    ok = getattr(value, "ok", True) if not isinstance(value, bool | str | dict) else True
    if isinstance(value, dict):
        ok = bool(value.get("ok", True))
    detail = getattr(value, "message", None) or (value.get("message") if isinstance(value, dict) else None)
    return bool(ok), str(detail or (f"{what} done" if ok else f"{what} failed"))


class Executor:
    """Maps actions to actuator, vault and HTTP calls for one supervisor."""

    def __init__(
        self,
        docker: Callable[[], Awaitable[DockerActuator | None]],
        vault: _Vault | None,
        http: Callable[[], Awaitable[aiohttp.ClientSession]],
    ) -> None:
        self._docker = docker
        self._vault = vault
        self._http = http

    async def execute(self, server: ServerConfig, action: RecoveryAction, process: _Restartable | None) -> Outcome:
        try:
            if isinstance(action, Restart):
                return await self._restart(server, process)
            if isinstance(action, RestoreConfig):
                return await self._restore(server, process)
            if isinstance(action, Recreate):
                return await self._recreate(server)
            if isinstance(action, EnterFallback):
                return await self.check_fallback(server)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"[:300]
        return False, f"unknown action {type(action).__name__}"

    async def _restart(self, server: ServerConfig, process: _Restartable | None) -> Outcome:
        if process is not None:
            return _judge(await process.restart(), "restart")
        if server.container:
            docker = await self._docker()
            if docker is None:
                return False, "no Docker engine configured (set DOCKER_HOST or [docker] host)"
            return _judge(await docker.restart(server.container), f"restart of container {server.container}")
        return False, "not managed: the supervisor has no process or container to restart (set managed = true or container)"

    async def _restore(self, server: ServerConfig, process: _Restartable | None) -> Outcome:
        if self._vault is None or not server.config:
            return False, "no backup to restore from (the server names no [[configs]] entry or no backup location is set)"
        ok, detail = _judge(await self._vault.restore(server.config), f"restore of config {server.config}")
        if not ok:
            return ok, detail
        if process is None and not server.container:
            return True, f"{detail}; nothing to restart (not managed)"
        ok, restart_detail = await self._restart(server, process)
        return ok, f"{detail}; {restart_detail}"

    async def _recreate(self, server: ServerConfig) -> Outcome:
        if not server.container:
            return False, "recreate needs a container (set container = \"name\")"
        docker = await self._docker()
        if docker is None:
            return False, "no Docker engine configured (set DOCKER_HOST or [docker] host)"
        return _judge(await docker.recreate(server.container), f"recreate of container {server.container}")

    async def check_fallback(self, server: ServerConfig) -> Outcome:
        """A plain GET of the direct-API URL: the job can continue only if the API itself answers."""
        fallback = server.fallback
        if fallback is None:
            return False, "no fallback configured (add fallback = { url = ..., expect_status = 200 })"
        session = await self._http()
        try:
            async with session.get(
                fallback.url,
                headers=fallback.headers,
                timeout=aiohttp.ClientTimeout(total=fallback.timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
        except TimeoutError:
            return False, f"fallback URL did not answer within {fallback.timeout:g}s"
        except aiohttp.ClientError as exc:
            return False, f"fallback URL unreachable ({type(exc).__name__})"
        if status != fallback.expect_status:
            return False, f"fallback URL answered {status}, expected {fallback.expect_status}"
        return True, f"fallback URL answered {status}"
