"""One server's recovery actions: at most one at a time, each announced and its outcome reported.

Why a slot of its own: a restart takes seconds while probes, exits and commands keep arriving; the
action runs in its own task so the runner's loop stays responsive, and everything that must
happen around it (the ``action``/``action_done`` events, the log lines, the outcome fed back to
the health machine through ``on_done``) happens here in one place, whatever way it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from mcp_supervisor.config import ServerConfig
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.health.model import EnterFallback, RecoveryAction, Recreate, Restart, RestoreConfig
from mcp_supervisor.runtime.executor import Executor

RUNG_NAMES = {Restart: "restart", RestoreConfig: "restore_config", Recreate: "recreate", EnterFallback: "fallback"}


def _clock() -> float:
    return asyncio.get_running_loop().time()


class ActionSlot:
    """Runs a server's recovery actions one at a time (a second one is queued, which the machine
    never asks for) and reports each outcome with ``on_done(action, ok, detail)``."""

    def __init__(
        self,
        server: ServerConfig,
        *,
        bus: EventBus,
        executor: Executor,
        counters: dict[str, int],
        log: Any,
        process: Callable[[], Any],
        delay: Callable[[], float | None],
        on_start: Callable[[RecoveryAction], None],
        on_done: Callable[[RecoveryAction, bool, str], None],
    ) -> None:
        self.server = server
        self._bus = bus
        self._executor = executor
        self._counters = counters
        self._log = log
        self._process = process
        self._delay = delay
        self._on_start = on_start
        self._on_done = on_done
        self._task: asyncio.Task[None] | None = None
        self._pending: deque[RecoveryAction] = deque()
        self._closed = False

    @property
    def running(self) -> bool:
        return self._task is not None

    def submit(self, action: RecoveryAction) -> None:
        if self._closed:
            return
        if self._task is not None:
            self._log.error("second recovery action while one runs; queued", action=type(action).__name__)
            self._pending.append(action)
            return
        self._task = asyncio.get_running_loop().create_task(self._perform(action), name=f"action:{self.server.name}")

    async def wait_idle(self) -> None:
        """Until no action runs (an on-demand probe must not race a restart)."""
        while (task := self._task) is not None and not task.done():
            await asyncio.wait({task})

    async def close(self) -> None:
        """Cancel what runs; outcomes after this are not reported."""
        self._closed = True
        self._pending.clear()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _perform(self, action: RecoveryAction) -> None:
        rung = RUNG_NAMES.get(type(action), type(action).__name__.lower())
        attempt = action.attempt
        delay = self._delay()
        self._counters["actions"] += 1
        self._log.warning("action", rung=rung, attempt=attempt, delay=delay)
        self._bus.publish(
            Event(kind="action", server=self.server.name, data={"rung": rung, "attempt": attempt, "delay": delay})
        )
        started = _clock()
        ok, detail = False, "cancelled"
        self._on_start(action)
        try:
            ok, detail = await self._executor.execute(self.server, action, self._process())
        finally:
            duration = _clock() - started
            self._task = None
            if not self._closed:
                self._log.log(20 if ok else 30, "action done", rung=rung, attempt=attempt, ok=ok,
                              duration_s=round(duration, 3), detail=detail)
                self._bus.publish(
                    Event(kind="action_done", server=self.server.name,
                          data={"rung": rung, "attempt": attempt, "ok": ok, "detail": detail,
                                "duration": round(duration, 4), "delay": delay})
                )
                self._on_done(action, ok, detail)
                if self._pending and self._task is None:
                    self.submit(self._pending.popleft())
