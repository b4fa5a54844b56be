"""``HistoryService``: the record's imperative shell, a daemon service (``async def run()``).

It subscribes to the bus, lets the ``Recorder`` turn events into rows, and every second hands the
batch to the one writer thread (``HistoryDB``). It also prunes on schedule, publishes the daily
and weekly ``report`` events once each, and answers the API's history and report questions.

Why it can never stop supervision: every database problem is caught here; a damaged file is moved
aside, a full disk keeps a bounded backlog and retries, and an unopenable record is retried every
minute while the daemon goes on.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from mcp_supervisor.config import Config
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.history import proxy_counts
from mcp_supervisor.history.ingest import Op, Recorder
from mcp_supervisor.history.metrics import Interval, Window
from mcp_supervisor.history.report import build_report, due_reports, next_check
from mcp_supervisor.history.store import HistoryDB, HistoryError
from mcp_supervisor.history.today import IntervalRow
from mcp_supervisor.logging import get_logger

log = get_logger("mcp_supervisor.history")

_T = TypeVar("_T")
FLUSH_INTERVAL = 1.0
PRUNE_INTERVAL = 3600.0
MAX_BACKLOG = 200_000
"""Operations kept in memory while the disk refuses writes; beyond this the oldest are dropped."""
SUBSCRIPTION_SIZE = 100_000
"""The record's queue on the bus: large, because it drains in memory (the disk is behind a batch)."""
REOPEN_DELAY = 60.0


def live_token_expiries(config: Config) -> dict[str, float]:
    """{server: token expiry} as the token watch sees it now (so renewed tokens drop out of advice)."""
    from mcp_supervisor.health.tokens import token_expiry

    found: dict[str, float] = {}
    for server in config.servers:
        try:
            expiry = token_expiry(server, os.environ)
        except Exception:  # an unreadable token is the token watch's to report, not a reason to fail
            continue
        if expiry is not None:
            found[server.name] = expiry[0].timestamp()
    return found


def history_path(config: Config) -> Path:
    return Path(config.history.path) if config.history.path else Path(config.state_dir) / "history.sqlite3"


