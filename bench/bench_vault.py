"""Vault figures: snapshot of 20 files (1 MB) to 3 locations, restore of one file, verify of 100
snapshots, and corruption-to-restored latency with the watcher. Prints figures; never fails.

Targets (issue 4): snapshot < 100 ms, restore < 30 ms, corruption to restored < 1 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from mcp_supervisor.config import parse_config
from mcp_supervisor.vault.service import VaultService


def make_config(root: Path) -> str:
    home = root / "home"
    home.mkdir()
    entries = []
    for i in range(20):
        servers = {f"s{i}-{j}": {"command": "npx", "args": ["-y", "x" * 400]} for j in range(100)}
        path = home / f"mcp{i}.json"
        path.write_text(json.dumps({"mcpServers": servers, "pad": "p" * (50_000 - len(json.dumps(servers)))}))
        entries.append(f'[[configs]]\nname = "c{i}"\npath = "{path}"\nformat = "mcp-client-json"\ncheck_interval = "1h"\n')
    locations = ", ".join(f'"{root}/loc{i}"' for i in range(3))
    return f'[backup]\nkey_file = "{root}/key"\nlocations = [{locations}]\nkeep_last = 200\n' + "".join(entries)


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"p50 {statistics.median(values) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   (n={len(values)})"


async def main() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        root = Path(tmp)
        config = parse_config(make_config(root), environ={})
        total = sum(c.path.stat().st_size for c in config.configs)
        vault = VaultService(config)
        await vault.backup("warm-up")
        snap_times = []
        for i in range(100):
            path = config.configs[i % 20].path
            data = json.loads(path.read_text())
            data["pad"] = data["pad"][:-8] + f"{i:08d}"
            path.write_text(json.dumps(data))
            start = time.perf_counter()
            await vault.backup("bench")
            snap_times.append(time.perf_counter() - start)
        print(f"snapshot of 20 files ({total / 1e6:.2f} MB) to 3 locations: {ms(snap_times)}   target < 100 ms")

        restore_times = []
        for _ in range(30):
            config.configs[0].path.write_text("{")
            start = time.perf_counter()
            await vault.restore("c0")
            restore_times.append(time.perf_counter() - start)
        print(f"restore of one file (newest valid snapshot):        {ms(restore_times)}   target < 30 ms")

        snapshots = len(await vault.list_snapshots())
        start = time.perf_counter()
        result = await vault.verify()
        print(f"verify of {snapshots} snapshots x 3 locations: {time.perf_counter() - start:.2f} s (ok={result['ok']})")

        watched = VaultService(parse_config(make_config_small(root), environ={}))
        task = asyncio.create_task(watched.run())
        target = root / "small" / "mcp.json"
        await asyncio.sleep(0.5)
        heal_times = []
        for _ in range(10):
            good = target.read_bytes()
            start = time.perf_counter()
            target.write_bytes(os.urandom(100))
            while not (target.is_file() and target.read_bytes() == good):
                await asyncio.sleep(0.005)
            heal_times.append(time.perf_counter() - start)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        print(f"corruption to restored with the watcher:           {ms(heal_times)}   target < 1 s")


def make_config_small(root: Path) -> str:
    (root / "small").mkdir()
    (root / "small" / "mcp.json").write_text(json.dumps({"mcpServers": {"a": {"command": "x"}}}))
    return (
        f'[backup]\nkey_file = "{root}/key"\nlocations = ["{root}/w0", "{root}/w1"]\n'
        f'[[configs]]\nname = "small"\npath = "{root}/small/mcp.json"\nformat = "mcp-client-json"\n'
    )


if __name__ == "__main__":
    from mcp_supervisor.logging import setup_logging

    setup_logging("error")
    asyncio.run(main())
