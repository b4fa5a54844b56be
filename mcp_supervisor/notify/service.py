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
from mcp_supervisor.notify.causes import DOCKER_ENGINE, alert_labels, engine_unreachable, headline_cause
from mcp_supervisor.notify.channels import Channel
from mcp_supervisor.notify.delivery import DeliveryLoop
from mcp_supervisor.notify.grouping import Grouper, GroupSettings
from mcp_supervisor.notify.incidents import IncidentTracker, Notification, severity_rank
from mcp_supervisor.notify.outbox import Outbox, open_store
from mcp_supervisor.notify.policy import quiet_until
from mcp_supervisor.notify.render import title
from mcp_supervisor.notify.sending import targets
from mcp_supervisor.notify.silence_book import SilenceBook

log = get_logger("mcp_supervisor.notify")
_RELEVANT = frozenset({"state", "notify", "config", "backup", "backup_failed", "restore", "restore_failed", "report"})
_TICK = 5.0
_BATCH = 1000
_PRUNE_EVERY = 3600.0
STATE_EVERY = 1.0
"""Seconds a change of the tracker's state alone (no message) may wait to be stored: a storm of
200 state changes is one transaction, not 200 (a message is stored with the state at once)."""
OUTBOX_FILE = "outbox.sqlite3"
"""An older daemon's separate outbox file; migrated into the record at start-up."""


def group_settings(config: Config) -> GroupSettings:
    n = config.notify
    return GroupSettings(tuple(n.group_by), n.group_wait, n.group_interval, n.repeat_interval)


