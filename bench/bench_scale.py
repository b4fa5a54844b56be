"""Probing many Streamable-HTTP endpoints: CPU % of one core and RSS of the probing process.

One subprocess hosts N SDK servers (N MCPServer apps mounted in one Starlette app, each with its
own session manager, at /s{i}/mcp). This process probes each with WARM every 10 s, start times
spread over the interval, for the measured window, with the real probers (shared HTTP client,
kept-open sessions). Drift is measured by the daemon's own bench, not here.

Run: .venv/bin/python bench/bench_scale.py [--duration 60] [--counts 50,200]
Target (DESIGN): 200 servers at 10 s under 3 % of one core and 100 MB RSS; 1.5 ms CPU per probe.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


KEEP_ALIVE = int(__import__("os").environ.get("BENCH_KEEP_ALIVE", "5"))
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


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--counts", default="50,200")
    parser.add_argument("--slots", default="0,1", help="comma-separated slot widths in seconds (0 = spread)")
    args = parser.parse_args()
    asyncio.run(main([int(c) for c in args.counts.split(",")], args.duration, args.interval,
                     [float(x) for x in args.slots.split(",")]))
