"""The durable outbox: every notification is on disk before anyone tries to deliver it.

Where: in the record (the history database, ``history.sqlite3``), so an incident, its alert, its
delivery and its resolution live in one file; the tables are the notifier's own (``outbox``,
``notify_state``, ``silences``) and this module is the only one that writes them. An older
daemon's ``state_dir/outbox.sqlite3`` is copied across once at start-up (every row, pending ones
stay pending) and kept beside as ``outbox.sqlite3.migrated``.

Why SQLite (WAL, ``synchronous=FULL``): a message must survive the daemon being killed between
"the server went down" and "Slack answered". A row is written (with the incident tracker's state,
in the same transaction) when the event happens; it is marked ``sent`` only after the receiver
answered 2xx, and a restart delivers every row still ``pending`` and never one marked ``sent``.
The only window for a repeat is a kill between the receiver's 2xx and our commit (milliseconds);
we prefer that to silence. ``dead`` rows are those a receiver rejected for their content (400): kept,
counted in the metrics, never retried.

Ordering: rows of one incident on one channel go out strictly in id order (the alert before its
follow-ups and resolution, which thread under it), while a stuck incident does not hold back others.

The file is the daemon's own (mode 0600, never a symlink). Every call is synchronous and short;
the service runs them in a worker thread under one lock (the record's writer thread has its own
connection to the same WAL file; SQLite serialises the two writers).
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp_supervisor.notify.incidents import Notification

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    incident TEXT NOT NULL,
    role TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    sent_at REAL,
    remote_channel TEXT,
    remote_ts TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, channel, incident, id);
CREATE TABLE IF NOT EXISTS notify_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    server TEXT NOT NULL,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    reason TEXT,
    created_by TEXT,
    ended_at REAL
);
"""
_COLUMNS = ("channel, incident, role, kind, severity, payload, created_at, status, attempts, next_at, last_error, "
            "sent_at, remote_channel, remote_ts")
_SILENCE_COLUMNS = ("id", "kind", "server", "starts_at", "ends_at", "reason", "created_by", "ended_at")


class OutboxError(Exception):
    """The outbox file cannot be used (a symlink, not a regular file, unreadable)."""


