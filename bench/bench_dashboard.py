"""The status page's and the dashboard's costs, printed (no pass/fail).

    python bench/bench_dashboard.py [--servers 50] [--days 90] [--idle 30]

1. ``/api/summary`` server time with ``--servers`` servers and ``--days`` of record (a synthetic
   record as the daemon leaves it, see bench_history.py), through the real ``StatusPage`` handler
   and ``HistoryRecordView``; and the page's first load (HTML + JS + CSS + summary) over HTTP.
2. The terminal dashboard's CPU while idle: a real daemon supervising ``--servers`` HTTP servers
   (names over one real MCP server), the real ``supervisorctl-mcp dashboard`` in tmux, its CPU
   time read from /proc over ``--idle`` seconds.

Targets from issue 12: ``/api/summary`` and first load under 100 ms server time; dashboard idle
under 1 % of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_history import synthetic_record
from mcp_supervisor.events import EventBus
from mcp_supervisor.history.metrics import Window
from mcp_supervisor.history.report import build_report
from mcp_supervisor.history.store import HistoryDB
from mcp_supervisor.web.record import HistoryRecordView
from mcp_supervisor.web.server import StatusPage

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REFRESH = os.environ.get("BENCH_REFRESH", "5")


class RecordShim:
    """HistoryService's two read methods over a HistoryDB, in a worker thread as the daemon does."""

    def __init__(self, db: HistoryDB) -> None:
        self.db = db

    async def load_intervals(self, since: float, until: float) -> Any:
        return await asyncio.to_thread(self.db.load_intervals, since, until)

    async def interval_rows(self, since: float, after_id: int = 0, also: Any = ()) -> Any:
        return await asyncio.to_thread(self.db.interval_rows, since, after_id, also)

    async def report(self, since: float, until: float, period: str) -> dict[str, Any]:
        record = await asyncio.to_thread(self.db.load_record, since, until)
        return build_report(record, Window(since, until), time.time(), period, frozenset(), None)  # type: ignore[arg-type]


def ms(values: list[float]) -> str:
    values = sorted(values)
    return f"p50 {1000 * statistics.median(values):.1f} ms, p95 {1000 * values[int(0.95 * (len(values) - 1))]:.1f} ms"


async def page_times(servers: int, days: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="benchdash-"))
    try:
        now = time.time()
        path = tmp / "history.sqlite3"
        synthetic_record(path, servers, days, now)
        db = HistoryDB(path)
        db.open()
        status = {"ready": True, "servers": [{"name": f"s{i}", "state": "healthy", "since": now - 3600,
                                              "critical": True, "latency_ms": 2.0, "message": "ok"}
                                             for i in range(servers)], "daemon": {"summary": "ok"}}
        page = StatusPage(lambda: status, EventBus(), title="bench", scrub=lambda s: s,
                          record=HistoryRecordView(RecordShim(db)))
        await page.start("127.0.0.1:0")
        base = f"http://127.0.0.1:{page.port}"
        first: list[float] = []
        warm: list[float] = []

        def fetch(path: str) -> float:
            started = time.perf_counter()
            with urllib.request.urlopen(base + path, timeout=30) as response:
                response.read()
            return time.perf_counter() - started

        for round_ in range(15):
            page.record.changed()  # type: ignore[union-attr]  # incidents and report recomputed: a live update
            started = time.perf_counter()
            for asset in ("/", "/static/app.js", "/static/style.css", "/api/summary"):
                await asyncio.to_thread(fetch, asset)
            (first if round_ else warm).append(time.perf_counter() - started)  # round 0: the daily cells cache
        for _ in range(30):
            warm.append(await asyncio.to_thread(fetch, "/api/summary"))
        size = len(await asyncio.to_thread(lambda: urllib.request.urlopen(base + "/api/summary", timeout=30).read()))
        print(f"status page, {servers} servers x {days} days of record ({path.stat().st_size / 1e6:.1f} MB):")
        print(f"  very first summary (computes {days - 1} past days' cells, once a day): {1000 * warm[0]:.0f} ms")
        print(f"  first load (HTML+JS+CSS+summary, incidents and report recomputed): {ms(first)}")
        print(f"  /api/summary (incidents and report cached until a state change): {ms(warm[1:])}; "
              f"{size / 1024:.0f} KiB (load average {os.getloadavg()[0]:.1f}; target p50 <= 50 ms)")
        await page.close()
        db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dashboard_idle(servers: int, idle: float) -> None:
    if not shutil.which("tmux"):
        print("dashboard idle CPU: skipped (tmux is not installed)")
        return
    from tests.servers.fixtures import free_port

    tmp = Path(tempfile.mkdtemp(prefix="benchdash-", dir="/tmp"))
    port = free_port()
    http = subprocess.Popen([sys.executable, str(ROOT / "examples" / "notes_server.py"), "http", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = tmp / "c.toml"
    lines = [f'[supervisor]\nsocket = "{tmp}/ctl.sock"\nstate_dir = "{tmp}/state"\nlog_format = "json"\n']
    for i in range(servers):
        lines.append(f'[[servers]]\nname = "s{i}"\ntransport = "http"\nurl = "http://127.0.0.1:{port}/mcp"\n'
                     'probe = { interval = "10s", timeout = "5s" }\n')
    config.write_text("\n".join(lines))
    daemon = subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(config)],
                              stderr=open(tmp / "daemon.log", "wb"))
    session = f"benchdash{os.getpid()}"
    try:
        deadline = time.monotonic() + 60
        while not (tmp / "ctl.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "60",
                        f"{BIN / 'supervisorctl-mcp'} --socket {tmp}/ctl.sock dashboard --refresh {REFRESH}"], check=True)
        pane_pid = int(subprocess.run(["tmux", "display", "-p", "-t", session, "#{pane_pid}"],
                                      capture_output=True, text=True).stdout.strip())
        time.sleep(25)  # start-up (first probes spread over one interval) and the first screens are not "idle"
        before, started = cpu_seconds(pane_pid), time.monotonic()
        time.sleep(idle)
        used, spent = cpu_seconds(pane_pid) - before, time.monotonic() - started
        print(f"dashboard idle, {servers} servers, events + status every 5 s: "
              f"{100 * used / spent:.2f} % of a core over {spent:.0f} s (load average {os.getloadavg()[0]:.1f}; "
              "target <= 1 %)")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        daemon.terminate()
        daemon.wait(timeout=20)
        http.terminate()
        http.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--skip-page", action="store_true")
    args = parser.parse_args()
    if not args.skip_page:
        asyncio.run(page_times(args.servers, args.days))
    dashboard_idle(args.servers, args.idle)


if __name__ == "__main__":
    main()
