"""The record's SQLite file: opened, written in transactions, pruned and read, from one thread.

Why stdlib sqlite3 in a single writer thread: SQLite calls block, so they never run on the event
loop; one thread owning the one connection means no locking questions. WAL mode with
``synchronous=NORMAL`` keeps every committed transaction through a kill -9 of the daemon (the WAL
is in the OS's page cache) and lets readers (the CLI, a copy for a bug report) read while it writes.

Why a damaged file is moved aside instead of repaired or refused: the record serves the person,
supervision serves the job. A file that is not a database (or is malformed) is renamed to
``history.sqlite3.corrupt-<UTC>`` (never deleted) and a new one started, with an event.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mcp_supervisor.history.ingest import Op
from mcp_supervisor.history.metrics import Attempt, DaemonRun, Interval, Notice
from mcp_supervisor.history.report import Record
from mcp_supervisor.history.schema import SCHEMA, SCHEMA_VERSION
from mcp_supervisor.history.today import IntervalRow

EventSink = Callable[[str, dict[str, Any]], None]

LOOKBACK = 7 * 86400.0
"""Intervals this far before a window are loaded too, so an incident that began before the
window and healed inside it has its real duration (longer incidents start at the cutoff)."""
NOTICE_LOOKBACK = 8 * 86400.0
"""Token warnings are sent once per level (7 days ahead): look back far enough to still see them."""
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def is_corruption(exc: BaseException) -> bool:
    """A damaged file (move it aside), as opposed to a busy, full or unwritable one (retry later)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _CORRUPT_CODES:
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or ("schema" in text and "corrupt" in text)


class HistoryError(Exception):
    """The record cannot be used right now (``str()`` says why); supervision goes on without it."""


