"""Vault watcher cost: CPU of an idle watcher over 20 s and damage-to-restored latency (3 files).

Why: the watcher used to poll lstat every 100 ms on the event loop; it now sleeps on inotify with
a 5 s lstat safety net in a worker thread. Prints figures; never fails.

Usage: .venv/bin/python bench/bench_vault_watch.py
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from mcp_supervisor.config import parse_config
from mcp_supervisor.vault.service import VaultService


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main() -> None:
    logging.disable(logging.CRITICAL)
    root = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    (root / "home").mkdir()
    text = f'[supervisor]\nstate_dir = "{root}/state"\n[backup]\nkey_file = "{root}/k/key"\nlocations = ["{root}/b"]\n'
    for i in range(3):
        (root / "home" / f"c{i}.json").write_text(json.dumps({"mcpServers": {"a": {"command": "x"}}}))
        text += f'[[configs]]\nname = "c{i}"\npath = "{root}/home/c{i}.json"\nformat = "mcp-client-json"\n'
    events: list[tuple[str, float]] = []

    def on_event(kind: str, data: dict[str, Any]) -> None:
        events.append((kind, time.monotonic()))

    vault = VaultService(parse_config(text, environ={}), on_event=on_event)
    task = asyncio.create_task(vault.run())
    while not any(kind == "backup" for kind, _ in events):
        await asyncio.sleep(0.05)
    await asyncio.sleep(2)
    start_cpu = cpu_seconds()
    await asyncio.sleep(20)
    idle_ms = (cpu_seconds() - start_cpu) * 1000
    latencies = []
    for _ in range(10):
        seen = len(events)
        start = time.monotonic()
        (root / "home" / "c1.json").write_text("{")
        while not any(kind == "restore" for kind, _ in events[seen:]):
            await asyncio.sleep(0.005)
        latencies.append((time.monotonic() - start) * 1000)
        await asyncio.sleep(0.5)
    task.cancel()
    print(f"idle watcher, 3 files: {idle_ms:.0f} ms CPU over 20 s")
    print(f"damage to restored: p50 {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms (n=10, debounce 300 ms)")


if __name__ == "__main__":
    asyncio.run(main())
