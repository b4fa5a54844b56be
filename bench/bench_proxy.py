"""The proxy beside a direct connection, in one run: latency, throughput, failover, kills, idle cost.

The real ``mcp-supervisor`` binary manages ``tests/servers/proxied.py http PORT`` with ``[proxy]
listen`` on. Printed (figures only; nothing passes or fails):
  - latency per ``tools/call`` (the SDK client, 2026-07-28 era), direct and through the proxy,
    alternating call by call: p50/p99 and the difference (the proxy's added latency);
  - throughput: raw 2026-07-28 ``tools/call`` POSTs from C concurrent workers for S seconds,
    direct and through the proxy (aiohttp, so the client is not the bottleneck), to the SDK server
    and to an instant backend (``fast_backend.py``: the proxy's own latency and capacity);
  - failover: kill -9 of the backend during a loop of read-only calls through the proxy (SDK
    client, handshake era): kill to next successful answer, and the failed calls (expected 0);
    the server's cold start (spawn to answering) beside it, the floor without a standby;
  - kills during a non-idempotent call: how many got the honest error, how many ran twice
    (executions counted inside the server; expected 0);
  - idle CPU of the daemon with sessions open, and memory (RSS) per open client session.

Usage: python bench/bench_proxy.py [--calls 300] [--kills 5] [--unsafe-kills 3] [--sessions 300]
                                  [--only latency,throughput,failover,stdio,unsafe,idle]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_recovery import BIN, free_port, percentile  # a sibling script, not a package

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "servers" / "proxied.py"
MODERN = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
          "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
          "io.modelcontextprotocol/clientCapabilities": {}}
CONFIG = """\
[supervisor]
socket = "{dir}/s.sock"
state_dir = "{dir}/state"
log_level = "warning"

[proxy]
listen = "127.0.0.1:{proxy_port}"
max_sessions = 5000

[[servers]]
name = "pay"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"
managed = true
user = "{user}"
command = "{python}"
args = ["{server}", "http", "{port}", "{counts}"]
probe = {{ interval = "500ms", timeout = "2s", failure_threshold = 1 }}
recovery = {{ backoff_initial = "50ms", max_attempts = 1000, stable_after = "1s" }}

[[servers]]
name = "fast"
transport = "http"
url = "http://127.0.0.1:{fast_port}/mcp"
critical = false
probe = {{ interval = "60s", cold_interval = "60m", tools_interval = "60m" }}

[[servers]]
name = "stdio"
transport = "stdio"
command = "{python}"
args = ["{server}", "stdio"]
user = "{user}"
critical = false
probe = {{ interval = "60s", cold_interval = "60m" }}

