"""Following the Docker engine's events, so a dead container is noticed at once, not at the next tick.

Why apart from the supervisor: it is one long-lived stream with its own reconnect rule; the
supervisor only says which containers to follow and what to do when one of them has news.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mcp_supervisor.logging import get_logger

log = get_logger("mcp_supervisor.supervisor")

TRIGGERS = ("die", "oom", "kill", "stop", "unhealthy", "health_status: unhealthy", "destroy")
"""Actions after which the container is checked at once."""


def event_facts(event: Any) -> tuple[str | None, str]:
    """(container name, action) of an engine event given as a dict or an object."""
    def get(key: str) -> Any:
        return event.get(key) if isinstance(event, dict) else getattr(event, key, None)

    return get("name") or get("container"), str(get("action") or get("status") or get("kind") or "")


def is_trigger(action: str) -> bool:
    return any(action.startswith(t) for t in TRIGGERS) or "unhealthy" in action


class DockerEvents:
    """One task following the engine's events for the configured containers."""

    def __init__(self, docker: Callable[[], Awaitable[Any]], on_event: Callable[[Any], None]) -> None:
        self._docker = docker
        self._on_event = on_event
        self._task: asyncio.Task[None] | None = None

    def restart(self, tg: asyncio.TaskGroup | None, names: list[str]) -> None:
        """Follow ``names`` from now on (none: stop following)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if names and tg is not None:
            self._task = tg.create_task(self._follow(names), name="docker-events")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _follow(self, names: list[str]) -> None:
        """Follow the engine's events; ``since`` makes it replay whatever happened while the
        stream was not yet (or no longer) connected, so a death is never missed."""
        since = time.time()
        while True:
            try:
                docker = await self._docker()
                async for event in docker.events(names, since=since):
                    since = max(since, time.time() - 1.0)  # a replayed duplicate only costs a check
                    self._on_event(event)
                log.info("docker event stream ended; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("docker event stream failed; retrying in 2s", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(2.0)
