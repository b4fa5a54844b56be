"""Probe cost: latency (p50/p99) and CPU of the probing process per probe, WARM vs COLD vs TOOLS,
for a Streamable-HTTP and a stdio SDK server, next to the SDK's own bare handshake; the stdio
spawn path (``spawn/``) beside the SDK's ``stdio_client`` on the same server in the same run
(interleaved, so load on the machine hits both alike); the CPU of the cgroup reads.

Run: .venv/bin/python bench/bench_probes.py   (no arguments; about 60 s; as root for the cgroup part)
Targets: 1.5 ms of CPU per WARM probe of an HTTP server (DESIGN); the spawn path no slower than
the SDK's.
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
from mcp.client.stdio import stdio_client  # noqa: E402

from mcp_supervisor.config import ProbeConfig, ServerConfig  # noqa: E402
from mcp_supervisor.health.model import ProbeKind  # noqa: E402
from mcp_supervisor.probes import ProbeContext, create_prober  # noqa: E402
from mcp_supervisor.spawn import cgroups, spawn, spec_for_server, stdio_transport  # noqa: E402
from tests.servers.fixtures import NOTES_SERVER, PYTHON, TEST_USER, start_http_server  # noqa: E402


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
                          user=TEST_USER, probe=ProbeConfig(timeout=10))
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


async def measure_pair(n: int, pair: dict[str, Callable[[], Awaitable[object]]]) -> None:
    """Two ways to do the same thing, alternated call by call: load on the machine hits both alike."""
    walls: dict[str, list[float]] = {label: [] for label in pair}
    cpu: dict[str, float] = dict.fromkeys(pair, 0.0)
    for fn in pair.values():
        await fn()  # warm-up
    for _ in range(n):
        for label, fn in pair.items():
            c0, t0 = time.process_time(), time.perf_counter()
            await fn()
            walls[label].append((time.perf_counter() - t0) * 1000)
            cpu[label] += time.process_time() - c0
    for label in pair:
        print(f"  {label:<38} n={n:<4} p50 {statistics.median(walls[label]):8.2f} ms  p99 "
              f"{pct(walls[label], 0.99):8.2f} ms  CPU/op {cpu[label] * 1000 / n:7.2f} ms")


async def bench_spawn_paths(state_dir: Path) -> None:
    """The same stdio server through spawn/ and through the SDK's stdio_client (the old path)."""
    print(f"stdio spawn path vs the SDK's stdio_client ({NOTES_SERVER.name} stdio; spawn + handshake + "
          "tools/list + close)")
    server = ServerConfig(name="pair", transport="stdio", command=PYTHON, args=[str(NOTES_SERVER), "stdio"],
                          user=TEST_USER)
    spec = spec_for_server(server, state_dir=state_dir, role="probe")
    params = StdioServerParameters(command=PYTHON, args=[str(NOTES_SERVER), "stdio"])

    async def ours() -> None:
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def transport():  # type: ignore[no-untyped-def]
            async with stdio_transport(spec) as (read, write, _):
                yield read, write

        async with Client(transport(), cache=None) as client:
            await client.list_tools()

    async def sdk() -> None:
        async with Client(stdio_client(params), cache=None) as client:
            await client.list_tools()

    await measure_pair(6, {"spawn/ stdio_transport": ours, "SDK stdio_client (old path)": sdk})
    print("transport alone (/bin/cat: spawn, close stdin, reap, sweep; no server start-up in the figure)")
    cat = spec_for_server(ServerConfig(name="cat", transport="stdio", command="/bin/cat", user=TEST_USER),
                          state_dir=state_dir, role="probe")

    async def ours_cat() -> None:
        async with stdio_transport(cat):
            pass

    async def sdk_cat() -> None:
        async with stdio_client(StdioServerParameters(command="/bin/cat")):
            pass

    await measure_pair(100, {"spawn/ stdio_transport(cat)": ours_cat, "SDK stdio_client(cat)": sdk_cat})


async def bench_cgroups(state_dir: Path) -> None:
    state = cgroups.support()
    if state.hierarchy is None:
        print(f"cgroup reads: skipped ({state.problem})")
        return
    print(f"cgroup reads (v{state.hierarchy.version}; one child with memory and tasks limits)")
    server = ServerConfig(name="cg", transport="stdio", command="/bin/sleep", args=["60"], user=TEST_USER,
                          limits={"memory": "64M", "tasks": 32})
    spec = spec_for_server(server, state_dir=state_dir, role="probe")
    child = await spawn(spec, stdio=False)
    group = child.cgroup
    assert group is not None
    n = 5000
    for label, fn in (("OOM count (at every exit)", group.oom_kills), ("members (the sweep's list)", group.members)):
        c0 = time.process_time()
        for _ in range(n):
            fn()
        print(f"  {label:<38} n={n:<5} CPU/read {(time.process_time() - c0) * 1e6 / n:7.1f} us")
    await child.stop(grace=0, polite=False)
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(50):
        made = cgroups.create("cg", "probe", memory=64 << 20, tasks=32)
        assert made is not None
        made.remove()
    print(f"  {'create + limits + remove, per spawn':<38} n=50    CPU/op {(time.process_time() - c0) * 20:7.2f} ms"
          f"  wall/op {(time.perf_counter() - t0) * 20:7.2f} ms")


async def main() -> None:
    import tempfile

    started = time.perf_counter()
    ctx = ProbeContext()
    state_dir = Path(tempfile.mkdtemp(prefix="bench-probes-"))
    try:
        await bench_http(ctx)
        await bench_stdio(ctx)
        await bench_spawn_paths(state_dir)
        await bench_cgroups(state_dir)
    finally:
        await ctx.aclose()
    print(f"done in {time.perf_counter() - started:.1f} s; target: <= 1.5 ms CPU per WARM HTTP probe")


if __name__ == "__main__":
    asyncio.run(main())
