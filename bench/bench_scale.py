"""Probing many Streamable-HTTP endpoints: CPU % of one core and RSS of the probing process.

One subprocess hosts N SDK servers (N MCPServer apps mounted in one Starlette app, each with its
own session manager, at /s{i}/mcp). This process probes each with WARM every 10 s, start times
spread over the interval, for the measured window, with the real probers (shared HTTP client,
kept-open sessions). Drift is measured by the daemon's own bench, not here.

Run: .venv/bin/python bench/bench_scale.py [--duration 60] [--counts 50,200]
Target (DESIGN): 200 servers at 10 s under 3 % of one core and 100 MB RSS; 1.5 ms CPU per probe.

With ``--daemon [--quick]`` (issue 22) it measures a real ``mcp-supervisor`` process instead, its
servers served by ``tests/servers/many_paths.py`` gateways (one SDK app answering at /s/<i>/mcp):
500 servers over 5 backends and 300 behind one address, with the default and a 2 s timeout: time
until all ready and the false failures at start (``mcp_supervisor_probe_failures_total``, every
server is healthy all along), steady CPU per probe and RSS per server; then 200 servers behind one
address failing at once: the daemon's CPU over 80 s and the raw ``/v1/ready`` latency during the
storm beside its latency at rest in the same run; steady CPU per probe of 200 servers beside a raw
aiohttp POST made at the same pace in the same run; how soon the first ``silence`` is answered
after a fresh start and after a kill -9. ``--only PART`` runs one part, ``--profile DIR`` records
py-spy samples of the daemon over each measured window, ``--timeouts`` picks the start-ups'.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


KEEP_ALIVE = int(os.environ.get("BENCH_KEEP_ALIVE", "5"))
"""Seconds uvicorn keeps an idle connection (its default, like Node's)."""


def serve(count: int, port: int) -> None:
    """Subprocess side: N MCP endpoints in one uvicorn server."""
    import uvicorn
    from mcp.server.mcpserver import MCPServer
    from starlette.applications import Starlette
    from starlette.routing import Mount

    apps = []
    for i in range(count):
        server = MCPServer(f"endpoint-{i}", version="1.0.0")

        @server.tool()
        def echo(text: str) -> str:
            """Echo the text back."""
            return text

        apps.append(server.streamable_http_app())

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for sub in apps:
                await stack.enter_async_context(sub.router.lifespan_context(sub))
            yield

    app = Starlette(routes=[Mount(f"/s{i}", app=sub) for i, sub in enumerate(apps)], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=KEEP_ALIVE)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


async def run_scale(count: int, duration: float, interval: float, slot: float = 0.0) -> None:
    from mcp_supervisor.config import ProbeConfig, ServerConfig
    from mcp_supervisor.health.model import ProbeKind
    from mcp_supervisor.probes import ProbeContext, create_prober
    from tests.servers.fixtures import PYTHON, start_http_server

    host = start_http_server(argv=[PYTHON, str(Path(__file__).resolve()), "--serve", str(count), "{port}"],
                             timeout=120)
    base = f"http://127.0.0.1:{host.port}"
    ctx = ProbeContext()
    probers = [
        create_prober(ServerConfig(name=f"ep{i}", transport="http", url=f"{base}/s{i}/mcp",
                                   probe=ProbeConfig(timeout=5)), ctx)
        for i in range(count)
    ]
    try:
        first = await asyncio.gather(*(p.probe(ProbeKind.WARM) for p in probers))  # open the sessions
        bad = [r.message for r in first if not r.ok]
        if bad:
            print(f"  warm-up failures: {len(bad)}: {bad[:3]}")
        latencies: list[float] = []
        failures = 0
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.5

        async def runner(index: int, prober: Any) -> None:
            nonlocal failures
            offset = interval * index / count
            when = start + (offset - offset % slot if slot > 0 else offset)
            while when < start + duration:
                await asyncio.sleep(max(0.0, when - loop.time()))
                result = await prober.probe(ProbeKind.WARM)
                latencies.append(result.latency_ms)
                failures += 0 if result.ok else 1
                when += interval

        rss_before = rss_mb()
        await asyncio.sleep(max(0.0, start - loop.time()))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(runner(i, p) for i, p in enumerate(probers)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        n = len(latencies)
        print(f"  N={count:<4} slot {slot:g} s  window {wall:5.1f} s  probes {n:<5} failures {failures:<3}"
              f" CPU {cpu / wall * 100:5.2f} % of one core  CPU/probe {cpu * 1000 / max(n, 1):5.2f} ms"
              f"  RSS {rss_mb():6.1f} MB (before window {rss_before:.1f})"
              f"  latency p50 {statistics.median(latencies):.2f} ms p99 {pct(latencies, 0.99):.2f} ms")
    finally:
        for prober in probers:
            await prober.aclose()
        await ctx.aclose()
        host.stop()


async def main(counts: list[int], duration: float, interval: float, slots: list[float]) -> None:
    print(f"WARM probes every {interval:g} s for {duration:g} s per N (target: 200 at 10 s < 3 % CPU, < 100 MB)")
    print("slot 0: start times spread evenly; slot S: starts rounded down to S-second slots, so the probes")
    print("of one slot run back to back (CPU caches stay warm: ~0.9 ms instead of ~2 ms per probe)")
    for count in counts:
        for slot in slots:
            await run_scale(count, duration, interval, slot)


# --- the daemon at scale (issue 22): a real mcp-supervisor process, gateways serving many paths ---


def daemon_config(directory: Path, ports: list[int], count: int, *, interval: float, timeout: float | None,
                  protocol: str = "legacy") -> Path:
    """``count`` servers spread over the gateways at ``ports`` (``/s/<i>/mcp``); one failed probe counts."""
    probe = f'interval = "{interval:g}s", failure_threshold = 1, tools_interval = "10m"'
    if timeout is not None:
        probe += f', timeout = "{timeout:g}s"'
    lines = ["[supervisor]", f'socket = "{directory}/s.sock"', f'state_dir = "{directory}/state"',
             'log_level = "warning"', 'log_format = "json"']
    for i in range(count):
        lines += ["[[servers]]", f'name = "s{i}"', 'transport = "http"', f'protocol = "{protocol}"',
                  f'url = "http://127.0.0.1:{ports[i % len(ports)]}/s/{i}/mcp"', f"probe = {{ {probe} }}"]
    path = directory / "scale.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


class Daemon:
    """A real daemon on a temp dir; gateways from ``tests/servers/many_paths.py``."""

    def __init__(self, backends: int) -> None:
        from tests.servers.fixtures import PYTHON, ROOT, start_http_server

        gateway = str(ROOT / "tests" / "servers" / "many_paths.py")
        self._start = lambda port=None: start_http_server(argv=[PYTHON, gateway, "{port}"], port=port,
                                                          path="/s/0/mcp", timeout=120)
        self.gateways = [self._start() for _ in range(backends)]
        self.directory = Path(tempfile.mkdtemp(prefix="mcpscale-", dir="/tmp"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def sock(self) -> Path:
        return self.directory / "s.sock"

    def start(self, config: Path) -> float:
        """Start the daemon; the seconds until every server is ready (``/v1/ready?wait=``)."""
        from bench.bench_daemon import BIN, http_json

        t0 = time.monotonic()
        self.proc = subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(config)],
                                     stderr=open(self.directory / "daemon.log", "ab"))
        while not self.sock.exists():
            if time.monotonic() - t0 > 60 or self.proc.poll() is not None:
                raise SystemExit(f"the daemon did not start; see {self.directory}/daemon.log")
            time.sleep(0.05)
        status = asyncio.run(_status_of(self.sock, "GET", "/v1/ready?wait=600", 610))
        if status != 200:
            _, body = asyncio.run(http_json(self.sock, "/v1/ready"))
            raise SystemExit(f"not all ready after {time.monotonic() - t0:.0f} s: {str(body)[:300]}")
        return time.monotonic() - t0

    def figures(self) -> dict[str, Any]:
        from bench.bench_daemon import http_json

        _, status = asyncio.run(http_json(self.sock, "/v1/status"))
        metrics = asyncio.run(_text(self.sock, "/metrics"))
        return {"failures": int(metric_sum(metrics, "mcp_supervisor_probe_failures_total")),
                "reruns": status["daemon"].get("timeouts_rerun"), "queued": status["daemon"].get("handshakes_queued"),
                "loop_lag": status["daemon"].get("loop_lag"), "probes": status["daemon"]["probes"]}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for gateway in self.gateways:
            gateway.stop()


async def _text(sock: Path, path: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as session:
        async with session.get(f"http://localhost{path}") as response:
            return await response.text()


def measured(run: Daemon, seconds: float, each: Any = None) -> tuple[float, float]:
    """The daemon's CPU seconds and the wall seconds of a window; ``each()`` runs over and over in it."""
    from bench.bench_daemon import cpu_seconds

    assert run.proc is not None
    cpu0, w0 = cpu_seconds(run.proc.pid), time.monotonic()
    while time.monotonic() - w0 < seconds:
        if each is None:
            time.sleep(min(1.0, seconds - (time.monotonic() - w0)))
        else:
            each()
    return cpu_seconds(run.proc.pid) - cpu0, time.monotonic() - w0


def baseline_rss(interval: float) -> float:
    """RSS of the daemon supervising one server: what the per-server figure is counted above."""
    from bench.bench_daemon import rss_mb

    run = Daemon(1)
    try:
        run.start(daemon_config(run.directory, [run.gateways[0].port], 1, interval=interval, timeout=None))
        measured(run, interval)
        assert run.proc is not None
        return rss_mb(run.proc.pid)
    finally:
        run.stop()


def startup(count: int, backends: int, timeout: float | None, interval: float, base_mb: float) -> None:
    """Time until all ready and false failures at start (every server is healthy all along)."""
    from bench.bench_daemon import rss_mb

    run = Daemon(backends)
    try:
        config = daemon_config(run.directory, [g.port for g in run.gateways], count, interval=interval,
                               timeout=timeout)
        ready_s = run.start(config)
        cpu, wall = measured(run, interval * 3)
        assert run.proc is not None
        figures = run.figures()
        print(f"  {count} servers over {backends} backend(s), timeout {timeout or 'default 5'} s: all ready after "
              f"{ready_s:.1f} s; false failures {figures['failures']}, timeouts re-run {figures['reruns']}, "
              f"handshakes queued {figures['queued']}; steady CPU/probe {1000 * cpu / max(1, count * wall / interval):.2f} ms,"
              f" RSS {rss_mb(run.proc.pid):.0f} MB ({1024 * (rss_mb(run.proc.pid) - base_mb) / (count - 1):.0f} kB per"
              f" server above one server's {base_mb:.0f} MB); "
              f"loop lag max {figures['loop_lag']['max_ms']} ms")
    finally:
        run.stop()


def storm(count: int, window: float, interval: float, profile: Path | None = None) -> None:
    """All ``count`` servers behind one gateway fail at once: daemon CPU, and raw ``ready`` latency."""
    from bench.bench_daemon import pct, ready_roundtrips

    run = Daemon(1)
    try:
        config = daemon_config(run.directory, [run.gateways[0].port], count, interval=interval, timeout=None)
        run.start(config)
        rest = asyncio.run(ready_roundtrips(run.sock, 500))
        run.gateways[0].stop()
        during: list[float] = []

        def ask() -> None:
            during.extend(asyncio.run(ready_roundtrips(run.sock, 20)))
            time.sleep(0.2)

        with spied(run, profile, "storm", window):
            cpu, wall = measured(run, window, ask)
        figures = run.figures()
        print(f"  storm: {count} servers failing at once, {wall:.0f} s: daemon CPU {cpu:.1f} s "
              f"({100 * cpu / wall:.1f} % of a core); raw ready p50/p99/max at rest "
              f"{statistics.median(rest):.2f}/{pct(rest, 0.99):.2f}/{max(rest):.2f} ms, in the storm "
              f"{statistics.median(during):.2f}/{pct(during, 0.99):.2f}/{max(during):.2f} ms "
              f"(p99 x{pct(during, 0.99) / pct(rest, 0.99):.1f}); probes {figures['probes']}, "
              f"loop lag max {figures['loop_lag']['max_ms']} ms")
    finally:
        run.stop()


def steady(count: int, interval: float, window: float, profile: Path | None = None) -> None:
    """Steady state: the daemon's CPU per warm probe of ``count`` healthy servers (kept-open
    sessions, light checks), beside the CPU of the same exchange as a raw aiohttp POST made by
    this process at the same pace, in the same run (what the machine's load does to both)."""
    run = Daemon(1)
    try:
        port = run.gateways[0].port
        run.start(daemon_config(run.directory, [port], count, interval=interval, timeout=None))
        measured(run, interval * 1.5)  # every server past its first (tools) probe
        before = run.figures()["probes"]
        with spied(run, profile, "steady", window):
            cpu, wall = measured(run, window)
        probes = run.figures()["probes"] - before
        raw = asyncio.run(raw_requests(f"http://127.0.0.1:{port}", count, interval, min(window, 20.0)))
        print(f"  steady, {count} servers every {interval:g} s (load {os.getloadavg()[0]:.1f}): daemon CPU "
              f"{1000 * cpu / max(1, probes):.2f} ms per probe ({probes} probes, {100 * cpu / wall:.1f} % of a core); "
              f"raw aiohttp keep-alive POST of server/discover at the same pace: {raw:.2f} ms CPU per request")
    finally:
        run.stop()


async def raw_requests(base: str, count: int, interval: float, seconds: float) -> float:
    """CPU per raw request: a prebuilt ``server/discover`` POST on a kept-alive aiohttp connection,
    to ``count`` paths in turn, ``count / interval`` requests a second (the daemon's probe pace)."""
    import aiohttp

    from mcp_supervisor.probes.light import build_request

    requests = [build_request(f"{base}/s/{i}/mcp", legacy=False, protocol_version="2026-07-28", session_id=None,
                              headers={}) for i in range(count)]
    gap = interval / count
    async with aiohttp.ClientSession() as session:
        for request in requests[:5]:  # connections open, code warm
            async with session.post(request.url, data=request.body, headers=request.headers) as response:
                await response.read()
        done, cpu0, end = 0, time.process_time(), time.monotonic() + seconds
        while time.monotonic() < end:
            request = requests[done % count]
            async with session.post(request.url, data=request.body, headers=request.headers) as response:
                await response.read()
            done += 1
            await asyncio.sleep(gap)
        return 1000 * (time.process_time() - cpu0) / max(1, done)


def first_silence(count: int, interval: float) -> None:
    """How soon the notifier answers after a start: the first ``silence`` (``DELETE /v1/silences/X``,
    answered 404 once the notifier's store is open) after a fresh start and after a kill -9, with
    ``count`` servers starting at the same time; the CLI gives up after 10 s (exit 3)."""
    from bench.bench_daemon import BIN

    run = Daemon(1)
    try:
        config = daemon_config(run.directory, [run.gateways[0].port], count, interval=interval, timeout=None)
        figures = []
        for start in ("fresh", "after kill -9"):
            t0 = time.monotonic()
            run.proc = subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(config)],
                                        stderr=open(run.directory / "daemon.log", "ab"))
            while not run.sock.exists():
                time.sleep(0.01)
            sock_s = time.monotonic() - t0
            while asyncio.run(_status_of(run.sock, "DELETE", "/v1/silences/none")) != 404:
                time.sleep(0.02)
            figures.append(f"{start}: socket after {sock_s:.2f} s, first silence answered after "
                           f"{time.monotonic() - t0:.2f} s")
            asyncio.run(_status_of(run.sock, "GET", "/v1/ready?wait=600"))
            time.sleep(2.5)  # a heartbeat or two in the record, as a daemon that ran a while
            run.proc.kill()
            run.proc.wait()
            run.sock.unlink(missing_ok=True)
        print(f"  notifier start with {count} servers: " + "; ".join(figures))
    finally:
        run.stop()


async def _status_of(sock: Path, method: str, path: str, within: float = 30.0) -> int:
    """The HTTP status of one request (0: no answer within ``within`` seconds)."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)),
                                         timeout=aiohttp.ClientTimeout(total=within)) as session:
            async with session.request(method, f"http://localhost{path}") as response:
                await response.read()
                return response.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


@contextlib.contextmanager
def spied(run: Daemon, profile: Path | None, name: str, seconds: float) -> Any:
    """With ``--profile DIR``: py-spy samples the daemon over the window (a flame graph per phase)."""
    spy = None
    if profile is not None and run.proc is not None:
        profile.mkdir(parents=True, exist_ok=True)
        out = profile / f"{name}.txt"
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(run.proc.pid),
                                "-d", str(int(seconds)), "-r", "50", "-f", "raw", "-o", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        if spy is not None:
            spy.wait(30)


def daemon_main(quick: bool, only: str | None = None, profile: Path | None = None,
                timeouts: tuple[float | None, ...] = (None, 2.0)) -> None:
    print(f"the daemon at scale (load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    interval = 2.0 if quick else 10.0
    many, one, stormers = (100, 60, 60) if quick else (500, 300, 200)
    if only in (None, "startup"):
        base_mb = baseline_rss(interval)
        for timeout in timeouts:
            startup(many, 5, timeout, interval, base_mb)
            startup(one, 1, timeout, interval, base_mb)
    if only in (None, "steady"):
        steady(stormers, interval, 30.0 if quick else 60.0, profile)
    if only in (None, "notify"):
        first_silence(stormers, interval)
    if only in (None, "storm"):
        storm(stormers, 20.0 if quick else 80.0, interval, profile)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--counts", default="50,200")
    parser.add_argument("--slots", default="0,1", help="comma-separated slot widths in seconds (0 = spread)")
    parser.add_argument("--daemon", action="store_true",
                        help="the real daemon: start-up of 500 (5 backends) and 300 (one address), a storm of 200")
    parser.add_argument("--quick", action="store_true", help="with --daemon: 100/60/60 servers, 2 s interval")
    parser.add_argument("--only", choices=["startup", "steady", "notify", "storm"], help="with --daemon: one part only")
    parser.add_argument("--profile", type=Path, help="with --daemon: py-spy raw profiles of the windows into DIR")
    parser.add_argument("--timeouts", default="default,2",
                        help="with --daemon: the probe timeouts of the start-ups (seconds; 'default' = 5 s)")
    args = parser.parse_args()
    if args.daemon:
        daemon_main(args.quick, args.only, args.profile,
                    tuple(None if t == "default" else float(t) for t in args.timeouts.split(",")))
        raise SystemExit(0)
    asyncio.run(main([int(c) for c in args.counts.split(",")], args.duration, args.interval,
                     [float(x) for x in args.slots.split(",")]))
