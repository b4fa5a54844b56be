"""The notifier: bus events -> incident tracker -> durable outbox -> channels, with retries.

Two loops share one outbox. The intake turns ``state``/``notify``/vault/``report`` events into
notifications and commits them (with the tracker's state) before anything is sent. The delivery
loop sends the head of each incident's queue per channel, marks it sent only after a 2xx, and on
a failure holds that channel back: exponential backoff for connection errors and 5xx, exactly the
``Retry-After`` for a 429. So Slack being down for an hour, or the daemon being killed meanwhile,
delays messages but neither loses nor repeats them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from mcp_supervisor.config import Config
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.logging import Redactor, collect_secrets, get_logger
from mcp_supervisor.notify.advice import instruction_for
from mcp_supervisor.notify.channels import AppriseChannel, Channel, Delivery, SlackBot, SlackWebhook
from mcp_supervisor.notify.incidents import IncidentTracker, Notification, severity_rank
from mcp_supervisor.notify.outbox import Outbox, Row
from mcp_supervisor.notify.policy import quiet_until, retry_delay

log = get_logger("mcp_supervisor.notify")
_RELEVANT = frozenset({"state", "notify", "config", "backup", "backup_failed", "restore", "restore_failed", "report"})
_TICK = 5.0
_PRUNE_EVERY = 3600.0
OUTBOX_FILE = "outbox.sqlite3"


def targets(config: Config) -> dict[str, str]:
    """Configured channel name -> its min_severity (whether or not the channel can be built now)."""
    found: dict[str, str] = {}
    if config.notify.slack is not None:
        found["slack"] = config.notify.slack.min_severity
    elif config.slack.token and config.slack.channel:
        found["slack"] = "info"  # the older [slack] table: a bot token and a channel
    if config.notify.apprise is not None and config.notify.apprise.urls:
        found["apprise"] = config.notify.apprise.min_severity
    return found


def build_channels(config: Config) -> tuple[dict[str, Channel], dict[str, str]]:
    """The channels that can run now, and for the others why not (secret-free)."""
    channels: dict[str, Channel] = {}
    errors: dict[str, str] = {}
    slack = config.notify.slack
    if slack is not None:
        secret = slack.webhook_url or slack.token or ""
        if "${" in secret:
            errors["slack"] = ("the Slack secret references a variable or file that is not set "
                               f"({'webhook_url' if slack.webhook_url else 'token'} in [notify.slack]); "
                               "set it and run supervisorctl-mcp reload")
        elif slack.webhook_url:
            channels["slack"] = SlackWebhook(slack.webhook_url, slack.timeout)
        elif slack.token and slack.channel:
            channels["slack"] = SlackBot(slack.token, slack.channel, slack.base_url, slack.timeout)
    elif config.slack.token and config.slack.channel and "${" not in config.slack.token:
        channels["slack"] = SlackBot(config.slack.token, config.slack.channel, config.slack.base_url)
    if config.notify.apprise is not None and config.notify.apprise.urls:
        try:
            channels["apprise"] = AppriseChannel(config.notify.apprise.urls)
        except RuntimeError as exc:
            errors["apprise"] = str(exc)
    return channels, errors


class NotifyService:
    def __init__(
        self,
        config: Callable[[], Config],
        bus: EventBus,
        *,
        db_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self.db_path = Path(db_path) if db_path else Path(config().state_dir) / OUTBOX_FILE
        self.tracker = IncidentTracker(config().notify.flap_count, config().notify.flap_window)
        self.outbox: Outbox | None = None
        self.counts: dict[str, int] = {"pending": 0, "sent": 0, "dead": 0}
        self.stats: Counter[tuple[str, str]] = Counter()
        """(channel, outcome) -> deliveries; outcome is sent, retry, rate_limited or rejected."""
        self._redactor = Redactor()
        self._redacting_for: Config | None = None
        self._channels: dict[str, Channel] = {}
        self._channel_errors: dict[str, str] = {}
        self._built_for: Any = None
        self._blocked_until: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        # subscribe now, not when run() starts: the first state changes happen before that
        self._subscription = bus.subscription()
        self._queue: asyncio.Queue[Event] = self._subscription.__enter__()

    # --- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        outbox = await asyncio.to_thread(Outbox, self.db_path)
        self.outbox = outbox
        try:
            self.tracker.load_json(await asyncio.to_thread(outbox.load_state))
            await self._refresh_counts()
            self._ready.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._deliver_loop(), name="notify-deliver")
                tg.create_task(self._intake_loop(), name="notify-intake")
        finally:
            self._ready.clear()
            await self._close_channels()
            self.outbox = None
            await asyncio.to_thread(outbox.close)

    def close(self) -> None:
        """Stop listening to the bus (the daemon calls it once, at shutdown)."""
        self._subscription.__exit__(None, None, None)

    async def wait_ready(self) -> None:
        await self._ready.wait()

    # --- intake ----------------------------------------------------------------------------------

    async def _intake_loop(self) -> None:
        last_prune = 0.0
        while True:
            event: Event | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TICK):
                    event = await self._queue.get()
            now = self._clock()
            if event is not None and event.kind == "lagged":
                log.error("the notifier fell behind the event bus; some events were dropped")
            if event is not None and event.kind in _RELEVANT:
                await self.handle(event)
            flapped = self.tracker.tick(now)
            if flapped:
                await self._store(flapped, self.tracker.to_json())
            if now - last_prune >= _PRUNE_EVERY and self.outbox is not None:
                last_prune = now
                await asyncio.to_thread(self.outbox.prune, now - self._config().notify.keep_sent)

    async def handle(self, event: Event) -> list[Notification]:
        """Feed one event to the tracker and store what it produced (exposed for tests)."""
        self._refresh_redactor()
        scrubbed = self._redactor.scrub(dict(event.data))  # secrets never enter the tracker or the file
        data = scrubbed if isinstance(scrubbed, dict) else {}
        before = json.dumps(self.tracker.to_json(), sort_keys=True)
        notes = self.tracker.on_event(event.kind, event.server, data, event.at)
        state = self.tracker.to_json()
        if notes or json.dumps(state, sort_keys=True) != before:
            await self._store(notes, state)
        return notes

    async def _store(self, notes: list[Notification], state: dict[str, Any]) -> None:
        outbox = self.outbox
        if outbox is None:
            return
        config = self._config()
        if config.notify.mode == "alertmanager":  # Alertmanager pages for the fleet; reports still go
            notes = [n for n in notes if n.kind == "report"]
        self._refresh_redactor()
        wanted = targets(config)
        now = self._clock()
        rows: list[tuple[str, Notification, float]] = []
        for n in notes:
            n = self._finish(n, config)
            for channel, minimum in wanted.items():
                if not await self._accepts(outbox, channel, minimum, n):
                    continue
                rows.append((channel, n, quiet_until(config.notify.quiet_hours, n.severity, now)))
            log.info("notification", kind=n.kind, server=n.server, role=n.role, severity=n.severity,
                     channels=[c for c, m, _ in rows if m is n])
        await asyncio.to_thread(outbox.enqueue, rows, state, now)
        await self._refresh_counts()
        self._wake.set()

    def _refresh_redactor(self) -> None:
        config = self._config()
        if config is not self._redacting_for:
            self._redactor.update(collect_secrets(config))
            self._redacting_for = config

    def _finish(self, n: Notification, config: Config) -> Notification:
        """Add the instruction, then mask every known secret: the payload is stored as sent."""
        todo = instruction_for(n, config)
        data = dict(n.data, instruction=todo) if todo else dict(n.data)
        scrubbed = self._redactor.scrub(data)
        return replace(n, data=scrubbed if isinstance(scrubbed, dict) else data)

    @staticmethod
    async def _accepts(outbox: Outbox, channel: str, minimum: str, n: Notification) -> bool:
        if severity_rank(n.severity) >= severity_rank(minimum):
            return True
        # a resolution or follow-up goes wherever its alert went, whatever its own severity
        return n.role in ("followup", "resolution") and await asyncio.to_thread(outbox.has_alert, channel, n.incident)

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
            open_channels = {name for name in channels if self._blocked_until.get(name, 0.0) <= now}
            rows = await asyncio.to_thread(outbox.due, now, open_channels)
            for row in rows:
                if self._blocked_until.get(row.channel, 0.0) > self._clock():
                    continue  # this channel failed earlier in this batch
                await self._deliver(outbox, channels[row.channel], row)
            if rows:
                await self._refresh_counts()
                continue
            next_at = await asyncio.to_thread(outbox.next_due_at, open_channels)
            candidates = [t for name, t in self._blocked_until.items() if name in channels and t > now]
            if next_at is not None:
                candidates.append(next_at)
            wait = min(candidates) - now if candidates else 60.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, min(wait, 60.0))):
                    await self._wake.wait()

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

    async def _refresh_counts(self) -> None:
        if self.outbox is not None:
            self.counts = await asyncio.to_thread(self.outbox.counts)

    # --- notify-test -------------------------------------------------------------------------------

    async def send_test(self) -> dict[str, Any]:
        return await send_test(self._config(), self._clock())


async def send_test(config: Config, now: float | None = None) -> dict[str, Any]:
    """One test message through every configured channel, now (not via the outbox), and each answer."""
    at = time.time() if now is None else now
    note = Notification(kind="test", severity="info", incident=f"test:{at:.6f}", role="single", at=at,
                        data={"detail": f"Test from mcp-supervisor on {os.uname().nodename}."})
    return await send_now(config, note)


def report_notification(report: dict[str, Any], period: str | None = None, at: float | None = None) -> Notification:
    """A REPORT (see CONTRACTS.md) as a notification, e.g. for ``report --slack`` without the daemon."""
    at = time.time() if at is None else at
    period = period or str(report.get("period") or "custom")
    return Notification(kind="report", severity="info", incident=f"report:{period}:{at:.6f}", role="single", at=at,
                        data={"period": period, "report": report})


async def send_now(config: Config, note: Notification) -> dict[str, Any]:
    """Deliver one notification through every configured channel at once, bypassing the outbox.

    For interactive commands (``notify-test``, ``report --slack``) whose user sees the answer; the
    daemon's own alerts always go through the outbox.
    """
    channels, errors = build_channels(config)
    answers: dict[str, Any] = {name: {"ok": False, "answer": problem} for name, problem in errors.items()}
    redactor = Redactor(collect_secrets(config))
    scrubbed = redactor.scrub(dict(note.data))
    note = replace(note, data=scrubbed if isinstance(scrubbed, dict) else {})
    try:
        for name, channel in channels.items():
            try:
                result = await channel.deliver(note, None)
            except Exception as exc:
                result = Delivery(ok=False, error=type(exc).__name__)
            answers[name] = {"ok": result.ok, "answer": str(redactor.scrub(result.summary()))}
    finally:
        for channel in channels.values():
            with contextlib.suppress(Exception):
                await channel.aclose()
    return {"channels": answers}
