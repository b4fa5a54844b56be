"""The record's costs, printed (no pass/fail): write throughput and CPU per 100 probes recorded,
database size for 200 servers probed every 10 s over 30 days, and report time over a long record.

    python bench/bench_history.py [--servers 50] [--days 90]

Targets from issue 9: under 2 ms of CPU per 100 probes recorded, a 30-day database (200 servers,
10 s probes) under 200 MB, a weekly report under 1 s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import tempfile
import time
from pathlib import Path

from mcp_supervisor.events import Event
from mcp_supervisor.history.ingest import Recorder
from mcp_supervisor.history.metrics import Window
from mcp_supervisor.history.report import build_report
from mcp_supervisor.history.store import HistoryDB

DAY = 86400.0


def write_cost(tmp: Path, servers: int = 200, probes: int = 200_000) -> None:
    """Probe events through the Recorder (event loop side) and the writer (thread side), 1 s batches."""
    db = HistoryDB(tmp / "write.sqlite3")
    db.open()
    start_wall = time.time()
    db.start_run(start_wall, 0)
    rec = Recorder()
    rng = random.Random(1)
    per_batch = servers // 10 or 1  # every server every 10 s -> servers/10 probes per second
    t = start_wall
    ingest_cpu = write_cpu = 0.0
    done = 0
    while done < probes:
        c0 = time.process_time()
        for _ in range(per_batch):
            ok = rng.random() > 0.01
            rec.on_event(Event(kind="probe", server=f"s{done % servers}", at=t,
                               data={"ok": ok, "probe": "warm", "failure_class": None if ok else "timeout",
                                     "latency_ms": rng.uniform(1, 20)}))
            done += 1
        rec.flush_probes(before=t)
        ops = rec.take()
        c1 = time.process_time()
        db.apply(ops, t)
        c2 = time.process_time()
        ingest_cpu += c1 - c0
        write_cpu += c2 - c1
        t += 1.0
    db.close()
    total = ingest_cpu + write_cpu
    print(f"write cost: {probes} probes of {servers} servers (1 s batches): "
          f"{1000 * total / probes * 100:.3f} ms CPU per 100 probes "
          f"(loop side {1000 * ingest_cpu / probes * 100:.3f} ms, writer thread {1000 * write_cpu / probes * 100:.3f} ms)")

    db = HistoryDB(tmp / "events.sqlite3")
    db.open()
    db.start_run(time.time(), 0)
    rec = Recorder()
    n = 50_000
    started = time.perf_counter()
    for k in range(n):
        rec.on_event(Event(kind="state", server=f"s{k % servers}",
                           data={"old": "healthy", "new": "failed", "reason": "probe failed", "failure_class": "timeout"}))
        if k % 1000 == 999:
            db.apply(rec.take(), time.time())
    db.apply(rec.take(), time.time())
    elapsed = time.perf_counter() - started
    db.close()
    print(f"write throughput: {n / elapsed:,.0f} state events/s (each: an event row, an interval closed and opened)")


def synthetic_record(path: Path, servers: int, days: int, now: float, minute_days: float = 2.0,
                     incidents_per_day: float = 2.0) -> None:
    """Rows as the daemon leaves them after ``days``: intervals, attempts, events, probe rollups
    (per minute for ``minute_days``, per hour before that), daemon runs with a few restarts."""
    db = HistoryDB(path)
    db.open()
    conn = db.conn
    rng = random.Random(7)
    begin = now - days * DAY
    conn.execute("BEGIN")
    runs = sorted(rng.uniform(begin, now) for _ in range(max(1, days // 10)))
    edges = [begin, *runs, now]
    for a, b in itertools.pairwise(edges):
        conn.execute("INSERT INTO daemon_runs (pid, began, heartbeat, ended, end_reason) VALUES (0, ?, ?, ?, 'stopped')",
                     (a + 30, b, b if b < now else None))
    for s in range(servers):
        name = f"s{s:03d}"
        t = begin
        state = "healthy"
        conn.execute("INSERT INTO intervals (server, state, began) VALUES (?, 'healthy', ?)", (name, t))
        while True:
            t += rng.expovariate(incidents_per_day / DAY)
            if t >= now:
                break
            down = rng.expovariate(1 / 20.0)
            cls = rng.choice(["timeout", "crashed", "refused"])
            for new, at in (("failed", t), ("recovering", t + 0.5), ("healthy", t + down)):
                conn.execute("UPDATE intervals SET ended = ? WHERE server = ? AND ended IS NULL", (at, name))
                conn.execute("INSERT INTO intervals (server, state, began, failure_class) VALUES (?, ?, ?, ?)",
                             (name, new, at, cls if new != "healthy" else None))
                conn.execute("INSERT INTO events (at, server, kind, from_state, to_state, detail, data) "
                             "VALUES (?, ?, 'state', ?, ?, 'probe', '{}')", (at, name, state, new))
                state = new
            conn.execute("INSERT INTO attempts (server, rung, attempt, started, ended, outcome, detail) "
                         "VALUES (?, 'restart', 1, ?, ?, 'ok', 'restart done')", (name, t + 0.5, t + down))
            t += down
        rows = []
        hour = int(begin) // 3600 * 3600
        minute_from = now - minute_days * DAY
        while hour < minute_from:
            failures = rng.randrange(0, 3)
            rows.append((name, hour, 3600, 360, failures, json.dumps({"timeout": failures}) if failures else None,
                         5.0, 12.0, 40.0))
            hour += 3600
        minute = int(minute_from) // 60 * 60
        while minute < now:
            rows.append((name, minute, 60, 6, 0, None, 5.0, 9.0, 11.0))
            minute += 60
        conn.executemany("INSERT INTO probes (server, bucket, span, count, failures, classes, p50, p95, max) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    db.close()


def size_and_reports(tmp: Path, servers: int, days: int, label: str) -> None:
    now = time.time()
    path = tmp / f"{label}.sqlite3"
    started = time.perf_counter()
    synthetic_record(path, servers, days, now)
    built = time.perf_counter() - started
    size = sum(p.stat().st_size for p in tmp.iterdir() if p.name.startswith(path.name))
    print(f"{label}: {servers} servers x {days} days: database {size / 1e6:.1f} MB (built in {built:.1f} s)")
    db = HistoryDB(path)
    db.open()
    for period, seconds in (("day", DAY), ("week", 7 * DAY), (f"{days} days", days * DAY)):
        t0, c0 = time.perf_counter(), time.process_time()
        record = db.load_record(now - seconds, now)
        c1 = time.process_time()
        report = build_report(record, Window(now - seconds, now), now, period)
        t2, c2 = time.perf_counter(), time.process_time()
        print(f"  report over {period}: {1000 * (t2 - t0):.0f} ms wall, {1000 * (c2 - c0):.0f} ms CPU "
              f"(load {1000 * (c1 - c0):.0f} ms, compute {1000 * (c2 - c1):.0f} ms CPU; "
              f"{len(record.intervals)} intervals, health {report['health']}, uptime {report['uptime_pct']} %)")
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-history-") as raw:
        tmp = Path(raw)
        write_cost(tmp)
        size_and_reports(tmp, 200, 30, "issue-target")
        size_and_reports(tmp, args.servers, args.days, "long-record")


if __name__ == "__main__":
    main()
