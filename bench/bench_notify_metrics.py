"""Notifier and metrics cost: figures only, nothing here passes or fails.

Prints:
  - ``GET /metrics`` exposition time (p50/p99, in the event loop) and body size for N servers with
    populated probe histograms (N = 50, 200),
  - the outbox: enqueue + mark-sent per message on a real SQLite file (WAL, synchronous=FULL),
  - alert latency: bus event -> message accepted by a local Slack stand-in, through the real
    slack-sdk webhook client and the outbox (p50/p99 over M incidents; grouping off),
  - an incident storm: 200 servers failing within 0.2 s and coming back, through the real
    slack-sdk bot client (chat.postMessage + chat.update): messages sent (goal 1-3) and the time
    from the first failure to the grouped message (goal group_wait + <= 100 ms).

Usage: python bench/bench_notify_metrics.py [--incidents 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcp_supervisor.config import parse_config  # noqa: E402
from mcp_supervisor.events import Event, EventBus  # noqa: E402
from mcp_supervisor.metrics import SupervisorMetrics  # noqa: E402
from mcp_supervisor.notify.incidents import Notification  # noqa: E402
from mcp_supervisor.notify.outbox import Outbox  # noqa: E402
from mcp_supervisor.notify.service import NotifyService  # noqa: E402
from tests.slack_fake import FakeSlack  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_metrics(n: int) -> None:
    servers = "".join(
        f'[[servers]]\nname = "s{i}"\ntransport = "http"\nurl = "http://127.0.0.1:9/mcp"\n' for i in range(n)
    )
    config = parse_config(servers)
    status = {"servers": [{"name": f"s{i}", "state": "healthy", "critical": True} for i in range(n)]}
    metrics = SupervisorMetrics(lambda: status, lambda: config)
    for i in range(n):
        for kind in ("warm", "cold", "tools"):
            for latency in (3.0, 12.0, 250.0):
                metrics.observe(Event("probe", f"s{i}", {"ok": True, "probe": kind, "latency_ms": latency}))
        metrics.observe(Event("action_done", f"s{i}", {"rung": "restart", "ok": True}))
    times = []
    cpu = []
    body = b""
    for _ in range(30):
        started, started_cpu = time.perf_counter(), time.thread_time()
        body = metrics.exposition()
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - started_cpu) * 1000)
    lines = body.count(b"\n")
    print(f"/metrics, {n} servers: exposition p50 {statistics.median(times):.1f} ms, p99 {pct(times, 0.99):.1f} ms "
          f"(CPU p50 {statistics.median(cpu):.1f} ms), {len(body) / 1024:.0f} KiB, {lines} lines")


def bench_outbox(count: int = 500) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        box = Outbox(Path(tmp) / "outbox.sqlite3")
        started = time.perf_counter()
        for i in range(count):
            n = Notification("down", "critical", f"s@{i}", "alert", time.time(), "s", {"detail": "x" * 200})
            (row_id,) = box.enqueue([("slack", n, 0.0)], {"open": {}})
            box.mark_sent(row_id, time.time(), "C1", f"1.{i}")
        per = (time.perf_counter() - started) * 1000 / count
        box.close()
    print(f"outbox: enqueue + mark sent {per:.2f} ms per message ({count} messages, WAL, synchronous=FULL)")


@contextlib.asynccontextmanager
async def running_notifier(notify: str, slack: Any) -> AsyncIterator[tuple[FakeSlack, EventBus]]:
    """A NotifyService on a temporary record, with the Slack stand-in; ``slack`` makes the channel's lines."""
    fake = await FakeSlack().start()
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(f'[supervisor]\nstate_dir = "{tmp}"\n[notify]\n{notify}\n[notify.slack]\n{slack(fake)}\n')
        bus = EventBus()
        service = NotifyService(lambda: config, bus)
        task = asyncio.create_task(service.run())
        await service.wait_ready()
        try:
            yield fake, bus
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            service.close()
            await fake.stop()


async def bench_latency(incidents: int) -> None:
    latencies: list[float] = []
    async with running_notifier('group_wait = "0s"\ngroup_interval = "0s"\npace = "0s"',
                                lambda f: f'webhook_url = "{f.webhook_url}"') as (fake, bus):
        for i in range(incidents):
            started = time.perf_counter()
            bus.publish(Event("state", f"s{i}", {"old": "healthy", "new": "failed", "reason": "crashed"}))
            await fake.wait_for(lambda f, want=i + 1: len(f.messages) >= want, 10, "alert")
            latencies.append((time.perf_counter() - started) * 1000)
    print(f"alert latency (event -> Slack stand-in accepted, via outbox + slack-sdk webhook): "
          f"p50 {statistics.median(latencies):.1f} ms, p99 {pct(latencies, 0.99):.1f} ms over {incidents}")


async def bench_storm(servers: int = 200, group_wait: float = 1.0) -> None:
    from tests.slack_fake import BOT_TOKEN

    async with running_notifier(f'group_wait = "{group_wait}s"\ngroup_interval = "1s"',
                                lambda f: f'token = "{BOT_TOKEN}"\nchannel = "#mcp"\nbase_url = "{f.api_url}"') as (
            fake, bus):
        started = time.perf_counter()
        for i in range(servers):
            bus.publish(Event("state", f"s{i:03d}", {"old": "healthy", "new": "failed", "reason": "refused",
                                                     "failure_class": "refused"}))
            if i % 20 == 19:
                await asyncio.sleep(0.02)
        await fake.wait_for(lambda f: len(f.messages) >= 1, 30, "the grouped alert")
        first = (time.perf_counter() - started) * 1000
        named = sum(f"s{i:03d}" in str(fake.messages[0]) for i in range(servers))
        for i in range(servers):
            bus.publish(Event("state", f"s{i:03d}", {"old": "recovering", "new": "healthy", "reason": "ok"}))
        await fake.wait_for(lambda f: len(f.messages) >= 2, 30, "the resolution")
        await asyncio.sleep(1.5)  # a figure, not a test: let late edits arrive before counting
    print(f"storm of {servers} servers (bot token): {len(fake.messages)} messages sent, {len(fake.updates)} edits "
          f"in place; first message {first:.0f} ms after the first failure (group_wait {group_wait * 1000:.0f} ms "
          f"+ {first - group_wait * 1000:.0f} ms), naming {named} of {servers}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--incidents", type=int, default=50)
    args = parser.parse_args(argv)
    import logging

    from mcp_supervisor.logging import setup_logging

    setup_logging("error")
    logging.getLogger().setLevel(logging.ERROR)
    for n in (50, 200):
        bench_metrics(n)
    bench_outbox()
    asyncio.run(bench_latency(args.incidents))
    asyncio.run(bench_storm())
    return 0


if __name__ == "__main__":
    sys.exit(main())


