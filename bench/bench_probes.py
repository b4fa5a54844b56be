"""Probe cost: latency (p50/p99) and CPU of the probing process per probe, WARM vs COLD vs TOOLS,
for a Streamable-HTTP and a stdio SDK server, next to the SDK's own bare handshake.

Run: .venv/bin/python bench/bench_probes.py   (no arguments; about 30-40 s)
Target (DESIGN): 1.5 ms of CPU per WARM probe of an HTTP server.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcp import Client, StdioServerParameters  # noqa: E402

from mcp_supervisor.config import ProbeConfig, ServerConfig  # noqa: E402
from mcp_supervisor.health.model import ProbeKind  # noqa: E402
from mcp_supervisor.probes import ProbeContext, create_prober  # noqa: E402
from tests.servers.fixtures import NOTES_SERVER, PYTHON, start_http_server  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(label: str, n: int, fn: Callable[[], Awaitable[object]]) -> None:
    await fn()  # warm-up (first connect, imports)
    walls: list[float] = []
    cpu0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        walls.append((time.perf_counter() - t0) * 1000)
    cpu_ms = (time.process_time() - cpu0) * 1000 / n
    print(f"  {label:<38} n={n:<4} p50 {statistics.median(walls):8.2f} ms  p99 {pct(walls, 0.99):8.2f} ms"
          f"  CPU/probe {cpu_ms:7.2f} ms")


async def bench_http(ctx: ProbeContext) -> None:
    server = start_http_server("http")
    try:
        print(f"Streamable HTTP (examples/notes_server.py, {server.url})")
        for protocol in ("auto", "legacy"):
            config = ServerConfig(name=f"http-{protocol}", transport="http", url=server.url, protocol=protocol,
                                  probe=ProbeConfig(timeout=5))
            prober = create_prober(config, ctx)
            era = (await prober.probe(ProbeKind.WARM)).protocol_version
            print(f" protocol={protocol} -> {era}")
            await measure("WARM (kept-open session)", 300, lambda p=prober: p.probe(ProbeKind.WARM))
            await measure("TOOLS (tools/list on the session)", 100, lambda p=prober: p.probe(ProbeKind.TOOLS))
            await measure("COLD (fresh session + handshake + tools)", 50, lambda p=prober: p.probe(ProbeKind.COLD))
            await prober.aclose()

            async def bare(mode: str = protocol) -> None:
                async with Client(server.url, mode=mode) as client:  # type: ignore[arg-type]
                    await client.list_tools()

            await measure("SDK bare Client(url)+tools/list (ref.)", 50, bare)
    finally:
        server.stop()


async def bench_stdio(ctx: ProbeContext) -> None:
    print(f"stdio ({NOTES_SERVER.name} stdio)")
    config = ServerConfig(name="stdio", transport="stdio", command=PYTHON, args=[str(NOTES_SERVER), "stdio"],
                          probe=ProbeConfig(timeout=10))
    prober = create_prober(config, ctx)
    await measure("WARM (warm instance over its pipe)", 300, lambda: prober.probe(ProbeKind.WARM))
    await measure("TOOLS (warm instance)", 100, lambda: prober.probe(ProbeKind.TOOLS))
    await measure("COLD (spawn + handshake + tools)", 8, lambda: prober.probe(ProbeKind.COLD))
    await prober.aclose()

    async def bare() -> None:
        async with Client(StdioServerParameters(command=PYTHON, args=[str(NOTES_SERVER), "stdio"])):
            pass

    await measure("SDK bare spawn + handshake (ref.)", 5, bare)
    print("  (COLD CPU counts only the probing process; the spawned server burns its own start-up CPU)")


async def main() -> None:
    started = time.perf_counter()
    ctx = ProbeContext()
    try:
        await bench_http(ctx)
        await bench_stdio(ctx)
    finally:
        await ctx.aclose()
    print(f"done in {time.perf_counter() - started:.1f} s; target: <= 1.5 ms CPU per WARM HTTP probe")


if __name__ == "__main__":
    asyncio.run(main())
