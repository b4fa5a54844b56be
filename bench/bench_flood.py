"""The control socket's ``ready`` while someone floods the daemon, printed (no pass/fail).

    python bench/bench_flood.py [--streams 2000] [--rounds 3] [--socket-flood 1000] [--samples 300]

A real daemon (``tests/live_daemon.py``: two real MCP servers, the status page on loopback):

1. ``ready`` round trips (a fresh connection each, as a job's ``wait_ready`` makes) with nothing
   else going on: the anchor;
2. the same while ``--streams`` clients open ``/api/events`` on the status page at once and hold
   them (the cap, ``[web] max_event_streams``, serves 256 and answers the rest 503);
3. the same while ``--socket-flood`` connections are opened at once on the control socket itself
   and held idle (the daemon closes them after 5 s).

Target from issue 15: ``ready`` p99 < 50 ms during the page flood.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcp_supervisor.api.client import SupervisorClient
from tests.live_daemon import LiveDaemon, live_daemon
from tests.test_e2e import wait_for


def ready_times(sock: Path, samples: int, stop: threading.Event | None = None) -> list[float]:
    client = SupervisorClient(sock, timeout=30)
    times: list[float] = []
    while len(times) < samples and not (stop is not None and stop.is_set() and len(times) >= 20):
        began = time.perf_counter()
        client.ready()
        times.append((time.perf_counter() - began) * 1000)
    return times


def show(label: str, times: list[float]) -> None:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"  {label:<52} n={len(times):4d}  p50 {statistics.median(times):6.1f} ms  p99 {p99:6.1f} ms  "
          f"max {ordered[-1]:6.1f} ms")


async def _stream(port: int, held: list[asyncio.StreamWriter], statuses: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    statuses.append(int(head.split(b" ", 2)[1]))
    held.append(writer)


def flooder_main(port: int, count: int) -> None:
    """In a process of its own (so the measuring process's GIL is not the flooder's): open
    ``count`` streams at once, say how they were answered, hold them until stdin closes."""

    async def run() -> None:
        held: list[asyncio.StreamWriter] = []
        statuses: list[int] = []
        await asyncio.gather(*(_stream(port, held, statuses) for _ in range(count)), return_exceptions=True)
        print(f"{statuses.count(200)} {statuses.count(503)}", flush=True)
        await asyncio.to_thread(sys.stdin.read)
        for writer in held:
            writer.close()

    asyncio.run(run())


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def page_flood(daemon: LiveDaemon, count: int, samples: int, rounds: int) -> None:
    during: list[float] = []
    held: list[float] = []
    answers: list[str] = []
    cpu: list[float] = []
    assert daemon.proc is not None
    for _ in range(rounds):
        flooder = subprocess.Popen([sys.executable, __file__, "--flooder", str(daemon.web_port), str(count)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert flooder.stdin is not None and flooder.stdout is not None
        opened = threading.Event()
        began = cpu_seconds(daemon.proc.pid)

        def read_answer(out: Any = flooder.stdout, done: threading.Event = opened) -> None:
            answers.append(out.readline())
            done.set()

        reader = threading.Thread(target=read_answer)
        reader.start()
        during += ready_times(daemon.sock, samples, opened)  # while the connections are being opened
        reader.join(120)
        cpu.append(cpu_seconds(daemon.proc.pid) - began)
        held += ready_times(daemon.sock, samples // 2)  # while they are held
        flooder.stdin.close()
        flooder.wait(60)
        wait_for(lambda: "open=0" in streams(daemon), 30, "the streams closed")
    served, refused = ([*answers[-1].split(), "?", "?"])[:2] if answers else ("?", "?")
    show(f"ready while {count} /api/events connect at once", during)
    show(f"ready while they are held ({served} served, {refused} 503)", held)
    print(f"  daemon CPU per flood of {count} page connections: "
          + ", ".join(f"{c:.2f} s" for c in cpu) + f" ({1000 * statistics.median(cpu) / count:.2f} ms per connection)")


def streams(daemon: LiveDaemon) -> str:
    from mcp_supervisor.api import wire

    conn = wire.connect(str(daemon.sock), 10)
    try:
        wire.send(conn, "GET", "/metrics", None, {})
        text = wire.Response(conn).read().decode()
    finally:
        conn.close()
    value = next((line.split()[1] for line in text.splitlines()
                  if line.startswith("mcp_supervisor_status_page_streams ")), "?")
    return f"open={float(value):g}" if value != "?" else "open=?"


def socket_flood(daemon: LiveDaemon, count: int, samples: int) -> None:
    flood = []
    refused = 0
    began = time.perf_counter()
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        if sock.connect_ex(str(daemon.sock)) != 0:
            refused += 1
        flood.append(sock)
    opened_ms = (time.perf_counter() - began) * 1000
    times = ready_times(daemon.sock, samples)
    for sock in flood:
        sock.close()
    show(f"ready after {count} socket connections ({refused} refused, {opened_ms:.0f} ms)", times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--socket-flood", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="page floods, one after the other")
    parser.add_argument("--flooder", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flooder:
        flooder_main(*args.flooder)
        return
    with live_daemon() as daemon:
        wait_for(lambda: daemon.sock.exists() and daemon.states(), 60, "the control socket answers")
        daemon.wait_all_healthy()
        print("control socket ready() round trips (fresh connection each):")
        show("no flood (anchor)", ready_times(daemon.sock, args.samples))
        page_flood(daemon, args.streams, args.samples, args.rounds)
        socket_flood(daemon, args.socket_flood, args.samples)
        print("target (issue 15): ready p99 < 50 ms during the /api/events flood")


if __name__ == "__main__":
    main()
