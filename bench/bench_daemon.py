"""Daemon cost at scale: CPU %, RSS and probe-start drift while supervising N HTTP MCP servers.

Prints, for N = 50 and 200 Streamable-HTTP endpoints probed every 10 s for 60 s:
  - the daemon's CPU % of one core and its peak RSS (from /proc, the daemon is a subprocess),
  - how far probe starts drift from their monotonic grid (p50/p99/max, from /v1/status),
then /v1/ready round-trip p50/p99 from an in-process client and `supervisorctl-mcp ready` wall time.
Targets: 200 servers at 10 s < 3 % of one core, < 100 MB RSS, drift p99 < 50 ms, ready p99 < 5 ms,
CLI ready < 150 ms. Figures only; nothing here passes or fails.

The endpoints are real MCPServer apps (official SDK), all hosted by one helper process: one
Starlette app mounting N streamable_http_apps at /s{i}/mcp on one port.

Usage: python bench/bench_daemon.py [--quick] [--sizes 50,200] [--duration 60] [--interval 10]
       [--loops asyncio,uvloop]   (the same size under each loop, one after the other)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the endpoint host (runs in a child process: `bench_daemon.py --host N`) --------------------


def host_main(count: int) -> None:
    import uvicorn
    from mcp.server.mcpserver import MCPServer
    from starlette.applications import Starlette
    from starlette.routing import Mount

    apps = []
    managers = []
    for i in range(count):
        server = MCPServer(f"bench-{i}")

        @server.tool()
        def echo(text: str) -> str:
            """Echo the text back."""
            return text

        app = server.streamable_http_app()
        apps.append(Mount(f"/s{i}", app=app))
        managers.append(server.session_manager)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with contextlib.AsyncExitStack() as stack:
            for manager in managers:
                await stack.enter_async_context(manager.run())
            yield

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(Starlette(routes=apps, lifespan=lifespan), log_level="warning")
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # uvicorn exposes only a flag, no event
            await asyncio.sleep(0.05)
        print(f"READY {port}", flush=True)
        await task

    asyncio.run(run())


# --- measurement helpers -----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_host(count: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--host", str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise SystemExit(f"endpoint host failed to start: {line!r}")
    return proc, int(line.split()[1])


def write_config(directory: Path, count: int, port: int, interval: float) -> Path:
    lines = [
        "[supervisor]",
        f'socket = "{directory}/s.sock"',
        f'state_dir = "{directory}/state"',
        'log_level = "warning"',
        'log_format = "json"',
    ]
    for i in range(count):
        lines += [
            "[[servers]]",
            f'name = "s{i}"',
            'transport = "http"',
            f'url = "http://127.0.0.1:{port}/s{i}/mcp"',
            f'probe = {{ interval = "{interval}s", timeout = "5s", tools_interval = "5m" }}',
        ]
    path = directory / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_notify(sock: socket.socket, deadline: float) -> None:
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if b"READY=1" in sock.recv(4096):
                return
        except TimeoutError:
            break
    raise SystemExit("the daemon did not report READY=1")


async def http_json(socket_path: Path, path: str, session: Any = None) -> tuple[int, Any]:
    import aiohttp

    own = session is None
    if own:
        session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path)))
    try:
        async with session.get(f"http://localhost{path}") as response:
            return response.status, await response.json()
    finally:
        if own:
            await session.close()


async def wait_all_healthy(socket_path: Path, timeout: float) -> float:
    started = time.monotonic()
    status, _ = await http_json(socket_path, f"/v1/ready?wait={timeout:g}")
    if status != 200:
        _, body = await http_json(socket_path, "/v1/ready")
        raise SystemExit(f"not all servers became ready: {json.dumps(body)[:500]}")
    return time.monotonic() - started


async def ready_roundtrips(socket_path: Path, count: int) -> list[float]:
    import aiohttp

    times = []
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path))) as session:
        for _ in range(count):
            t0 = time.perf_counter()
            async with session.get("http://localhost/v1/ready") as response:
                await response.read()
            times.append((time.perf_counter() - t0) * 1000)
    return times


def cli_ready_times(socket_path: Path, count: int) -> tuple[list[float], set[int]]:
    times, codes = [], set()
    for _ in range(count):
        t0 = time.perf_counter()
        done = subprocess.run([BIN / "supervisorctl-mcp", "--socket", str(socket_path), "ready"], capture_output=True, check=False)
        times.append((time.perf_counter() - t0) * 1000)
        codes.add(done.returncode)
    return times, codes


# --- one run -------------------------------------------------------------------------------------


def run_size(count: int, duration: float, interval: float, extra: bool, daemon_cmd: list[str],
             loop: str = "asyncio") -> dict[str, Any]:
    host, port = start_host(count)
    directory = Path(tempfile.mkdtemp(prefix="mcpsb-", dir="/tmp"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(directory / "n.sock"))
    daemon: subprocess.Popen[bytes] | None = None
    try:
        config = write_config(directory, count, port, interval)
        env = {**os.environ, "NOTIFY_SOCKET": str(directory / "n.sock"), "MCP_SUPERVISOR_LOOP": loop}
        t0 = time.monotonic()
        daemon = subprocess.Popen(
            [*daemon_cmd, "--config", str(config)], env=env, stderr=open(directory / "daemon.log", "wb")
        )
        wait_notify(notify, time.monotonic() + 30)
        ready_s = time.monotonic() - t0
        socket_path = directory / "s.sock"
        healthy_s = asyncio.run(wait_all_healthy(socket_path, interval * 3 + 30))
        # measure a steady window
        cpu0, w0 = cpu_seconds(daemon.pid), time.monotonic()
        peak = rss_mb(daemon.pid)
        end = w0 + duration
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            peak = max(peak, rss_mb(daemon.pid))
        cpu1, w1 = cpu_seconds(daemon.pid), time.monotonic()
        _, status = asyncio.run(http_json(socket_path, "/v1/status"))
        out: dict[str, Any] = {
            "servers": count,
            "loop": loop,
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "interval_s": interval,
            "window_s": round(w1 - w0, 1),
            "startup_ready_s": round(ready_s, 2),
            "all_healthy_after_s": round(healthy_s + ready_s, 2),
            "cpu_pct_one_core": round(100 * (cpu1 - cpu0) / (w1 - w0), 2),
            "cpu_ms_per_probe": round(1000 * (cpu1 - cpu0) / max(1.0, count * (w1 - w0) / interval), 3),
            "rss_peak_mb": round(peak, 1),
            "healthy": sum(1 for s in status["servers"] if s["state"] == "healthy"),
            "drift_ms": status.get("daemon", {}).get("drift_ms"),
        }
        if extra:
            times = asyncio.run(ready_roundtrips(socket_path, 1000))
            out["ready_rtt_ms"] = {"p50": round(statistics.median(times), 3), "p99": round(pct(times, 0.99), 3)}
            if (BIN / "supervisorctl-mcp").exists():
                cli, codes = cli_ready_times(socket_path, 20)
                out["cli_ready_ms"] = {
                    "p50": round(statistics.median(cli), 1), "p99": round(pct(cli, 0.99), 1), "exit_codes": sorted(codes),
                }
        t_stop = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=10)
        out["sigterm_exit_s"] = round(time.monotonic() - t_stop, 3)
        return out
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        host.terminate()
        try:
            host.wait(timeout=5)
        except subprocess.TimeoutExpired:
            host.kill()
            host.wait()
        notify.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="20 and 50 servers, 2 s interval, 15 s window")
    parser.add_argument("--sizes", default=None, help="comma-separated server counts (default 50,200)")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--interval", type=float, default=None)
    parser.add_argument("--daemon", default=str(BIN / "mcp-supervisor"), help="daemon command to measure")
    parser.add_argument("--loops", default="asyncio",
                        help="comma-separated event loops to run each size under, side by side (asyncio,uvloop)")
    args = parser.parse_args()
    if args.host:
        host_main(args.host)
        return
    sizes = [int(s) for s in (args.sizes or ("20,50" if args.quick else "50,200")).split(",")]
    duration = args.duration or (15.0 if args.quick else 60.0)
    interval = args.interval or (2.0 if args.quick else 10.0)
    print(f"bench_daemon: sizes={sizes} interval={interval}s window={duration}s")
    loops = args.loops.split(",")
    for i, size in enumerate(sizes):
        for loop in loops:
            result = run_size(size, duration, interval, extra=(i == len(sizes) - 1 and loop == loops[0]),
                              daemon_cmd=shlex.split(args.daemon), loop=loop)
            print(json.dumps(result), flush=True)
    print("targets: 200 servers @10s: cpu < 3 % of one core, <= 1.0 ms CPU per warm probe, rss < 100 MB, "
          "drift p99 < 50 ms; ready p99 < 5 ms; cli ready < 150 ms")


if __name__ == "__main__":
    main()
