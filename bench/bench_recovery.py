"""Recovery speed of a managed HTTP MCP server killed with SIGKILL: ours beside supervisord.

For ``examples/notes_server.py http PORT`` kept alive by
  (a) our ManagedProcess (actuators/process.py) run in a harness process that restarts the server
      from its ``on_exit`` callback, as the daemon's runner does, and
  (b) supervisord (PyPI ``supervisor``, autorestart=true, startsecs=0), in the same run,
each trial waits until the server answers MCP, SIGKILLs it, and measures from the kill:
  - exit noticed      (ours only: the harness's on_exit timestamp, CLOCK_MONOTONIC is system-wide),
  - respawn started   (ours: the harness's timestamp once the new child exists),
  - respawn seen      (both, the same external method: /proc polled every 1 ms for a new child of
                       the supervisor process),
  - MCP answering     (both: TCP connect polled every 2 ms, then mcp.Client connect + tools/list).
The server's cold start (spawn to the same MCP answer) is measured in the same run for scale.
Targets (issue 3): respawn p50 < 20 ms, p95 < 50 ms. Figures only; nothing here passes or fails.
The lead may extend this to go through the full daemon (probe -> machine -> executor).

Usage: python bench/bench_recovery.py [--trials 30] [--cold 10] [--no-supervisord]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "examples" / "notes_server.py"
BIN = Path(sys.executable).parent


# --- harness: our ManagedProcess in its own process (`bench_recovery.py --harness PORT DIR`) ----


async def harness_main(port: int, log_dir: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from mcp_supervisor.actuators.process import ManagedProcess
    from mcp_supervisor.config import ServerConfig

    server = ServerConfig(
        name="notes", transport="http", url=f"http://127.0.0.1:{port}/mcp", managed=True,
        command=sys.executable, args=[str(SERVER), "http", str(port)],
        user=pwd.getpwuid(os.geteuid()).pw_name,  # as root, no user means nobody
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    proc: ManagedProcess

    def report(**fields: object) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    async def respawn(exited: float) -> None:
        await proc.restart()
        report(exit=exited, spawned=time.monotonic(), pid=proc.pid)

    tasks: set[asyncio.Task[None]] = set()

    def on_exit(code: int | None) -> None:
        task = loop.create_task(respawn(time.monotonic()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    proc = ManagedProcess(server, log_dir, grace=1.0, on_exit=on_exit)
    await proc.start()
    report(pid=proc.pid)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await proc.close()


# --- measuring -------------------------------------------------------------------------------


def children_of(parent: int, newer_than: int) -> list[int]:
    """Live children of ``parent`` with a pid above ``newer_than`` (pids grow; cheap to scan)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) > newer_than:
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == parent and fields[0] != "Z":
                found.append(int(entry))
    return found


def wait_new_child(parent: int, old: int, timeout: float = 10.0) -> tuple[float, int]:
    """Poll every 1 ms; the pid counter may wrap, then fall back to a full scan."""
    deadline = time.monotonic() + timeout
    while True:
        kids = [k for k in children_of(parent, old) if k != old] or [
            k for k in children_of(parent, 0) if k != old
        ]
        if kids:
            return time.monotonic(), kids[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no new child of {parent} within {timeout} s")
        time.sleep(0.001)


async def wait_answer(port: int, timeout: float = 30.0) -> float:
    """Monotonic time at which a fresh mcp.Client completed connect + tools/list."""
    from mcp import Client

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {port}") from None
            await asyncio.sleep(0.002)
            continue
        try:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                await client.list_tools()
            return time.monotonic()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.002)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def cold_starts(count: int) -> list[float]:
    results = []
    for _ in range(count):
        port = free_port()
        started = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, str(SERVER), "http", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            results.append((await wait_answer(port)) - started)
        finally:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    return results


async def trials(
    count: int, port: int, supervisor_pid: int, first_pid: int, harness_lines: Callable[[], dict[str, float]] | None
) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {"exit noticed": [], "respawn started": [], "respawn seen": [], "MCP answering": []}
    pid = first_pid
    for _ in range(count):
        await wait_answer(port)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        seen, pid = wait_new_child(supervisor_pid, pid)
        answered = await wait_answer(port)
        rows["respawn seen"].append(seen - killed)
        rows["MCP answering"].append(answered - killed)
        if harness_lines is not None:
            line = harness_lines()
            rows["exit noticed"].append(line["exit"] - killed)
            rows["respawn started"].append(line["spawned"] - killed)
            pid = int(line["pid"])
    return rows