@dataclass(frozen=True)
class Row:
    id: int
    channel: str
    incident: str
    role: str
    notification: Notification
    attempts: int
    next_at: float


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # the state directory is the daemon's, but refuse a planted link or device all the same
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:  # the record's service may have just created it: open what is there
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OutboxError(f"{self.path} is not a regular file; move it away")
            if info.st_mode & 0o077:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        try:
            db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0)
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            # an existing store is opened without writing: a write would wait for the record's
            # writer (the same file), which may be closing a crashed run's intervals just then
            present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"outbox", "notify_state", "silences"} <= present:
                db.executescript(_SCHEMA)
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"{self.path}: {exc} (move the file aside; pending messages in it are lost)") from None
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def migrate_from(self, old: Path) -> int:
        """Copy an older daemon's separate outbox file in, once; returns the pending rows taken over.

        One transaction (``ATTACH``, ``INSERT ... SELECT`` in id order, the tracker state unless this
        file has one already); then the old file is renamed ``.migrated`` (kept, never deleted), so
        a second start does not copy it again and nothing is delivered twice.
        """
        try:
            info = os.lstat(old)
        except FileNotFoundError:
            return 0
        if not stat.S_ISREG(info.st_mode):
            raise OutboxError(f"{old} is not a regular file; move it away")
        with self._lock:
            db = self._db
            db.execute("ATTACH DATABASE ? AS old", (str(old),))
            try:
                tables = {r[0] for r in db.execute("SELECT name FROM old.sqlite_master WHERE type='table'")}
                pending = 0
                db.execute("BEGIN IMMEDIATE")
                try:
                    if "outbox" in tables:
                        pending = int(db.execute("SELECT COUNT(*) FROM old.outbox WHERE status='pending'").fetchone()[0])
                        db.execute(f"INSERT INTO outbox ({_COLUMNS}) SELECT {_COLUMNS} FROM old.outbox ORDER BY id")
                    if "notify_state" in tables:
                        db.execute("INSERT OR IGNORE INTO notify_state (key, value) SELECT key, value FROM old.notify_state")
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            finally:
                db.execute("DETACH DATABASE old")
        for suffix in ("", "-wal", "-shm"):
            side = old.with_name(old.name + suffix)
            if os.path.lexists(side):
                os.rename(side, old.with_name(old.name + ".migrated" + suffix))
        return pending

    # --- silences and maintenance windows ---------------------------------------------------------

    def save_silence(self, row: dict[str, Any]) -> None:
        marks = ", ".join("?" * len(_SILENCE_COLUMNS))
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO silences ({', '.join(_SILENCE_COLUMNS)}) VALUES ({marks})",
                             tuple(row.get(c) for c in _SILENCE_COLUMNS))

    def end_silence(self, silence_id: str, now: float) -> bool:
        with self._lock:
            cursor = self._db.execute("UPDATE silences SET ended_at=? WHERE id=? AND ended_at IS NULL AND ends_at > ?",
                                      (now, silence_id, now))
            return cursor.rowcount > 0

    def load_silences(self, since: float) -> list[dict[str, Any]]:
        """Silences still active or ended after ``since`` (older ones are pruned)."""
        with self._lock:
            old = since - 7 * 86400.0
            if self._db.execute("SELECT 1 FROM silences WHERE coalesce(ended_at, ends_at) < ? LIMIT 1", (old,)).fetchone():
                self._db.execute("DELETE FROM silences WHERE coalesce(ended_at, ends_at) < ?", (old,))
            found = self._db.execute(f"SELECT {', '.join(_SILENCE_COLUMNS)} FROM silences "
                                     "WHERE coalesce(ended_at, ends_at) >= ? ORDER BY starts_at", (since,)).fetchall()
        return [dict(zip(_SILENCE_COLUMNS, r, strict=True)) for r in found]

    # --- writing -----------------------------------------------------------------------------------

    def enqueue(
        self, rows: list[tuple[str, Notification, float]], state: dict[str, Any] | None, now: float | None = None
    ) -> list[int]:
        """Store (channel, notification, not_before) rows and the tracker state atomically.

        A row due now (``not_before <= now``) releases the rows of its incident that quiet hours
        hold: a critical escalation must not wait behind its own held alert.
        """
        ids = []
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for channel, n, not_before in rows:
                    cursor = db.execute(
                        "INSERT INTO outbox (channel, incident, role, kind, severity, payload, created_at, next_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (channel, n.incident, n.role, n.kind, n.severity, json.dumps(n.to_json()), n.at, not_before),
                    )
                    ids.append(int(cursor.lastrowid or 0))
                    if now is not None and not_before <= now:
                        db.execute(
                            "UPDATE outbox SET next_at=? WHERE status='pending' AND channel=? AND incident=? "
                            "AND next_at > ? AND attempts = 0",
                            (now, channel, n.incident, now),
                        )
                if state is not None:
                    db.execute(
                        "INSERT INTO notify_state (key, value) VALUES ('tracker', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (json.dumps(state),),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return ids

    def mark_sent(self, row_id: int, now: float, remote_channel: str | None, remote_ts: str | None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET status='sent', sent_at=?, attempts=attempts+1, remote_channel=?, remote_ts=?, "
                "last_error=NULL WHERE id=?",
                (now, remote_channel, remote_ts, row_id),
            )

    def mark_retry(self, row_id: int, next_at: float, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts=attempts+1, next_at=?, last_error=? WHERE id=? AND status='pending'",
                (next_at, error[:500], row_id),
            )

    def mark_dead(self, row_id: int, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET status='dead', attempts=attempts+1, last_error=? WHERE id=?", (error[:500], row_id)
            )

    def prune(self, sent_before: float) -> int:
        with self._lock:
            cursor = self._db.execute("DELETE FROM outbox WHERE status='sent' AND sent_at < ?", (sent_before,))
            return cursor.rowcount

    # --- reading -----------------------------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        with self._lock:
            found = self._db.execute("SELECT value FROM notify_state WHERE key='tracker'").fetchone()
        if not found:
            return {}
        try:
            value = json.loads(found[0])
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def due(self, now: float, channels: set[str], limit: int = 50) -> list[Row]:
        """The head (lowest id) pending row of each (channel, incident) whose time has come."""
        if not channels:
            return []
        marks = ",".join("?" * len(channels))
        query = (
            "SELECT o.id, o.channel, o.incident, o.role, o.payload, o.attempts, o.next_at FROM outbox o "
            f"WHERE o.status='pending' AND o.channel IN ({marks}) AND o.next_at <= ? AND o.id = ("
            "  SELECT MIN(i.id) FROM outbox i WHERE i.status='pending' AND i.channel=o.channel "
            "  AND i.incident=o.incident) ORDER BY o.id LIMIT ?"
        )
        with self._lock:
            found = self._db.execute(query, (*sorted(channels), now, limit)).fetchall()
        return [
            Row(id=r[0], channel=r[1], incident=r[2], role=r[3], notification=Notification.from_json(json.loads(r[4])),
                attempts=r[5], next_at=r[6])
            for r in found
        ]

    def next_due_at(self, channels: set[str]) -> float | None:
        if not channels:
            return None
        marks = ",".join("?" * len(channels))
        with self._lock:
            found = self._db.execute(
                f"SELECT MIN(next_at) FROM outbox WHERE status='pending' AND channel IN ({marks})", sorted(channels)
            ).fetchone()
        return float(found[0]) if found and found[0] is not None else None

    def thread_root(self, channel: str, incident: str) -> tuple[str, str] | None:
        """(remote channel, ts) of the incident's alert on this channel, once it was delivered."""
        with self._lock:
            found = self._db.execute(
                "SELECT remote_channel, remote_ts FROM outbox WHERE channel=? AND incident=? AND role='alert' "
                "AND status='sent' AND remote_ts IS NOT NULL ORDER BY id LIMIT 1",
                (channel, incident),
            ).fetchone()
        return (str(found[0] or ""), str(found[1])) if found else None

    def has_alert(self, channel: str, incident: str) -> bool:
        """Was this incident's alert queued for this channel? (Then its resolution goes there too.)"""
        with self._lock:
            found = self._db.execute(
                "SELECT 1 FROM outbox WHERE channel=? AND incident=? AND role='alert' LIMIT 1", (channel, incident)
            ).fetchone()
        return found is not None

    def counts(self) -> dict[str, int]:
        with self._lock:
            found = self._db.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall()
        counts = {"pending": 0, "sent": 0, "dead": 0}
        counts.update({str(status): int(n) for status, n in found})
        return counts

    def rows(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Everything, oldest first (for tests, ``notify-test`` and debugging)."""
        query = "SELECT id, channel, incident, role, kind, status, attempts, last_error, remote_ts FROM outbox"
        args: tuple[Any, ...] = ()
        if channel is not None:
            query += " WHERE channel=?"
            args = (channel,)
        with self._lock:
            found = self._db.execute(query + " ORDER BY id", args).fetchall()
        keys = ("id", "channel", "incident", "role", "kind", "status", "attempts", "last_error", "remote_ts")
        return [dict(zip(keys, r, strict=True)) for r in found]


def open_store(path: Path, old: Path | None, now: float) -> tuple[Outbox, int, dict[str, Any],
                                                                  list[dict[str, Any]], dict[str, int]]:
    """What the notifier needs before it answers anything, in one worker-thread hop: the store open
    (without writing: the record's writer shares the file), an older outbox (``old``) taken over,
    the tracker state, the silences and the counts. Why one hop: under load each hop waited its turn
    on the shared executor, and the first ``silence`` after a start waited for all of them."""
    outbox = Outbox(path)
    try:
        taken = outbox.migrate_from(old) if old is not None else 0
        return outbox, taken, outbox.load_state(), outbox.load_silences(now), outbox.counts()
    except BaseException:
        outbox.close()
        raise
