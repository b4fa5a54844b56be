"""The notifier's delivery loop: per channel, the head of each incident's queue, retried with care.

Why apart from the intake (``notify/service.py``): the intake turns events into stored messages,
this loop only sends what is stored. It sends the head of each incident's queue per channel, marks
it sent only after a 2xx, and on a failure holds that channel back: exponential backoff for
connection errors and 5xx, exactly the ``Retry-After`` for a 429, 1 message a second per channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from mcp_supervisor.config import Config
from mcp_supervisor.logging import Redactor, get_logger
from mcp_supervisor.notify.channels import Channel, Delivery
from mcp_supervisor.notify.outbox import Outbox, Row
from mcp_supervisor.notify.policy import retry_delay
from mcp_supervisor.notify.sending import build_channels

log = get_logger("mcp_supervisor.notify")


class DeliveryLoop:
    """Mixed into ``NotifyService``, which owns the state below."""

    _config: Callable[[], Config]
    _clock: Callable[[], float]
    _rng: random.Random
    _redactor: Redactor
    _wake: asyncio.Event
    outbox: Outbox | None
    stats: Counter[tuple[str, str]]
    _channels: dict[str, Channel]
    _channel_errors: dict[str, str]
    _built_for: Any
    _blocked_until: dict[str, float]
    _failures: dict[str, int]
    _next_send: dict[str, float]

    counts: dict[str, int]

    async def _refresh_counts(self) -> None:
        if self.outbox is not None:
            self.counts = await asyncio.to_thread(self.outbox.counts)

    # --- delivery --------------------------------------------------------------------------------

    async def _ensure_channels(self) -> dict[str, Channel]:
        """(Re)build the channels when their settings changed (a reload); close the old ones."""
        config = self._config()
        key = (config.notify.slack, config.notify.apprise, config.slack)
        if key != self._built_for:
            await self._close_channels()
            self._channels, self._channel_errors = build_channels(config)
            self._built_for = key
            for problem in self._channel_errors.values():
                log.error("notification channel cannot run; its messages wait in the outbox", problem=problem)
        return self._channels

    async def _close_channels(self) -> None:
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.aclose()
        self._channels = {}
        self._built_for = None

    async def _deliver_loop(self) -> None:
        while True:
            self._wake.clear()
            outbox = self.outbox
            if outbox is None:
                return
            channels = await self._ensure_channels()
            now = self._clock()
            open_channels = {name for name in channels if self._held_until(name) <= now}
            rows = await asyncio.to_thread(outbox.due, now, open_channels)
            for row in rows:
                if self._held_until(row.channel) > self._clock():
                    continue  # this channel failed, or sent its one message of this second, earlier in this batch
                await self._deliver(outbox, channels[row.channel], row)
                # proactive pacing: Slack allows about one message per second per channel
                self._next_send[row.channel] = self._clock() + self._config().notify.pace
            if rows:
                await self._refresh_counts()
                continue
            next_at = await asyncio.to_thread(outbox.next_due_at, open_channels)
            candidates = [t for name in channels if (t := self._held_until(name)) > now]
            if next_at is not None:
                candidates.append(next_at)
            wait = min(candidates) - now if candidates else 60.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, min(wait, 60.0))):
                    await self._wake.wait()

    def _held_until(self, channel: str) -> float:
        return max(self._blocked_until.get(channel, 0.0), self._next_send.get(channel, 0.0))

    async def _deliver(self, outbox: Outbox, channel: Channel, row: Row) -> None:
        thread = None
        if channel.threads and row.role in ("followup", "resolution"):
            thread = await asyncio.to_thread(outbox.thread_root, row.channel, row.incident)
        try:
            result = await channel.deliver(row.notification, thread)
        except Exception as exc:  # a channel bug must not stop delivery to the others
            log.exception("notification channel raised")
            result = Delivery(ok=False, error=f"{type(exc).__name__}")
        now = self._clock()
        error = str(self._redactor.scrub(result.error))
        if result.ok:
            await asyncio.to_thread(outbox.mark_sent, row.id, now, result.remote_channel, result.ts)
            self._failures[row.channel] = 0
            self.stats[(row.channel, "sent")] += 1
            log.info("notification delivered", channel=row.channel, kind=row.notification.kind,
                     server=row.notification.server, attempts=row.attempts + 1)
            return
        if result.permanent:
            await asyncio.to_thread(outbox.mark_dead, row.id, error)
            self.stats[(row.channel, "rejected")] += 1
            log.error("notification rejected by the receiver; kept in the outbox as dead", channel=row.channel,
                      kind=row.notification.kind, status=result.status, error=error)
            return
        settings = self._config().notify
        failures = self._failures.get(row.channel, 0) + 1
        self._failures[row.channel] = failures
        if result.retry_after is not None:
            delay = result.retry_after
            self.stats[(row.channel, "rate_limited")] += 1
        else:
            delay = retry_delay(failures, settings.retry_initial, settings.retry_max, self._rng)
            self.stats[(row.channel, "retry")] += 1
        self._blocked_until[row.channel] = now + delay
        await asyncio.to_thread(outbox.mark_retry, row.id, now + delay, error)
        log.warning("notification not delivered; will retry", channel=row.channel, kind=row.notification.kind,
                    status=result.status, error=error, retry_in_s=round(delay, 2), failures=failures)