async def run_ours(count: int, work: Path) -> dict[str, list[float]]:
    port = free_port()
    harness = subprocess.Popen(
        [sys.executable, __file__, "--harness", str(port), str(work / "ours")],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert harness.stdout is not None
    stdout = harness.stdout

    def next_line() -> dict[str, float]:
        line = stdout.readline()
        if not line:
            raise RuntimeError("the harness exited")
        data: dict[str, float] = json.loads(line)
        return data

    try:
        first = int(next_line()["pid"])
        return await trials(count, port, harness.pid, first, next_line)
    finally:
        harness.send_signal(signal.SIGTERM)
        try:
            harness.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(harness.pid, signal.SIGKILL)
            harness.wait()


SUPERVISORD_CONF = """\
[unix_http_server]
file={dir}/s.sock

[supervisord]
nodaemon=true
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{dir}/s.sock

[program:notes]
command={python} {server} http {port}
autorestart=true
startsecs=0
startretries=1000
stopasgroup=true
killasgroup=true
stopwaitsecs=2
"""


async def run_supervisord(count: int, work: Path) -> dict[str, list[float]]:
    port = free_port()
    conf_dir = work / "sd"
    conf_dir.mkdir()
    conf = conf_dir / "supervisord.conf"
    conf.write_text(SUPERVISORD_CONF.format(dir=conf_dir, python=sys.executable, server=SERVER, port=port))
    daemon = subprocess.Popen(
        [str(BIN / "supervisord"), "-c", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        _, first = wait_new_child(daemon.pid, 0)
        return await trials(count, port, daemon.pid, first, None)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()


def table(rows: list[tuple[str, str, list[float]]]) -> str:
    lines = [f"{'supervisor':<12} {'kill -> ...':<18} {'n':>3} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}"]
    for who, what, values in rows:
        if values:
            ms = [v * 1000 for v in values]
            lines.append(
                f"{who:<12} {what:<18} {len(ms):>3} {percentile(ms, 50):>9.1f} {percentile(ms, 95):>9.1f} {max(ms):>9.1f}"
            )
        else:
            lines.append(f"{who:<12} {what:<18} {'-':>3} {'n/a':>9} {'n/a':>9} {'n/a':>9}")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-rec-", dir="/tmp") as tmp:
        work = Path(tmp)
        print(f"cold start x{args.cold} ...", file=sys.stderr)
        cold = await cold_starts(args.cold)
        print(f"ours x{args.trials} ...", file=sys.stderr)
        ours = await run_ours(args.trials, work)
        theirs: dict[str, list[float]] = {}
        if not args.no_supervisord:
            print(f"supervisord x{args.trials} ...", file=sys.stderr)
            theirs = await run_supervisord(args.trials, work)
    rows = [("(server)", "cold start", cold)]
    rows += [("ours", what, values) for what, values in ours.items()]
    rows += [("supervisord", what, values) for what, values in theirs.items() if what in ("respawn seen", "MCP answering")]
    print(f"Managed HTTP MCP server ({SERVER.name}) killed with SIGKILL, {args.trials} trials each")
    print(table(rows))
    if ours["respawn started"]:
        p50, p95 = percentile(ours["respawn started"], 50) * 1000, percentile(ours["respawn started"], 95) * 1000
        print(f"target respawn p50 < 20 ms, p95 < 50 ms: ours {p50:.1f} / {p95:.1f} ms")
    mttr = percentile(ours["MCP answering"], 50) * 1000
    print(f"MCP answering p50 minus cold start p50: {mttr - percentile(cold, 50) * 1000:+.1f} ms (the restart's own cost)")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--harness":
        asyncio.run(harness_main(int(sys.argv[2]), Path(sys.argv[3])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--cold", type=int, default=10)
    parser.add_argument("--no-supervisord", action="store_true")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
