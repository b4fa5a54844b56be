"""Managed processes: real children, real signals, real process groups."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from mcp_supervisor.actuators.process import ManagedProcess, ProcessStartError, RotatingLog
from mcp_supervisor.config import ServerConfig
from tests.servers.fixtures import TEST_USER, pid_alive

REPO = Path(__file__).resolve().parent.parent


def server(*args: str, command: str = sys.executable, name: str = "p") -> ServerConfig:
    return ServerConfig(
        name=name, transport="http", url="http://127.0.0.1:1/mcp", managed=True, command=command, args=list(args),
        user=TEST_USER,
    )


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


SLEEPER = "import time\nprint('up', flush=True)\ntime.sleep(60)"
# A leader that spawns a grandchild ignoring SIGTERM, prints its pid, then sleeps.
FAMILY = (
    "import os, signal, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', "
    "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


async def test_exit_is_noticed_at_once_with_its_code(tmp_path: Path) -> None:
    exits: list[int | None] = []
    noticed = asyncio.Event()

    def on_exit(code: int | None) -> None:
        exits.append(code)
        noticed.set()

    proc = ManagedProcess(server("-c", "import sys; sys.exit(3)"), tmp_path, on_exit=on_exit)
    await proc.start()
    await asyncio.wait_for(noticed.wait(), 10)
    assert exits == [3]
    assert not proc.running
    await proc.stop()


async def test_kill_9_then_restart_gives_a_new_running_process(tmp_path: Path) -> None:
    noticed = asyncio.Event()
    proc = ManagedProcess(server("-c", SLEEPER), tmp_path, on_exit=lambda code: noticed.set())
    await proc.start()
    first = proc.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await asyncio.wait_for(noticed.wait(), 10)
    assert proc.returncode == -signal.SIGKILL
    assert await proc.restart()
    assert proc.pid != first and proc.running and proc.restarts == 1
    second = proc.pid
    await proc.stop()
    assert second is not None and not pid_alive(second)


async def test_stop_kills_the_whole_group_even_when_it_ignores_term(tmp_path: Path) -> None:
    proc = ManagedProcess(server("-c", FAMILY), tmp_path, grace=0.3)
    await proc.start()
    leader = proc.pid
    assert leader is not None
    await wait_for(lambda: proc.log.path.exists() and proc.log.path.read_text().strip().isdigit())
    grandchild = int(proc.log.path.read_text().strip())
    assert pid_alive(grandchild)
    started = time.monotonic()
    await proc.stop()
    assert time.monotonic() - started < 3.0
    await wait_for(lambda: not pid_alive(grandchild) and not pid_alive(leader))


async def test_output_goes_to_a_rotating_log(tmp_path: Path) -> None:
    code = "import sys\nfor i in range(400): sys.stdout.write('x' * 99 + '\\n')\nsys.stdout.flush()"
    done = asyncio.Event()
    proc = ManagedProcess(server("-c", code), tmp_path, on_exit=lambda c: done.set(), log_max_bytes=10_000)
    await proc.start()
    await asyncio.wait_for(done.wait(), 10)
    await proc.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["p.log", "p.log.1", "p.log.2", "p.log.3"]
    assert all((tmp_path / f).stat().st_size <= 10_000 for f in files)
    # the server's raw output (not redacted) is the daemon's alone: 0600 files in a 0700 directory
    assert {stat.S_IMODE((tmp_path / f).stat().st_mode) for f in files} == {0o600}
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700


def test_an_old_world_readable_log_is_made_private_and_never_followed_through_a_symlink(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o755)
    logs.chmod(0o755)
    (logs / "old.log").write_bytes(b"before\n")
    (logs / "old.log").chmod(0o644)
    log = RotatingLog(logs / "old.log")
    log.write(b"after\n")
    log.close()
    assert (logs / "old.log").read_bytes() == b"before\nafter\n"
    assert stat.S_IMODE((logs / "old.log").stat().st_mode) == 0o600 and stat.S_IMODE(logs.stat().st_mode) == 0o700
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    (logs / "link.log").symlink_to(target)
    with pytest.raises(OSError):
        RotatingLog(logs / "link.log")
    assert target.read_bytes() == b""


def test_rotating_log_keeps_the_newest_bytes(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "s.log", max_bytes=10, backups=2)
    log.write(b"0123456789abcdefghij" + b"KLMNO")
    assert (tmp_path / "s.log").read_bytes() == b"KLMNO"
    assert (tmp_path / "s.log.1").read_bytes() == b"abcdefghij"
    assert (tmp_path / "s.log.2").read_bytes() == b"0123456789"
    assert log.tail(3) == "MNO"
    log.close()


async def test_command_not_found_is_a_clear_error(tmp_path: Path) -> None:
    proc = ManagedProcess(server(command="/nonexistent/mcp-server"), tmp_path)
    with pytest.raises(ProcessStartError, match=r"cannot start '/nonexistent/mcp-server'.*check 'command'"):
        await proc.start()
    assert proc.pid is None


# A leader whose child inherits (and keeps) its stdout: the leader's death must still be noticed.
HOLDER = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


async def test_leader_death_is_noticed_while_a_child_still_holds_its_output(tmp_path: Path) -> None:
    noticed = asyncio.Event()
    proc = ManagedProcess(server("-c", HOLDER), tmp_path, on_exit=lambda code: noticed.set())
    await proc.start()
    leader = proc.pid
    assert leader is not None
    await wait_for(lambda: proc.log.path.read_text().strip().isdigit())
    child = int(proc.log.path.read_text().strip())
    os.kill(leader, signal.SIGKILL)
    await asyncio.wait_for(noticed.wait(), 5)  # the child (still holding stdout) sleeps 60 s
    assert pid_alive(child) and not proc.running
    await proc.start()  # starting again first clears the old group, orphan included
    await wait_for(lambda: not pid_alive(child))
    assert proc.running and proc.pid != leader
    await proc.close()
    assert group_members(leader) == []


async def test_a_stopped_process_still_counts_as_running_and_stop_still_kills_it(tmp_path: Path) -> None:
    """SIGSTOP is a hang, not an exit: only the probe's deadline can see it (not this layer)."""
    proc = ManagedProcess(server("-c", SLEEPER), tmp_path, grace=0.2)
    await proc.start()
    pid = proc.pid
    assert pid is not None
    await wait_for(lambda: "up" in proc.log.path.read_text())
    os.kill(pid, signal.SIGSTOP)
    await wait_for(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T")
    assert proc.running and not proc.exited.is_set()
    await proc.stop()
    assert not pid_alive(pid) and proc.returncode == -signal.SIGKILL


async def test_kill_9_a_real_http_mcp_server_20_times_at_random_moments(tmp_path: Path) -> None:
    """Every kill is noticed, every restart answers MCP again, and no process is left behind."""
    from mcp import Client

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    port = free_port()
    exits: list[int | None] = []
    exited = asyncio.Event()

    def on_exit(code: int | None) -> None:
        exits.append(code)
        exited.set()

    cfg = server(str(REPO / "examples" / "notes_server.py"), "http", str(port), name="notes")
    proc = ManagedProcess(cfg, tmp_path, grace=1.0, on_exit=on_exit)

    async def answers() -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                    tools = await client.list_tools()
                assert "add_note" in {t.name for t in tools.tools}
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    pgids: list[int] = []
    await proc.start()
    try:
        for round_no in range(1, 21):
            pid = proc.pid
            assert pid is not None and proc.running
            pgids.append(pid)
            if round_no % 5 == 0:
                await answers()  # kill a server that is serving
            else:
                await asyncio.sleep(rng.uniform(0, 1.5))  # kill it at a random point of its start
            exited.clear()
            os.kill(pid, signal.SIGKILL)
            await asyncio.wait_for(exited.wait(), 5)
            await proc.restart()
            assert group_members(pid) == [], f"round {round_no} (seed {seed}): old group still alive"
        assert exits == [-signal.SIGKILL] * 20 and proc.restarts == 20
        await answers()
        assert proc.pid is not None
        pgids.append(proc.pid)
    finally:
        await proc.close()
    assert all(group_members(pgid) == [] for pgid in pgids)
