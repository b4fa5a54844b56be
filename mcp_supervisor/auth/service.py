"""The token owners kept in step with the config: one per server with ``auth``, replaced on change.

Why replace rather than update: a changed ``auth`` table (a new secret in the ``${file:...}``, a
new client) is a new client; its old token and any refusal recorded for the old one must go. A
server whose entry is unchanged keeps its owner and token across a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from mcp_supervisor.auth.owner import TokenOwner
from mcp_supervisor.auth.registry import register, unregister
from mcp_supervisor.auth.store import EncryptedTokenStorage, token_key
from mcp_supervisor.config import Config, ServerConfig
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.logging import get_logger

log = get_logger("mcp_supervisor.auth")


class AuthService:
    def __init__(self, config: Callable[[], Config], bus: EventBus | None = None, interval: float = 1.0) -> None:
        self._config = config
        self._bus = bus
        self._interval = interval
        self._running: dict[str, tuple[tuple[object, ...], TokenOwner, asyncio.Task[None]]] = {}

    @staticmethod
    def _identity(server: ServerConfig) -> tuple[object, ...]:
        return (server.url, server.auth)

    async def run(self) -> None:
        try:
            while True:
                await self.reconcile()
                await asyncio.sleep(self._interval)
        finally:
            for name in list(self._running):
                await self._stop(name)

    async def first_tokens(self, timeout: float) -> None:
        """Start the owners and wait (bounded) for their first tokens, so no first probe goes out
        without one and turns a server needs_human at start-up."""
        await self.reconcile()
        waits = [asyncio.ensure_future(owner.settled.wait()) for _, owner, _ in self._running.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for waiting in pending:
                waiting.cancel()

    async def reconcile(self) -> None:
        config = self._config()
        wanted = {s.name: s for s in config.servers if s.auth is not None and s.url}
        for name in list(self._running):
            server = wanted.get(name)
            if server is None or self._identity(server) != self._running[name][0]:
                await self._stop(name)
        key: bytes | None = None
        for name, server in wanted.items():
            if name in self._running:
                continue
            if key is None:
                key = token_key(config.state_dir, config.backup.key_file)
            storage = EncryptedTokenStorage(Path(config.state_dir), name, key)
            owner = TokenOwner(server, storage, alert=self._alerter(name))
            register(name, owner)
            task = asyncio.create_task(owner.run(), name=f"oauth owner {name}")
            self._running[name] = (self._identity(server), owner, task)
            log.info("auth: token owner started", server=name, grant=server.auth.grant if server.auth else None)

    def _alerter(self, name: str) -> Callable[[str, dict[str, object]], None]:
        def alert(what: str, data: dict[str, object]) -> None:
            if self._bus is not None:
                self._bus.publish(Event(kind="notify", server=name,
                                        data={"notify": what, "severity": "warning", **data}))
        return alert

    async def _stop(self, name: str) -> None:
        _, owner, task = self._running.pop(name)
        unregister(name, owner)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await owner.aclose()
