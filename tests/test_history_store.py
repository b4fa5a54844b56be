"""The record's SQLite file under faults: kill -9 of a writing process, a corrupt file, a crashed daemon
(unknown time), retention, the scheduled reports sent once across restarts. Real SQLite files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mcp_supervisor.config import Config, parse_config
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.history.ingest import Recorder
from mcp_supervisor.history.metrics import Window
from mcp_supervisor.history.report import build_report
from mcp_supervisor.history.service import HistoryService
from mcp_supervisor.history.store import HistoryDB, HistoryError

pytestmark = pytest.mark.timeout(120)

_WRITER = r"""
import sys, time
from mcp_supervisor.events import Event
from mcp_supervisor.history.ingest import Recorder
from mcp_supervisor.history.store import HistoryDB, HistoryError

db = HistoryDB(sys.argv[1])
db.open()
db.start_run(time.time(), 0)
rec = Recorder()
n = 0
states = ["healthy", "failed", "recovering", "healthy"]
while True:
    for k in range(50):
        n += 1
        rec.on_event(Event(kind="state", server="s%d" % (n % 7), data={"old": "x", "new": states[n % 4],
                                                                        "reason": "r%d" % n}))
        rec.on_event(Event(kind="probe", server="s%d" % (n % 7), data={"ok": n % 3 != 0, "latency_ms": 1.5,
                                                                        "failure_class": "timeout"}))
    rec.flush_probes(before=time.time() + 120)
    db.apply(rec.take(), time.time())
    print(n, flush=True)
