"""Process records and the orphan sweep against real processes: a recycled pid is never
signalled, a group whose leader died is still found, a record a stranger could write is ignored,
and the port holder is named."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_supervisor.runtime.port_conflict import local_port, port_conflict
from mcp_supervisor.spawn import procfs
from mcp_supervisor.spawn.records import ProcessRecord, ProcessRecords, still_ours
from tests.servers.fixtures import pid_alive

pytestmark = pytest.mark.timeout(60)

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
# a leader that starts a grandchild in its group, prints its pid, then exits
FORKER = [sys.executable, "-c", (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print(child.pid, flush=True)\n"
)]


def spawn(argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, start_new_session=True, **kw)  # type: ignore[call-overload, no-any-return]


def reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


async def wait_until(condition: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def previous_life(directory: Path, record: ProcessRecord) -> None:
    """Write a record as a daemon that died would have left it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{record.server}.json"
    path.write_text(json.dumps(record.to_json()))
    path.chmod(0o600)


def test_a_record_identifies_its_process_and_a_recycled_pid_never_matches(tmp_path: Path) -> None:
    proc = spawn(SLEEPER)
    try:
        records = ProcessRecords(tmp_path / "processes")
        record = records.record("alpha", proc.pid)
        assert record is not None and record.pgid == proc.pid and record.cmdline == tuple(SLEEPER)
        assert still_ours(record) == [proc.pid]
        saved = json.loads((tmp_path / "processes" / "alpha.json").read_text())
        assert saved["pid"] == proc.pid and saved["start_ticks"] == record.start_ticks
        # the same pid with another start time (or command) is another process: hands off
        for stranger in (
            ProcessRecord(**{**record.__dict__, "start_ticks": record.start_ticks - 1}),
            ProcessRecord(**{**record.__dict__, "cmdline": ("python", "other.py")}),
            ProcessRecord(**{**record.__dict__, "boot_id": "another-boot"}),
        ):
            assert still_ours(stranger) == []
        records.forget("alpha", proc.pid)
        assert not (tmp_path / "processes" / "alpha.json").exists()
        records.close()
    finally:
        reap(proc)


async def test_stop_leftovers_stops_a_previous_lifes_group_and_spares_a_recycled_pid(tmp_path: Path) -> None:
    directory = tmp_path / "processes"
    orphan = spawn(SLEEPER)
    innocent = spawn(SLEEPER)
    forker = spawn(FORKER, stdout=subprocess.PIPE)
    try:
        assert forker.stdout is not None
        grandchild = int(forker.stdout.readline())
        forker.wait(timeout=10)  # the leader is gone; its grandchild lives on in its group
        for name, proc in (("orphan", orphan), ("innocent", innocent)):
            stat = procfs.read_stat(proc.pid)
            assert stat is not None
            previous_life(directory, ProcessRecord(
                server=name, pid=proc.pid, pgid=proc.pid,
                # the innocent's record names an older process that had the same pid
                start_ticks=stat.start_ticks - (5 if name == "innocent" else 0),
                boot_id=procfs.boot_id(), cmdline=tuple(SLEEPER), daemon_pid=1, recorded_at=0.0))
        previous_life(directory, ProcessRecord(
            server="wrapper", pid=forker.pid, pgid=forker.pid, start_ticks=0, boot_id=procfs.boot_id(),
            cmdline=tuple(FORKER), daemon_pid=1, recorded_at=0.0))
        records = ProcessRecords(directory)
        stopped = await records.stop_leftovers(grace=2.0)
        assert len(stopped) == 2, stopped
        await wait_until(lambda: orphan.poll() is not None and not pid_alive(grandchild))
        assert innocent.poll() is None, "a process whose start time does not match was signalled"
        assert list(directory.glob("*.json")) == [], "matched and stale records are both cleared"
        records.close()
    finally:
        for proc in (orphan, innocent):
            reap(proc)
        if pid_alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


async def test_records_a_stranger_could_write_are_ignored(tmp_path: Path) -> None:
    victim = spawn(SLEEPER)
    try:
        stat = procfs.read_stat(victim.pid)
        assert stat is not None
        directory = tmp_path / "processes"
        previous_life(directory, ProcessRecord(
            server="victim", pid=victim.pid, pgid=victim.pid, start_ticks=stat.start_ticks,
            boot_id=procfs.boot_id(), cmdline=tuple(SLEEPER), daemon_pid=1, recorded_at=0.0))
        (directory / "victim.json").chmod(0o666)  # writable by anyone: not the daemon's own
        records = ProcessRecords(directory)
        assert await records.stop_leftovers(grace=1.0) == []
        records.close()
        directory.chmod(0o777)  # a directory anyone can write into: nothing in it is trusted
        loose = ProcessRecords(directory)
        assert await loose.stop_leftovers(grace=1.0) == []
        assert loose.problem and "chmod 700" in loose.problem
        assert victim.poll() is None
    finally:
        reap(victim)


def test_a_second_daemon_on_the_same_state_dir_does_not_sweep(tmp_path: Path) -> None:
    first = ProcessRecords(tmp_path / "processes")
    assert first.claim()
    code = subprocess.run(
        [sys.executable, "-c", (
            "import sys; from pathlib import Path\n"
            "from mcp_supervisor.spawn.records import ProcessRecords\n"
            "r = ProcessRecords(Path(sys.argv[1]))\n"
            "print(r.claim(), r.problem)\n"
        ), str(tmp_path / "processes")],
        capture_output=True, text=True, timeout=30,
    )
    assert code.stdout.startswith("False another mcp-supervisor uses"), code
    first.close()


def test_the_holder_of_a_port_is_named() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert os.getpid() in procfs.port_listeners(port)
        message = port_conflict(f"http://127.0.0.1:{port}/mcp", own_pgid=None)
        assert message is not None and f"pid {os.getpid()}" in message and f"port {port}" in message
        # our own group holding it is no conflict
        assert port_conflict(f"http://127.0.0.1:{port}/mcp", own_pgid=os.getpgid(0)) is None
        # nor is a holder newer than the server (what `docker run -p` sets up: docker-proxy)
        me = procfs.read_stat(os.getpid())
        assert me is not None
        url = f"http://127.0.0.1:{port}/mcp"
        assert port_conflict(url, own_pgid=None, own_start=me.start_ticks) is None
        assert port_conflict(url, own_pgid=None, own_start=me.start_ticks + 1) is not None
    assert local_port("http://example.com:8080/mcp") is None
    assert local_port("http://localhost/mcp") == 80


def test_parse_listeners_reads_only_listening_sockets_on_the_port() -> None:
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n"
        "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 222 1\n"
        "   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1\n"
    )
    assert procfs.parse_listeners(table, 8080) == {111}