class HistoryService:
    def __init__(self, config: Callable[[], Config], bus: EventBus, live_states: Callable[[], dict[str, str]],
                 flush_interval: float = FLUSH_INTERVAL, scheduled_reports: bool = True) -> None:
        self._config = config
        self.bus = bus
        self._live = live_states
        self.flush_interval = flush_interval
        self.scheduled_reports = scheduled_reports
        self.path = history_path(config())
        self.recorder = Recorder()
        self._pool: ThreadPoolExecutor | None = None
        self._db: HistoryDB | None = None
        self._backlog: list[Op] = []
        self._dropped = 0
        self._write_failing = False
        self._flush_lock = asyncio.Lock()
        self.ready = asyncio.Event()
        """Set once the record is open and this run begun (tests and the API wait on it)."""
        self.lagged = 0
        self._queue: asyncio.Queue[Event] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set by run()

    # --- plumbing ------------------------------------------------------------------------------

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        self.bus.publish(Event(kind=kind, server=data.get("server"), data=dict(data)))

    def _from_thread(self, kind: str, data: dict[str, Any]) -> None:
        """The writer thread reports (e.g. 'moved aside') through the loop, never directly."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_db_event, kind, data)

    def _on_db_event(self, kind: str, data: dict[str, Any]) -> None:
        log.error("the record was damaged; moved aside and a new one started", moved_to=data.get("moved_to"),
                  problem=data.get("problem"))
        self._publish(kind, data)
        # the new file has no open intervals: open them again from what the supervisor knows
        self.recorder.states.clear()
        self.recorder.sync(self._live(), time.time(), "new record")

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._pool is None or self._loop is None:
            raise HistoryError("the record's service is not running")
        return await self._loop.run_in_executor(self._pool, fn, *args)

    # --- the service ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        try:
            with self.bus.subscription(SUBSCRIPTION_SIZE) as queue:
                await self._open()
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._consume(queue))
                    tg.create_task(self._flush_loop())
                    tg.create_task(self._prune_loop())
                    if self.scheduled_reports:
                        tg.create_task(self._report_loop())
        finally:
            self._final_write()

    async def _open(self) -> None:
        told = False
        while True:
            db = HistoryDB(self.path, self._from_thread)
            try:
                await self._call(db.open)
                started = await self._call(db.start_run, time.time(), os.getpid())
            except (HistoryError, OSError) as exc:
                log.error("the record cannot be opened; supervision continues without it", error=str(exc),
                          retry_in=REOPEN_DELAY)
                if not told:  # one event, not one a minute
                    told = True
                    self._publish("history", {"event": "unavailable", "path": str(self.path), "problem": str(exc)})
                await asyncio.sleep(REOPEN_DELAY)
                continue
            self._db = db
            if started.get("crashed_runs"):
                log.warning("the previous daemon did not stop cleanly; its open intervals end at its last heartbeat",
                            closed_at=started.get("closed_at"))
            self.recorder.sync(self._live(), time.time(), "daemon started")
            self.ready.set()
            return

    def _final_write(self) -> None:
        """On stop (also when cancelled): the last rows, every interval closed, the run ended."""
        pool, db = self._pool, self._db
        self._pool, self._db = None, None
        if pool is None:
            return
        try:
            if db is not None:
                self._drain()
                self.recorder.flush_probes()
                ops = self._backlog + self.recorder.take()
                self._backlog = []
                try:
                    pool.submit(db.stop_run, ops, time.time()).result(timeout=10)
                except Exception as exc:
                    log.error("the record's last write failed", error=str(exc))
                pool.submit(db.close).result(timeout=10)
        finally:
            pool.shutdown(wait=True)

    async def _consume(self, queue: asyncio.Queue[Event]) -> None:
        self._queue = queue
        while True:
            self._record(await queue.get())

    def _record(self, event: Event) -> None:
        if event.kind == "lagged":
            self._on_lagged(event)
            return
        try:
            self.recorder.on_event(event)
        except Exception:
            log.exception("could not record an event", kind=event.kind)

    def _drain(self) -> None:
        """Take in every event already published, so a flush (and a report) sees all of them."""
        queue = self._queue
        while queue is not None and not queue.empty():
            self._record(queue.get_nowait())

    def _on_lagged(self, event: Event) -> None:
        """Lost events may include state changes: say so, and re-align with the live states."""
        self.lagged += int(event.data.get("dropped", 1) or 1)
        now = time.time()
        changed = self.recorder.sync(self._live(), now, "resync after lost events")
        self.recorder.on_event(Event(kind="history", at=now, data={
            "event": "lagged", "dropped": self.lagged, "resynced": changed,
            "note": "the record fell behind the bus; intervals of the resynced servers are approximate"}))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self.flush()

    async def flush(self) -> None:
        """Write what has been recorded so far (readers call it first, to see the latest)."""
        async with self._flush_lock:
            db = self._db
            if db is None:
                return
            self._drain()
            now = time.time()
            self.recorder.flush_probes(before=now)
            ops = self._backlog + self.recorder.take()
            self._backlog = []
            try:
                await self._call(db.apply, ops, now)
            except Exception as exc:
                if await self._call(db.recover_from, exc):
                    try:
                        await self._call(db.apply, ops, now)
                        return
                    except Exception as again:
                        exc = again
                self._keep(ops, exc)
                return
            if self._write_failing:
                self._write_failing = False
                log.info("the record is writable again", dropped=self._dropped)
                self._publish("history", {"event": "writable", "dropped": self._dropped})

    def _keep(self, ops: list[Op], exc: BaseException) -> None:
        self._backlog = ops
        if len(self._backlog) > MAX_BACKLOG:
            excess = len(self._backlog) - MAX_BACKLOG
            self._dropped += excess
            del self._backlog[:excess]
        if not self._write_failing:
            self._write_failing = True
            log.error("cannot write the record; keeping a bounded backlog and retrying", error=str(exc))
            self._publish("history", {"event": "write_failed", "path": str(self.path), "problem": str(exc)})

    async def _prune_loop(self) -> None:
        while True:
            await self.prune()
            await asyncio.sleep(PRUNE_INTERVAL)

    async def prune(self) -> dict[str, int]:
        settings = self._config().history
        db = self._db
        if db is None:
            return {}
        await self.flush()
        try:
            counts = await self._call(db.prune, time.time(), settings.retention, settings.probe_detail)
        except Exception as exc:
            log.error("pruning the record failed", error=str(exc))
            return {}
        if any(counts.values()):
            log.info("record pruned", **counts)
        return counts

    async def _report_loop(self) -> None:
        while True:
            settings = self._config().reports
            now = datetime.now().astimezone()
            try:
                await self.send_due_reports(now)
            except Exception:
                log.exception("scheduled report failed")
            await asyncio.sleep(next_check(datetime.now().astimezone(), settings.daily_at))

    async def send_due_reports(self, now: datetime) -> list[str]:
        """Publish the scheduled reports due at ``now`` once each (remembered in the record)."""
        settings = self._config().reports
        db = self._db
        if db is None:
            return []
        last: dict[str, str] = {}
        for period in ("day", "week"):
            value: str | None = await self._call(db.get_meta, f"report_last_{period}")
            last[period] = value or ""
        sent = []
        for due in due_reports(now, settings.daily_at, settings.weekly_on, last):
            if not last[due.period]:
                # a new record: the schedule starts at the next slot, not with a report of nothing
                await self._call(db.set_meta, f"report_last_{due.period}", due.key)
                continue
            report = await self.report(due.since, due.until, due.period)
            # remembered before it goes out: at most once, even if we die right after
            await self._call(db.set_meta, f"report_last_{due.period}", due.key)
            self._publish("report", {"period": due.period, "report": report})
            sent.append(due.key)
        return sent

    # --- questions (the API) -------------------------------------------------------------------

    def _db_or_raise(self) -> HistoryDB:
        if self._db is None:
            raise HistoryError(f"the record {self.path} is not open (see the daemon's log)")
        return self._db

    async def report(self, since: float, until: float, period: str = "custom") -> dict[str, Any]:
        db = self._db_or_raise()
        await self.flush()
        config = self._config()
        critical = frozenset(s.name for s in config.servers if s.critical)
        now = time.time()
        tz = datetime.now().astimezone().tzinfo or UTC
        tokens = live_token_expiries(config) if until >= now - 60 else None

        def compute() -> dict[str, Any]:
            record = db.load_record(since, until)
            report = build_report(record, Window(since, until), now, period, critical, tz, tokens)
            proxy_counts.add_to(report, record.intervals, proxy_counts.load(db.conn, since, until),
                                Window(since, until))
            return report

        return await self._call(compute)

    async def load_intervals(self, since: float, until: float) -> list[Interval]:
        """The state intervals touching a window (for views such as the status page)."""
        db = self._db_or_raise()
        await self.flush()
        return await self._call(db.load_intervals, since, until)

    async def interval_rows(self, since: float, after_id: int = 0, also: Sequence[int] = ()) -> list[IntervalRow]:
        """What changed in the intervals since a view last asked (``HistoryDB.interval_rows``)."""
        db = self._db_or_raise()
        await self.flush()
        return await self._call(db.interval_rows, since, after_id, also)

    async def history(self, since: float, until: float, server: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        db = self._db_or_raise()
        await self.flush()
        return await self._call(db.history, since, until, server, limit)

    async def run_started(self, run_id: str) -> float | None:
        db = self._db_or_raise()
        await self.flush()
        return await self._call(db.run_started, run_id)
