"""Off-host vault figures: a backup of 20 files (1 MB) to one local folder and one sftp:// location
(a real sshd on loopback), beside restic 0.14 backing up the same files to an SFTP repository on
the same sshd in the same run. Prints figures; never fails.

Goal (issue 19): our backup takes at most restic's time. Both the first (everything new) and a
following one with one file changed (the daily case) are measured.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_vault import make_config, ms
from mcp_supervisor.config import parse_config
from mcp_supervisor.vault.service import VaultService
from tests.remote_hosts import SSHServer, start_sshd

ROUNDS = 10


def change(path: Path, i: int) -> None:
    data = json.loads(path.read_text())
    data["pad"] = data["pad"][:-8] + f"{i:08d}"
    path.write_text(json.dumps(data))


async def ours(root: Path, server: SSHServer) -> tuple[float, list[float]]:
    root.mkdir()
    configs = make_config(root)
    text = configs[configs.index("[[configs]]"):]
    config = parse_config(
        f'[backup]\nkey_file = "{root}/key"\nlocations = ["{root}/local", "{server.url(root / "remote")}"]\n'
        f'keep_last = 200\n[backup.sftp]\nidentity_file = "{server.identity}"\nknown_hosts = "{server.known_hosts}"\n'
        + text, environ={})
    vault = VaultService(config)
    start = time.perf_counter()
    first = await vault.backup("first")
    full = time.perf_counter() - start
    assert len(first["copies"]) == 2, first
    times = []
    for i in range(ROUNDS):
        change(config.configs[i % 20].path, i)
        start = time.perf_counter()
        result = await vault.backup("bench")
        times.append(time.perf_counter() - start)
        assert len(result["copies"]) == 2, result
    return full, times


def restic(root: Path, server: SSHServer, home: Path) -> tuple[float, list[float]] | None:
    binary = shutil.which("restic")
    if binary is None:
        print("restic: not installed (Debian: apt-get install restic); no comparison")
        return None
    command = (f"ssh -i {server.identity} -p {server.port} -o UserKnownHostsFile={server.known_hosts} "
               f"-o IdentitiesOnly=yes {server.user}@127.0.0.1 -s sftp")
    base = [binary, "-q", "-r", f"sftp:{server.user}@127.0.0.1:{root / 'restic-repo'}", "-o",
            f"sftp.command={command}", "--no-cache"]
    env = {**os.environ, "RESTIC_PASSWORD": "bench-password"}

    def run(*args: str) -> float:
        start = time.perf_counter()
        subprocess.run([*base, *args], env=env, check=True, capture_output=True, timeout=300)
        return time.perf_counter() - start

    run("init")
    full = run("backup", str(home))
    times = []
    for i in range(ROUNDS):
        change(home / f"mcp{i % 20}.json", 1000 + i)
        times.append(run("backup", str(home)))
    return full, times


async def main() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        root = Path(tmp)
        server = start_sshd(root / "ssh")
        try:
            full, times = await ours(root / "ours", server)
            (root / "restic").mkdir()
            compared = restic(root / "restic", server, root / "ours" / "home")
        finally:
            server.stop()
        print(f"mcp-supervisor, 20 files (1 MB) to a folder + sftp://: first {full * 1000:7.1f} ms; "
              f"one file changed: {ms(times)}")
        if compared is not None:
            r_full, r_times = compared
            print(f"restic 0.14, the same files to an sftp: repository:   first {r_full * 1000:7.1f} ms; "
                  f"one file changed: {ms(r_times)}")
            ratio = sorted(times)[len(times) // 2] / sorted(r_times)[len(r_times) // 2]
            print(f"median ratio (ours / restic), one file changed: {ratio:.2f}   goal <= 1.00")


if __name__ == "__main__":
    from mcp_supervisor.logging import setup_logging

    setup_logging("error")
    asyncio.run(main())