class NotifyService(DeliveryLoop):
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
        from mcp_supervisor.history.service import history_path

        self._bus = bus
        self.db_path = Path(db_path) if db_path else history_path(config())
        self.old_outbox = Path(config().state_dir) / OUTBOX_FILE
        self.tracker = IncidentTracker(config().notify.flap_count, config().notify.flap_window)
        self.grouper = Grouper(group_settings(config()))
        self.silences = SilenceBook()
        self.alert_stats: Counter[str] = Counter()
        """Per-server alerts: grouped (sent inside a message naming others), inhibited (under a
        known shared cause), silenced (recorded, not sent)."""
        self._next_send: dict[str, float] = {}
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
        self._state_due: float | None = None
        """When the tracker state changed without a message, it is stored by then (``STATE_EVERY``)."""
        # subscribe now, not when run() starts: the first state changes happen before that
        self._subscription = bus.subscription(kinds=_RELEVANT)
        self._queue: asyncio.Queue[Event] = self._subscription.__enter__()

    # --- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        began = time.monotonic()
        old = self.old_outbox if self.old_outbox != self.db_path else None
        outbox, taken, state, silences, counts = await asyncio.to_thread(open_store, self.db_path, old, self._clock())
        self.outbox = outbox
        try:
            if taken or self.old_outbox.with_name(OUTBOX_FILE + ".migrated").exists():
                log.info("outbox moved into the record", pending=taken, path=str(self.db_path))
            self.tracker.load_json(state)
            self.grouper.load_json(state.get("grouper") or {})
            self.silences.loaded(silences, self._clock())
            self.counts = counts
            self._ready.set()
            log.info("notifier ready", took_s=round(time.monotonic() - began, 3))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._deliver_loop(), name="notify-deliver")
                tg.create_task(self._intake_loop(), name="notify-intake")
        finally:
            self._ready.clear()
            await self._close_channels()
            self.outbox = None
            if self._state_due is not None:  # the last state change, not yet stored
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(outbox.enqueue, [], self._state(), self._clock())
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
            now = self._clock()
            wake = [t for t in (self.grouper.next_due(), self.silences.next_change(now), self._state_due)
                    if t is not None]
            timeout = max(0.0, min([_TICK, *(t - now for t in wake)]))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    event = await self._queue.get()
            events = [event] if event is not None else []
            while len(events) < _BATCH and not self._queue.empty():  # a storm: one write for the lot
                events.append(self._queue.get_nowait())
            now = self._clock()
            self.grouper.settings = group_settings(self._config())
            notes: list[Notification] = []
            dirty = False
            for item in events:
                if item.kind == "lagged":
                    log.error("the notifier fell behind the event bus; some events were dropped")
                elif item.kind in _RELEVANT:
                    produced, changed = self._ingest(item, now)
                    notes += produced + self._flush(now)  # what is due goes out in event order
                    dirty = dirty or changed
            for ended in self.silences.expired(now):
                self._bus.publish(Event("silence", None if ended.server == "*" else ended.server,
                                        {"event": "expired", **ended.to_json()}))
                self.grouper.silence_changed(now)
            notes += self._route(self.tracker.tick(now), now) + self._flush(now)
            if dirty and self._state_due is None:
                self._state_due = now + STATE_EVERY
            if notes or (self._state_due is not None and now >= self._state_due):
                self._state_due = None
                await self._store(notes, self._state())
            if now - last_prune >= _PRUNE_EVERY and self.outbox is not None:
                last_prune = now
                await asyncio.to_thread(self.outbox.prune, now - self._config().notify.keep_sent)

    def _state(self) -> dict[str, Any]:
        return {**self.tracker.to_json(), "grouper": self.grouper.to_json()}

    async def handle(self, event: Event) -> list[Notification]:
        """Feed one event to the tracker and the grouping; store what is due (exposed for tests)."""
        now = self._clock()
        notes, changed = self._ingest(event, now)
        notes += self._flush(now)
        if notes or changed:
            await self._store(notes, self._state())
        return notes

    def _ingest(self, event: Event, now: float) -> tuple[list[Notification], bool]:
        """One event into the tracker and the grouping, in memory: (notes due now, state changed)."""
        self._refresh_redactor()
        scrubbed = self._redactor.scrub(dict(event.data))  # secrets never enter the tracker or the file
        data = scrubbed if isinstance(scrubbed, dict) else {}
        before = self.tracker.fingerprint()
        notes = self.tracker.on_event(event.kind, event.server, data, event.at)
        if event.kind == "config" and data.get("event") == "reloaded":
            self.grouper.forget_servers({str(n) for n in data.get("removed") or []})
        if event.kind == "state" and event.server and self.grouper.groups:
            server = next((s for s in self._config().servers if s.name == event.server), None)
            if engine_unreachable(str(data.get("reason") or ""), bool(server and server.container)):
                self.grouper.reveal(event.server, DOCKER_ENGINE, now)  # the engine, learned after the alert
        return self._route(notes, now), bool(notes) or self.tracker.fingerprint() != before

    def _route(self, notes: list[Notification], now: float) -> list[Notification]:
        """A server's incident notes go to the grouping; the others out now, unless silenced."""
        config = self._config()
        direct = []
        for n in notes:
            if n.server and n.role in ("alert", "followup", "resolution"):
                n = self._finish(n, config)
                back = self.grouper.add(n, self._labels(n, config), now)
                if back is not None:
                    direct.append(back)
                continue
            silence = self.silences.covering(n.server, n.kind, now)
            if silence is not None:
                self._suppressed(n.server, n.kind, silence.id, title(n))
                continue
            direct.append(n)
        return direct

    def _flush(self, now: float) -> list[Notification]:
        result = self.grouper.flush(now, self.silences.silenced_id)
        for server, kind, silence in result.suppressed:
            self._suppressed(server, kind, silence, f"{server}: {kind}")
        self.alert_stats["grouped"] += result.grouped
        self.alert_stats["inhibited"] += result.inhibited
        out = []
        for n in result.notes:
            if n.kind == "group":
                http = frozenset(s.name for s in self._config().servers if s.transport in ("http", "sse"))
                firing = {str(m.get("server")) for m in n.data.get("members", []) if m.get("resolved_at") is None}
                n = replace(n, data={**n.data, "headline": headline_cause(str(n.data.get("cause") or ""), firing, http)})
            out.append(n)
        return out

    @staticmethod
    def _labels(n: Notification, config: Config) -> dict[str, str]:
        server = next((s for s in config.servers if s.name == n.server), None)
        extra = {"group": server.alert_group or "", "transport": server.transport, "token": server.token_env or "",
                 "config": server.config or "", "container": server.container or ""} if server is not None else {}
        return alert_labels(n.server or "", n.data, n.severity, extra)

    def _suppressed(self, server: str | None, kind: str, silence: str, what: str) -> None:
        """Not sent, but recorded: ``history`` shows every silenced message."""
        self.alert_stats["silenced"] += 1
        log.info("notification silenced", server=server, kind=kind, silence=silence)
        self._bus.publish(Event("alert", server, {"event": "silenced", "kind": kind, "silence": silence,
                                                  "detail": what}))

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
                queued_here = n.role != "alert" and any(c == channel and m.incident == n.incident and m.role == "alert"
                                                        for c, m, _ in rows)  # its alert is in this same batch
                if not queued_here and not await self._accepts(outbox, channel, minimum, n):
                    continue
                rows.append((channel, n, quiet_until(config.notify.quiet_hours, n.severity, now)))
            log.info("notification", kind=n.kind, server=n.server, role=n.role, severity=n.severity,
                     channels=[c for c, m, _ in rows if m is n])
        await asyncio.to_thread(outbox.enqueue, rows, state, now)
        if rows:  # the tracker's state alone changes neither the counts nor what is due
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

    # --- silences and maintenance (the control API calls these) ----------------------------------

    async def add_silence(self, kind: str, server: str, seconds: float, reason: str = "",
                          created_by: str = "") -> dict[str, Any]:
        """Stored before it is answered; raises ``SilenceError`` (a 400) naming the fix."""
        await self.wait_ready()
        assert self.outbox is not None
        now = self._clock()
        known = [s.name for s in self._config().servers]
        made = await self.silences.add(self.outbox, kind, server, seconds, now, reason, created_by, known)
        self._bus.publish(Event("silence", None if server == "*" else server, {"event": "created", **made.to_json()}))
        return made.to_json(now)

    async def end_silence(self, silence_id: str) -> dict[str, Any]:
        await self.wait_ready()
        assert self.outbox is not None
        now = self._clock()
        ended = await self.silences.end(self.outbox, silence_id, now)
        self.grouper.silence_changed(now)  # a held alert of a server still down goes out now
        self._bus.publish(Event("silence", None if ended.server == "*" else ended.server,
                                {"event": "ended", **ended.to_json()}))
        return ended.to_json(now)