class HistoryDB:
    """One SQLite connection; every method is called from the same (writer) thread."""

    def __init__(self, path: Path, on_event: EventSink | None = None) -> None:
        self.path = Path(path)
        self._on_event = on_event or (lambda kind, data: None)
        self._conn: sqlite3.Connection | None = None
        self.run_id: int | None = None

    # --- opening -------------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the database; a damaged one is moved aside and a new one started."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        problem = self._unusable_file()
        if problem is None:
            try:
                self._connect()
                return
            except sqlite3.DatabaseError as exc:
                self._close_quietly()
                if not is_corruption(exc):
                    raise HistoryError(f"cannot open the record {self.path}: {exc}") from None
                problem = str(exc)
        moved = self._move_aside(problem)
        try:
            self._connect()
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise HistoryError(f"cannot start a new record at {self.path}: {exc}") from None
        self._on_event("history", {"event": "moved_aside", "path": str(self.path), "moved_to": moved,
                                   "problem": problem})

    def _unusable_file(self) -> str | None:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                os.close(fd)
                return None
            except FileExistsError:  # the notifier's outbox (same file) created it meanwhile
                info = os.lstat(self.path)
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file (a symlink or something else is in its place)"
        return None

    def _connect(self) -> None:
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=5.0)
        self._conn = conn
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=OFF")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed: {check}")
        conn.executescript(SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', ?)", (repr(time.time()),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise HistoryError(f"{self.path} was written by a newer mcp-supervisor (schema {row[0]}); "
                               "upgrade, or move the file away to start a new record")

    def _close_quietly(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def _move_aside(self, problem: str) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        base = f"{self.path.name}.corrupt-{stamp}"
        candidate = self.path.with_name(base)
        n = 1
        while os.path.lexists(candidate):
            n += 1
            candidate = self.path.with_name(f"{base}-{n}")
        if os.path.lexists(self.path):
            os.rename(self.path, candidate)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if os.path.lexists(side):
                os.rename(side, candidate.with_name(candidate.name + suffix))
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        return str(candidate)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise HistoryError("the record is not open")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
        self._close_quietly()

    # --- the daemon's life ---------------------------------------------------------------------

    def start_run(self, now: float, pid: int) -> dict[str, Any]:
        """Close what a crashed daemon left open (at its last heartbeat), then begin this run."""
        conn = self.conn
        with self._transaction():
            crashed = conn.execute("SELECT id, heartbeat FROM daemon_runs WHERE ended IS NULL").fetchall()
            last = max((hb for _, hb in crashed), default=None)
            for run_id, heartbeat in crashed:
                conn.execute("UPDATE daemon_runs SET ended = ?, end_reason = 'crashed' WHERE id = ?",
                             (heartbeat, run_id))
            if last is None:
                row = conn.execute("SELECT max(coalesce(ended, began)) FROM intervals").fetchone()
                last = row[0] if row and row[0] is not None else now
            conn.execute("UPDATE intervals SET ended = max(began, ?) WHERE ended IS NULL", (min(last, now),))
            cursor = conn.execute("INSERT INTO daemon_runs (pid, began, heartbeat) VALUES (?, ?, ?)", (pid, now, now))
            self.run_id = cursor.lastrowid
        return {"crashed_runs": len(crashed), "closed_at": last if crashed else None}

    def stop_run(self, ops: Sequence[Op], now: float) -> None:
        """The last write of a clean stop: pending rows, then every interval and this run closed."""
        with self._transaction():
            self._execute(ops)
            self.conn.execute("UPDATE intervals SET ended = max(began, ?) WHERE ended IS NULL", (now,))
            if self.run_id is not None:
                self.conn.execute("UPDATE daemon_runs SET ended = ?, heartbeat = ?, end_reason = 'stopped' "
                                  "WHERE id = ?", (now, now, self.run_id))

    # --- writing -------------------------------------------------------------------------------

    def _transaction(self) -> Any:
        db = self

        class _Tx:
            def __enter__(self) -> None:
                db.conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
                if kind is None:
                    db.conn.execute("COMMIT")
                else:
                    try:
                        db.conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass

        return _Tx()

    def _execute(self, ops: Sequence[Op]) -> None:
        conn = self.conn
        for sql, params in ops:
            conn.execute(sql, params)

    def apply(self, ops: Sequence[Op], heartbeat: float) -> None:
        """One transaction: the batch and this run's heartbeat (the crash-time bound)."""
        with self._transaction():
            self._execute(ops)
            if self.run_id is not None:
                self.conn.execute("UPDATE daemon_runs SET heartbeat = ? WHERE id = ?", (heartbeat, self.run_id))

    def recover_from(self, exc: BaseException) -> bool:
        """After a failed write: a damaged file is moved aside and a new one begun (True)."""
        if not is_corruption(exc):
            return False
        self._close_quietly()
        moved = self._move_aside(str(exc))
        self._connect()
        self._on_event("history", {"event": "moved_aside", "path": str(self.path), "moved_to": moved,
                                   "problem": str(exc)})
        self.start_run(time.time(), os.getpid())
        return True

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                          "value = excluded.value", (key, value))

    # --- retention -----------------------------------------------------------------------------

    def prune(self, now: float, retention: float, probe_detail: float) -> dict[str, int]:
        """Delete detail older than ``retention``; fold probe minutes older than ``probe_detail`` into hours."""
        cutoff = now - retention
        counts: dict[str, int] = {}
        conn = self.conn
        with self._transaction():
            for table, sql in (
                ("events", "DELETE FROM events WHERE at < ?"),
                ("attempts", "DELETE FROM attempts WHERE started < ?"),
                ("intervals", "DELETE FROM intervals WHERE ended IS NOT NULL AND ended < ?"),
                ("daemon_runs", "DELETE FROM daemon_runs WHERE ended IS NOT NULL AND ended < ?"),
                ("probes", "DELETE FROM probes WHERE bucket < ?"),
                ("runs", "DELETE FROM runs WHERE coalesce(finished, started, 0) < ?"),
            ):
                counts[table] = conn.execute(sql, (cutoff,)).rowcount
        counts["probe_minutes_folded"] = self._fold_minutes(now - probe_detail)
        return counts

    def _fold_minutes(self, before: float) -> int:
        conn = self.conn
        folded = 0
        while True:
            with self._transaction():
                rows = conn.execute(
                    "SELECT server, bucket, count, failures, classes, p50, p95, max FROM probes "
                    "WHERE span = 60 AND bucket < ? ORDER BY server, bucket LIMIT 20000", (before,)
                ).fetchall()
                if not rows:
                    return folded
                hours: dict[tuple[str, int], list[Any]] = {}
                for server, bucket, count, failures, classes, p50, p95, peak in rows:
                    key = (server, int(bucket) // 3600 * 3600)
                    acc = hours.setdefault(key, [0, 0, Counter(), 0.0, 0, None, None])
                    acc[0] += count
                    acc[1] += failures
                    if classes:
                        acc[2].update(json.loads(classes))
                    if p50 is not None:
                        acc[3] += p50 * count
                        acc[4] += count
                    acc[5] = p95 if acc[5] is None else max(acc[5], p95 or 0)
                    acc[6] = peak if acc[6] is None else max(acc[6], peak or 0)
                for (server, hour), (count, failures, classes, p50_sum, weight, p95, peak) in hours.items():
                    conn.execute(
                        "INSERT INTO probes (server, bucket, span, count, failures, classes, p50, p95, max) "
                        "VALUES (?, ?, 3600, ?, ?, ?, ?, ?, ?) ON CONFLICT (server, bucket, span) DO UPDATE SET "
                        "count = count + excluded.count, failures = failures + excluded.failures, "
                        "classes = coalesce(excluded.classes, classes), p50 = excluded.p50, "
                        "p95 = max(coalesce(p95, 0), coalesce(excluded.p95, 0)), "
                        "max = max(coalesce(max, 0), coalesce(excluded.max, 0))",
                        (server, hour, count, failures, json.dumps(dict(classes)) if classes else None,
                         p50_sum / weight if weight else None, p95, peak),
                    )
                conn.executemany("DELETE FROM probes WHERE server = ? AND bucket = ? AND span = 60",
                                 [(r[0], r[1]) for r in rows])
                folded += len(rows)

    # --- reading -------------------------------------------------------------------------------

    def load_intervals(self, since: float, until: float) -> list[Interval]:
        """Only the state intervals touching a window (the status page's uptime bars and incidents)."""
        return [
            Interval(server, state, began, ended, cls, reason)
            for server, state, began, ended, cls, reason in self.conn.execute(
                "SELECT server, state, began, ended, failure_class, reason FROM intervals "
                "WHERE began < ? AND (ended IS NULL OR ended > ?) ORDER BY began", (until, since - LOOKBACK))
        ]

    def interval_rows(self, since: float, after_id: int = 0, also: Sequence[int] = ()) -> list[IntervalRow]:
        """``(id, server, state, began, ended)`` rows for a view kept up to date incrementally.

        With ``after_id`` 0: every interval touching ``[since, now)`` (a scan, once a day). Else only
        what changed since the view last asked: rows newer than ``after_id`` (the rowid index) and
        the rows ``also`` (the ones it saw open, whose ``ended`` may be set now).
        """
        columns = "SELECT id, server, state, began, ended FROM intervals"
        if not after_id:
            return list(self.conn.execute(f"{columns} WHERE ended IS NULL OR ended > ? ORDER BY id", (since,)))
        rows = list(self.conn.execute(f"{columns} WHERE id > ? ORDER BY id", (after_id,)))
        for start in range(0, len(also), 500):
            chunk = list(also[start:start + 500])
            rows += self.conn.execute(f"{columns} WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        return rows

    def load_record(self, since: float, until: float) -> Record:
        conn = self.conn
        intervals = self.load_intervals(since, until)
        runs = [
            DaemonRun(began, ended)
            for began, ended in conn.execute(
                "SELECT began, ended FROM daemon_runs WHERE began < ? AND (ended IS NULL OR ended > ?)", (until, since))
        ]
        attempts = [
            Attempt(server, rung or "", attempt, started, ended, outcome, detail or "")
            for server, rung, attempt, started, ended, outcome, detail in conn.execute(
                "SELECT server, rung, attempt, started, ended, outcome, detail FROM attempts "
                "WHERE started >= ? AND started < ? ORDER BY started", (since - LOOKBACK, until))
        ]
        notices: list[Notice] = []
        for at, server, kind, detail, data in conn.execute(
            "SELECT at, server, kind, detail, data FROM events WHERE at >= ? AND at < ? "
            "AND kind IN ('notify', 'container', 'process_exit') ORDER BY at", (since - NOTICE_LOOKBACK, until)
        ):
            try:
                payload = json.loads(data) if data else {}
            except ValueError:
                payload = {}
            payload = payload if isinstance(payload, dict) else {}
            if kind == "notify":
                kind = str(payload.get("notify") or "notify")
                detail = str(payload.get("detail") or detail or "")
            elif kind == "container" and str(payload.get("action")) == "oom":
                kind = "oom"
            notices.append(Notice(at, server, kind, detail or "", payload))
        probes: dict[str, int] = {}
        failures: dict[str, Counter[str]] = defaultdict(Counter)
        for server, count, classes in conn.execute(  # one pass: these are the record's most numerous rows
            "SELECT server, sum(count), group_concat(classes, ',') FROM probes WHERE bucket >= ? AND bucket < ? "
            "GROUP BY server", (since, until)
        ):
            probes[server] = int(count)
            if classes:
                for found in json.loads(f"[{classes}]"):
                    failures[server].update(found)
        created = self.get_meta("created_at")
        return Record(intervals, runs, attempts, notices, {s: dict(c) for s, c in failures.items()}, probes,
                      float(created) if created else None)

    def history(self, since: float, until: float, server: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Events in the window, oldest first, at most ``limit`` (the newest); and whether cut."""
        sql = "SELECT at, server, kind, from_state, to_state, detail FROM events WHERE at >= ? AND at <= ?"
        params: list[Any] = [since, until]
        if server is not None:
            sql += " AND server = ?"
            params.append(server)
        sql += " ORDER BY at DESC, id DESC LIMIT ?"
        params.append(limit + 1)
        rows = self.conn.execute(sql, params).fetchall()
        cut = len(rows) > limit
        rows = rows[:limit]
        rows.reverse()
        return [
            {"time": at, "server": srv, "kind": kind, "from_state": old, "to_state": new, "detail": detail}
            for at, srv, kind, old, new, detail in rows
        ], cut

    def run_started(self, run_id: str) -> float | None:
        row = self.conn.execute("SELECT started FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return float(row[0]) if row and row[0] is not None else None