[[servers]]
name = "stdio-standby"
transport = "stdio"
command = "{python}"
args = ["{server}", "stdio"]
user = "{user}"
critical = false
standby = 1
probe = {{ interval = "60s", cold_interval = "60m" }}
"""


class Bench:
    def __init__(self, work: Path) -> None:
        self.dir = work
        self.port, self.proxy_port, self.fast_port = free_port(), free_port(), free_port()
        self.fast: subprocess.Popen[bytes] | None = None
        self.counts = work / "charges.txt"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def direct(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def proxied(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}/servers/pay/mcp"

    @property
    def token(self) -> str:
        return (self.dir / "state" / "proxy.token").read_text().strip()

    def start(self) -> None:
        config = self.dir / "bench.toml"
        self.fast = subprocess.Popen([sys.executable, str(Path(__file__).with_name("fast_backend.py")),
                                      str(self.fast_port)], start_new_session=True)
        config.write_text(CONFIG.format(dir=self.dir, proxy_port=self.proxy_port, port=self.port,
                                        fast_port=self.fast_port,
                                        user=pwd.getpwuid(os.geteuid()).pw_name, python=sys.executable,
                                        server=SERVER, counts=self.counts))
        self.proc = subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(config)],
                                     stderr=open(self.dir / "daemon.log", "wb"), start_new_session=True)

    def server_pid(self) -> int | None:
        import psutil

        assert self.proc is not None
        kids = psutil.Process(self.proc.pid).children()
        return kids[0].pid if kids else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
        if self.fast is not None:
            self.fast.terminate()
            self.fast.wait(5)


@contextlib.asynccontextmanager
async def sdk(url: str, token: str | None, mode: str) -> Any:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"} if token else {},
                              timeout=httpx2.Timeout(30.0, read=60.0))
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        yield client


async def wait_answering(url: str, token: str | None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with sdk(url, token, "auto") as client:
                await client.call_tool("lookup", {"query": "up"})
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def show(label: str, values: list[float], unit: str = "ms") -> None:
    print(f"  {label:<34} p50 {percentile(values, 50):8.2f} {unit}   p99 {percentile(values, 99):8.2f} {unit}"
          f"   n={len(values)}")


async def latency(bench: Bench, calls: int) -> None:
    print("latency per tools/call (SDK client, 2026-07-28, alternating):")
    direct: list[float] = []
    proxied: list[float] = []
    async with sdk(bench.direct, None, "auto") as d, sdk(bench.proxied, bench.token, "auto") as p:
        for client in (d, p):
            await client.list_tools()
        for _ in range(calls):
            for client, out in ((d, direct), (p, proxied)):
                start = time.perf_counter()
                await client.call_tool("lookup", {"query": "x"})
                out.append((time.perf_counter() - start) * 1000)
    show("direct", direct)
    show("through the proxy", proxied)
    print(f"  added by the proxy                 p50 {percentile(proxied, 50) - percentile(direct, 50):8.2f} ms"
          f"   p99 {percentile(proxied, 99) - percentile(direct, 99):8.2f} ms")


async def _raw_post(http: aiohttp.ClientSession, url: str, body: str, headers: dict[str, str]) -> bool:
    async with http.post(url, data=body, headers=headers) as response:
        return response.status == 200 and '"result"' in await response.text()


async def throughput(bench: Bench, workers: int, seconds: float) -> None:
    """Raw 2026-07-28 tools/call POSTs (aiohttp, so the client is not the bottleneck): the SDK server
    direct and proxied, then an instant backend (``fast_backend.py``): the proxy's own latency and
    capacity, without the SDK server's ~200 calls/s ceiling."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "lookup", "arguments": {"query": "t"}, "_meta": MODERN}})
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "lookup"}
    token = {"Authorization": f"Bearer {bench.token}"}
    fast = f"http://127.0.0.1:{bench.fast_port}/mcp"
    fast_proxied = f"http://127.0.0.1:{bench.proxy_port}/servers/fast/mcp"
    async with aiohttp.ClientSession() as http:
        print("latency per raw tools/call to an instant backend (alternating; the proxy's own cost):")
        direct: list[float] = []
        proxied: list[float] = []
        for _ in range(300):
            for url, extra, out in ((fast, {}, direct), (fast_proxied, token, proxied)):
                start = time.perf_counter()
                await _raw_post(http, url, body, {**headers, **extra})
                out.append((time.perf_counter() - start) * 1000)
        show("direct", direct[50:])
        show("through the proxy", proxied[50:])
        print(f"  added by the proxy                 p50 {percentile(proxied[50:], 50) - percentile(direct[50:], 50):8.2f}"
              f" ms   p99 {percentile(proxied[50:], 99) - percentile(direct[50:], 99):8.2f} ms")
        print(f"throughput (raw tools/call POSTs, {workers} concurrent, {seconds:g} s each):")
        for label, url, extra in (("SDK server direct", bench.direct, {}),
                                  ("SDK server through the proxy", bench.proxied, token),
                                  ("instant backend direct", fast, {}),
                                  ("instant backend through the proxy", fast_proxied, token)):
            done = errors = 0
            stop_at = time.monotonic() + seconds
            assert bench.proc is not None
            cpu = cpu_seconds(bench.proc.pid)

            async def worker(url: str = url, extra: dict[str, str] = extra, stop_at: float = stop_at) -> None:
                nonlocal done, errors
                while time.monotonic() < stop_at:
                    ok = await _raw_post(http, url, body, {**headers, **extra})
                    done += ok
                    errors += not ok

            await asyncio.gather(*(worker() for _ in range(workers)))
            cpu = (cpu_seconds(bench.proc.pid) - cpu) * 1000 / max(1, done)
            print(f"  {label:<34} {done / seconds:8.0f} calls/s   errors {errors}   daemon CPU {cpu:.2f} ms per call")


async def failover(bench: Bench, kills: int) -> None:
    print(f"failover: kill -9 of the backend during read-only calls through the proxy ({kills} kills):")
    gaps: list[float] = []
    colds: list[float] = []
    failed = calls = 0
    async with sdk(bench.proxied, bench.token, "legacy") as client:
        await client.list_tools()
        for _ in range(kills):
            await wait_answering(bench.direct, None)
            await asyncio.sleep(1.2)  # past stable_after: a first crash, not a crash loop
            pid = bench.server_pid()
            assert pid is not None
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            cold = asyncio.ensure_future(wait_answering(bench.direct, None))
            first_ok: float | None = None
            while first_ok is None or not cold.done():
                result = await client.call_tool("lookup", {"query": "k"})
                calls += 1
                failed += bool(result.is_error)
                if first_ok is None and not result.is_error:
                    first_ok = time.monotonic()
            await cold
            colds.append((time.monotonic() - killed) * 1000)
            gaps.append((first_ok - killed) * 1000)
    show("kill -> next answer via the proxy", gaps)
    show("kill -> server answering directly", colds)
    print(f"  calls {calls}, failed at the client {failed}")