"""


def test_kill_9_while_writing_keeps_every_committed_row(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        committed = 0
        while committed < 3000:  # dozens of transactions, then kill it in the middle of the next
            line = proc.stdout.readline()
            assert line, "the writer died on its own"
            committed = int(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        for line in proc.stdout:  # whatever it reported before dying was committed too
            committed = max(committed, int(line))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    moved: list[dict[str, object]] = []
    db = HistoryDB(path, lambda kind, data: moved.append(data))
    db.open()
    assert moved == []  # not corrupt: nothing moved aside
    assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.conn.execute("SELECT count(*) FROM events WHERE kind = 'state'").fetchone()[0]
    assert rows >= committed and rows % 50 == 0  # whole transactions only
    probes = db.conn.execute("SELECT sum(count) FROM probes").fetchone()[0]
    assert probes == rows
    heartbeat = db.conn.execute("SELECT heartbeat FROM daemon_runs WHERE ended IS NULL").fetchone()[0]
    info = db.start_run(time.time(), os.getpid())
    assert info == {"crashed_runs": 1, "closed_at": heartbeat}
    assert db.conn.execute("SELECT count(*) FROM intervals WHERE ended IS NULL").fetchone()[0] == 0
    assert db.conn.execute("SELECT max(ended) FROM intervals").fetchone()[0] <= heartbeat
    assert db.conn.execute("SELECT end_reason FROM daemon_runs WHERE ended IS NOT NULL").fetchall() == [("crashed",)]
    db.close()


def test_a_crashed_daemon_leaves_unknown_time_not_healthy_time(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    t0 = 1_800_000_000.0
    db = HistoryDB(path)
    db.open()
    db.start_run(t0, 1)
    rec = Recorder()
    rec.sync({"a": "healthy"}, t0, "daemon started")
    db.apply(rec.take(), t0 + 100)  # the last heartbeat before the crash
    db.close()  # (no stop_run: the process died)

    db = HistoryDB(path)
    db.open()
    db.start_run(t0 + 400, 2)
    rec = Recorder()
    rec.sync({"a": "starting"}, t0 + 400, "daemon started")
    rec.on_event(Event(kind="state", server="a", at=t0 + 410, data={"old": "starting", "new": "healthy"}))
    db.apply(rec.take(), t0 + 500)
    report = build_report(db.load_record(t0, t0 + 1000), Window(t0, t0 + 1000), t0 + 1000)
    db.close()
    assert report["unknown_s"] == 300  # 100..400 nobody watched
    assert report["servers"]["a"]["up_s"] == 100 + 590 and report["servers"]["a"]["starting_s"] == 10
    assert report["uptime_pct"] == 100.0 and report["servers_healthy"] == 1


def test_retention_prunes_old_detail_and_folds_probe_minutes_into_hours(tmp_path: Path) -> None:
    now = time.time()
    db = HistoryDB(tmp_path / "history.sqlite3")
    db.open()
    db.start_run(now - 100 * 86400, 1)
    rec = Recorder()
    for age_days in (100, 95, 50, 0.5):
        at = now - age_days * 86400
        rec.on_event(Event(kind="notify", server="a", at=at, data={"notify": "down", "detail": f"{age_days}"}))
        rec.on_event(Event(kind="state", server="a", at=at, data={"old": "healthy", "new": "failed"}))
    hour = (int(now) // 3600 - 72) * 3600  # three days ago: minutes of one hour
    for minute in range(60):
        for k in range(6):
            rec.on_event(Event(kind="probe", server="a", at=hour + minute * 60 + k,
                               data={"ok": k != 0, "failure_class": "timeout", "latency_ms": float(k + 1)}))
    rec.flush_probes()
    db.apply(rec.take(), now)
    counts = db.prune(now, retention=90 * 86400, probe_detail=2 * 86400)
    assert counts["events"] == 4 and counts["intervals"] == 1 and counts["probe_minutes_folded"] == 60
    kept = [row[0] for row in db.conn.execute("SELECT detail FROM events WHERE kind = 'notify' ORDER BY at")]
    assert kept == ["down: 50", "down: 0.5"]
    rows = db.conn.execute("SELECT bucket, span, count, failures, classes, max FROM probes").fetchall()
    assert rows == [(hour, 3600, 360, 60, json.dumps({"timeout": 60}), 6.0)]
    assert db.prune(now, 90 * 86400, 2 * 86400)["probe_minutes_folded"] == 0  # idempotent
    db.close()


# --- the service: corruption, schedule ------------------------------------------------------------


def _config(tmp: Path, extra: str = "") -> Config:
    text = f'[supervisor]\nstate_dir = "{tmp}/state"\n' + extra
    return parse_config(text, tmp / "config.toml")


@asynccontextmanager
async def service(config: Config, bus: EventBus) -> AsyncIterator[HistoryService]:
    history = HistoryService(lambda: config, bus, lambda: {"a": "healthy"}, flush_interval=0.1,
                             scheduled_reports=False)  # the test drives send_due_reports with its own clock
    task = asyncio.create_task(history.run())
    try:
        async with asyncio.timeout(20):
            await history.ready.wait()
        yield history
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


async def test_a_corrupt_database_is_moved_aside_and_a_new_one_started(tmp_path: Path) -> None:
    config = _config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    path = state / "history.sqlite3"
    garbage = os.urandom(64 * 1024)
    bus = EventBus()
    for round_ in range(2):  # twice within the same second: two distinct names, nothing overwritten
        path.write_bytes(garbage)
        with bus.subscription() as queue:
            async with service(config, bus) as history:
                bus.publish(Event(kind="notify", server="a", data={"notify": "down", "detail": f"round {round_}"}))
                event = await asyncio.wait_for(queue.get(), 10)
                while event.kind != "history":
                    event = await asyncio.wait_for(queue.get(), 10)
                assert event.data["event"] == "moved_aside"
                events, _ = await history.history(time.time() - 60, time.time() + 1, None, 10)
                assert [e["detail"] for e in events if e["kind"] == "notify"] == [f"down: round {round_}"]
    aside = sorted(p.name for p in state.iterdir() if ".corrupt-" in p.name)
    assert len(aside) == 2 and all((state / name).read_bytes() == garbage for name in aside)
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kinds = [row[0] for row in db.execute("SELECT kind FROM events ORDER BY at")]
        assert "history" in kinds  # the move is itself in the (new) record
    finally:
        db.close()
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


async def test_a_symlink_in_place_of_the_database_is_not_followed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (state / "history.sqlite3").symlink_to(victim)
    async with service(_config(tmp_path), EventBus()):
        pass
    assert victim.read_text() == "keep me"
    assert not (state / "history.sqlite3").is_symlink()


async def test_scheduled_reports_are_published_once_even_across_restarts(tmp_path: Path) -> None:
    config = _config(tmp_path, '[reports]\ndaily_at = "09:30"\nweekly_on = "monday"\n')
    bus = EventBus()
    monday = datetime(2026, 11, 23, 9, 31, tzinfo=UTC)
    with bus.subscription() as queue:
        async with service(config, bus) as history:
            assert await history.send_due_reports(datetime(2026, 11, 22, 10, 0, tzinfo=UTC)) == []  # new record
            assert await history.send_due_reports(monday) == ["2026-11-23", "2026-W48"]
            assert await history.send_due_reports(monday) == []
        async with service(config, bus) as history:
            assert await history.send_due_reports(monday.replace(hour=12)) == []
            assert await history.send_due_reports(monday.replace(day=24)) == ["2026-11-24"]
        reports = []
        while not queue.empty():
            event = queue.get_nowait()
            if event.kind == "report":
                reports.append((event.data["period"], event.data["report"]["period"]))
        assert reports == [("day", "day"), ("week", "week"), ("day", "day")]


async def test_lagged_events_resync_the_intervals_and_are_recorded(tmp_path: Path) -> None:
    bus = EventBus()
    async with service(_config(tmp_path), bus) as history:
        bus.publish(Event(kind="lagged", data={"dropped": 1}))
        await history.flush()
        events, _ = await history.history(time.time() - 60, time.time() + 1, None, 10)
    assert any(e["kind"] == "history" and "lagged" in e["detail"] for e in events)


def test_a_state_event_older_than_the_open_interval_does_not_rewrite_it(tmp_path: Path) -> None:
    """Events queued while the record opened are older than the intervals the start-up sync opened."""
    db = HistoryDB(tmp_path / "history.sqlite3")
    db.open()
    db.start_run(100.0, 1)
    rec = Recorder()
    rec.sync({"a": "healthy"}, 105.0, "daemon started")
    rec.on_event(Event(kind="state", server="a", at=103.0, data={"old": "starting", "new": "healthy"}))
    rec.on_event(Event(kind="state", server="a", at=110.0, data={"old": "healthy", "new": "failed"}))
    db.apply(rec.take(), 111.0)
    rows = db.conn.execute("SELECT state, began, ended FROM intervals ORDER BY began").fetchall()
    db.close()
    assert rows == [("healthy", 105.0, 110.0), ("failed", 110.0, None)]


def test_corruption_found_on_a_write_moves_the_file_aside_and_recording_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    moved: list[dict[str, object]] = []
    db = HistoryDB(path, lambda kind, data: moved.append(data))
    db.open()
    db.start_run(time.time(), 1)
    rec = Recorder()
    rec.on_event(Event(kind="notify", server="a", data={"notify": "down", "detail": "before"}))
    db.apply(rec.take(), time.time())
    garbage = os.urandom(8192)
    path.write_bytes(garbage)  # damaged under the open connection (which may not notice: WAL, cache)
    (tmp_path / "same.bin").write_bytes(garbage)
    probe = sqlite3.connect(tmp_path / "same.bin")  # the error SQLite gives for such a file
    try:
        with pytest.raises(sqlite3.DatabaseError) as damaged:
            probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        probe.close()
    assert db.recover_from(damaged.value) is True  # what the service does when a write fails like this
    assert db.recover_from(sqlite3.OperationalError("database or disk is full")) is False  # kept, retried
    rec.on_event(Event(kind="notify", server="a", data={"notify": "down", "detail": "after"}))
    db.apply(rec.take(), time.time())
    details = [row[0] for row in db.conn.execute("SELECT detail FROM events")]
    runs = db.conn.execute("SELECT count(*) FROM daemon_runs WHERE ended IS NULL").fetchone()[0]
    db.close()
    assert details == ["down: after"] and runs == 1
    # kept, not deleted (closing the old connection may have checkpointed its WAL into it)
    assert len(moved) == 1 and Path(str(moved[0]["moved_to"])).stat().st_size >= len(garbage)


async def test_an_unopenable_record_is_reported_once_and_questions_get_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    config = _config(tmp_path, f'[history]\npath = "{tmp_path}/afile/history.sqlite3"\n')
    bus = EventBus()
    history = HistoryService(lambda: config, bus, lambda: {}, scheduled_reports=False)
    with bus.subscription() as queue:
        task = asyncio.create_task(history.run())
        try:
            event = await asyncio.wait_for(queue.get(), 20)
            assert (event.kind, event.data["event"]) == ("history", "unavailable")
            assert "afile" in event.data["problem"]
            with pytest.raises(HistoryError, match="is not open"):
                await history.report(0, time.time())
            bus.publish(Event(kind="notify", server="a", data={"notify": "down"}))  # supervision goes on
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert not history.ready.is_set()
