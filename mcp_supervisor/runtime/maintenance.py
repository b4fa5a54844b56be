"""Maintenance windows applied to the servers: paused while the window lasts, resumed after.

Why a keeper that compares instead of reacting to each command: the windows live in the
notifier's book (stored in the record), the runners come and go with reloads, and the daemon may
restart in the middle of a window. So on every change (a window made or ended, a reload, and a
slow tick) the keeper makes the runners match the book: a server in a window is paused (no probes,
no healing), not required for readiness (``ServerRunner.maintenance``, in its view) and its time is recorded as
``maintenance``; when the window ends it is resumed (``starting``, probed at once), so healing
resumes by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from mcp_supervisor.events import Event
from mcp_supervisor.health.model import Command, State
from mcp_supervisor.logging import get_logger

log = get_logger("mcp_supervisor.maintenance")
_TICK = 5.0
_WAKE_KINDS = frozenset({"silence", "config", "daemon"})


class MaintenanceKeeper:
    def __init__(self, supervisor: Any, notifier: Any) -> None:
        self.supervisor = supervisor
        self.notifier = notifier

    async def run(self) -> None:
        await self.notifier.wait_ready()
        with self.supervisor.bus.subscription(kinds=_WAKE_KINDS) as queue:
            while True:
                await self.apply()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_TICK):
                        while (await queue.get()).kind not in _WAKE_KINDS:
                            pass

    async def apply(self) -> None:
        now = time.time()
        wanted = self.notifier.silences.maintenance(now)
        for name, runner in list(self.supervisor.runners.items()):
            window = wanted.get(name)
            mark = (window.id, window.ends_at, window.reason) if window is not None else None
            if mark == runner.maintenance and (mark is None or runner.state is State.PAUSED):
                continue
            before, runner.maintenance = runner.maintenance, mark
            data = dict(zip(("id", "until", "reason"), mark or before or ("", 0.0, ""), strict=True))
            if mark is not None:
                if runner.state is not State.PAUSED:
                    await self.supervisor.command(name, Command.PAUSE)
                runner.publish()  # readers see the window (status, readiness) now
                log.info("maintenance window", server=name, until=data["until"], reason=data["reason"])
                self.supervisor.bus.publish(Event("maintenance", name, {"event": "started", **data}))
                continue
            self.supervisor.bus.publish(Event("maintenance", name, {"event": "ended", **data}))
            if runner.state is State.PAUSED:
                await self.supervisor.command(name, Command.RESUME)  # healing resumes: probed at once
            runner.publish()
            log.info("maintenance window over", server=name)