async def proxy_figures(bench: Bench, name: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(bench.dir / "s.sock"))) as http:
        async with http.get("http://daemon/v1/proxy") as response:
            info = await response.json()
    return dict(info["counts"]["servers"].get(name, {}))


async def stdio_failover(bench: Bench, kills: int) -> None:
    print(f"failover of a stdio backend (one process per session), kill -9 -> next answer ({kills} kills):")
    for name in ("stdio", "stdio-standby"):
        gaps: list[float] = []
        failed = 0
        url = f"http://127.0.0.1:{bench.proxy_port}/servers/{name}/mcp"
        async with sdk(url, bench.token, "legacy") as client:
            await client.call_tool("lookup", {"query": "warm"})
            for _ in range(kills):
                while True:
                    figures = await proxy_figures(bench, name)
                    if name == "stdio" or figures.get("standbys") == ["ready"]:
                        break
                    await asyncio.sleep(0.05)
                killed = time.monotonic()
                os.kill(figures["backend_pids"][0], signal.SIGKILL)
                result = await client.call_tool("lookup", {"query": "k"})
                failed += bool(result.is_error)
                gaps.append((time.monotonic() - killed) * 1000)
        show("with a standby" if name == "stdio-standby" else "without a standby (cold start)", gaps)
        print(f"  {'':<34} failed at the client {failed}")


async def unsafe_kills(bench: Bench, kills: int) -> None:
    print(f"kills during a non-idempotent tools/call ({kills}):")
    honest = other = 0
    bench.counts.unlink(missing_ok=True)
    async with sdk(bench.proxied, bench.token, "legacy") as client:
        await client.list_tools()
        for index in range(kills):
            await wait_answering(bench.direct, None)
            await asyncio.sleep(1.2)
            before = len(bench.counts.read_text().split()) if bench.counts.exists() else 0
            call = asyncio.ensure_future(client.call_tool("charge", {"amount": index, "delay": 2.0}))
            while (len(bench.counts.read_text().split()) if bench.counts.exists() else 0) == before:
                await asyncio.sleep(0.005)
            pid = bench.server_pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            try:
                await call
                other += 1
            except Exception as exc:
                honest += "not retried because it may have taken effect" in str(exc)
    executions = bench.counts.read_text().split()
    twice = len(executions) - len(set(executions))
    print(f"  honest errors {honest}/{kills}, other outcomes {other}, executed twice {twice}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def idle_and_memory(bench: Bench, sessions: int) -> None:
    assert bench.proc is not None
    pid = bench.proc.pid
    print(f"idle cost and memory ({sessions} open handshake-era sessions):")
    before = rss_kib(pid)
    body = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "b", "version": "1"}}})
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "Authorization": f"Bearer {bench.token}"}
    async with aiohttp.ClientSession() as http:
        for _ in range(sessions):
            async with http.post(bench.proxied, data=body, headers=headers) as response:
                await response.read()
    after = rss_kib(pid)
    start = cpu_seconds(pid)
    await asyncio.sleep(5.0)
    idle = cpu_seconds(pid) - start
    print(f"  daemon RSS {before} KiB -> {after} KiB: {(after - before) / sessions:.1f} KiB per session")
    print(f"  daemon CPU while idle with them open (probes included): {idle * 1000 / 5:.1f} ms per second")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--unsafe-kills", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--only", default="latency,throughput,failover,stdio,unsafe,idle",
                        help="the sections to run, comma-separated")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as work:
        bench = Bench(Path(work))
        bench.start()
        try:
            deadline = time.monotonic() + 60
            while not (Path(work) / "state" / "proxy.token").exists():
                if time.monotonic() > deadline or (bench.proc is not None and bench.proc.poll() is not None):
                    raise SystemExit("the daemon did not start:\n" + (Path(work) / "daemon.log").read_text()[-3000:])
                await asyncio.sleep(0.05)
            await wait_answering(bench.direct, None)
            steps = {"latency": lambda: latency(bench, args.calls),
                     "throughput": lambda: throughput(bench, args.workers, args.seconds),
                     "failover": lambda: failover(bench, args.kills),
                     "stdio": lambda: stdio_failover(bench, args.kills),
                     "unsafe": lambda: unsafe_kills(bench, args.unsafe_kills),
                     "idle": lambda: idle_and_memory(bench, args.sessions)}
            for name, step in steps.items():
                if name in parts:
                    await step()
        finally:
            bench.stop()


if __name__ == "__main__":
    asyncio.run(main())
