"""The one spawn path with real children: group sweeps, limits through real cgroups, private HOMEs.

Root-only where the kernel's rules need root (switching users, making cgroups); the cgroup tests
skip with the reason when this host has no usable memory/pids hierarchy.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_supervisor.config import ServerConfig
from mcp_supervisor.spawn import SpawnRefused, cgroups, spawn, spec_for_server, stdio_transport
from mcp_supervisor.spawn.home import private_home
from tests.servers.fixtures import pid_alive, wait_gone

pytestmark = pytest.mark.timeout(120)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users and making cgroups need root")

# A leader that leaves a TERM-ignoring sleeper in its group (output detached, so the pipe ends with
# the leader), writes the sleeper's pid to a file, then waits for stdin EOF like a stdio server.
LEAVES_A_SLEEPER = 'trap "" TERM; sleep 300 </dev/null >/dev/null 2>&1 & echo $! > "$1/$$"; read -r line; exit 0'


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A state directory nobody can reach (pytest's own tmp tree is root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="mcp-spawn-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def shell(name: str, script: str, *args: str, **kw: object) -> ServerConfig:
    return ServerConfig(name=name, transport="stdio", command="/bin/sh", args=["-c", script, "sh", *args],
                        user=kw.pop("user", "root" if os.geteuid() == 0 else None), **kw)  # type: ignore[arg-type]


def cgroups_or_skip() -> None:
    state = cgroups.support()
    if state.hierarchy is None:
        pytest.skip(f"no usable cgroups here: {state.problem}")


async def test_100_stdio_sessions_whose_child_ignores_sigterm_leave_nothing(tmp_path: Path) -> None:
    spec = spec_for_server(shell("sleepy", LEAVES_A_SLEEPER, str(tmp_path)), state_dir=tmp_path, role="probe")

    async def one() -> int:
        async with stdio_transport(spec, grace=2.0) as (_, _, child):
            await wait_for_file(tmp_path / str(child.pid))
            return child.pid

    leaders: list[int] = []
    for _ in range(5):  # 5 x 20 at once: the sweep's grace runs in parallel, not 100 times over
        leaders += await asyncio.gather(*(one() for _ in range(20)))
    sleepers = [int((tmp_path / str(pid)).read_text()) for pid in leaders]
    assert len(set(sleepers)) == 100
    wait_gone(sleepers, 10)
    assert not [pid for pid in sleepers if pid_alive(pid)]


async def test_100_cold_probes_of_a_server_whose_child_ignores_sigterm_leave_nothing(tmp_path: Path) -> None:
    from mcp_supervisor.health.model import ProbeKind
    from mcp_supervisor.probes import ProbeContext, create_prober

    # answers the first request line by exiting: the probe fails (crashed), the sleeper must go anyway
    server = shell("sleepy-probe", LEAVES_A_SLEEPER, str(tmp_path), probe={"timeout": 10})
    context = ProbeContext(max_concurrent_cold=10, state_dir=tmp_path / "state")
    probers = [create_prober(server, context) for _ in range(10)]
    try:
        for _ in range(10):
            results = await asyncio.gather(*(p.probe(ProbeKind.COLD) for p in probers))
            assert all(r.failure is not None and r.failure.value == "crashed" for r in results), results
    finally:
        for prober in probers:
            await prober.aclose()
        await context.aclose()
    sleepers = [int(path.read_text()) for path in tmp_path.iterdir() if path.name.isdigit()]
    assert len(sleepers) == 100
    wait_gone(sleepers, 10)
    assert not [pid for pid in sleepers if pid_alive(pid)]


async def wait_for_file(path: Path, seconds: float = 20.0) -> None:
    async with asyncio.timeout(seconds):
        while not path.exists() or not path.read_text().strip():
            await asyncio.sleep(0.01)


@as_root
async def test_a_fork_bomb_under_tasks_32_stays_at_32(tmp_path: Path) -> None:
    cgroups_or_skip()
    bomb = "b() { b & b & sleep 60; }; b 2>/dev/null"
    spec = spec_for_server(shell("bomb", bomb, limits={"tasks": 32}), state_dir=tmp_path, role="managed")
    child = await spawn(spec, stdio=False)
    group = child.cgroup
    assert group is not None
    pids_dir = group.dirs[-1]
    try:
        async with asyncio.timeout(30):  # until the kernel has refused a fork: the bomb is at its bound
            while cgroups.parse_counter((pids_dir / "pids.events").read_text(), "max") == 0:
                await asyncio.sleep(0.05)
        members = group.members()
        assert 1 < len(members) <= 32
        assert int((pids_dir / "pids.current").read_text()) <= 32
    finally:
        info = await child.stop(grace=0, polite=False)
    assert info.returncode is not None  # killed, or a shell that exits 2 when its own fork is refused
    assert not [pid for pid in members if pid_alive(pid)]
    assert not pids_dir.exists(), "the child's cgroup is removed after the sweep"


@as_root
async def test_memory_limit_is_an_oom_kill_read_back_with_the_limit(tmp_path: Path) -> None:
    cgroups_or_skip()
    hog = "import time\nheap = []\nwhile True:\n    heap.append(bytearray(4 << 20))\n    time.sleep(0.01)\n"
    server = ServerConfig(name="hog", transport="stdio", command="/usr/bin/python3", args=["-c", hog],
                          user="nobody", limits={"memory": "64M", "open_files": 64})
    child = await spawn(spec_for_server(server, state_dir=tmp_path, role="managed"), stdio=False)
    limits = Path(f"/proc/{child.pid}/limits").read_text()
    assert any(line.startswith("Max open files") and line.split()[3:5] == ["64", "64"] for line in limits.splitlines())
    async with asyncio.timeout(60):
        info = await child.wait()
    await child.cleanup()
    assert info.oom and info.signal == signal.SIGKILL
    assert info.text == "killed by the kernel: out of memory (limit 64M)"


@as_root
async def test_a_child_runs_as_its_user_with_a_clean_environment_and_umask(open_dir: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path = open_dir
    monkeypatch.setenv("DAEMON_ONLY_SECRET", "daemon-canary")
    script = 'umask; grep -E "^(Uid|Gid|Groups):" /proc/self/status; env; touch "$HOME/written"'
    spec = spec_for_server(shell("who", script, user="nobody", env={"OWN": "mine"}), state_dir=tmp_path, role="probe")
    out = tmp_path / "out"
    with open(out, "wb") as handle:
        child = await spawn(spec, stdio=False, output=handle.fileno())
        info = await child.wait()
        await child.cleanup()
    text = out.read_text()
    assert info.returncode == 0, text
    lines = text.splitlines()
    assert lines[0] == "0077"
    ids = {line.split(":")[0]: line.split()[1:] for line in lines[1:4]}
    assert ids["Uid"] == ["65534"] * 4 and ids["Gid"][0] == "65534" and "0" not in ids["Groups"]
    env = dict(line.split("=", 1) for line in lines[4:] if "=" in line)
    assert "DAEMON_ONLY_SECRET" not in env and env["OWN"] == "mine" and env["USER"] == "nobody"
    home = tmp_path / "homes" / "who"
    assert env["HOME"] == str(home) and (home / "written").stat().st_uid == 65534
    info_home = home.lstat()
    assert stat.S_ISDIR(info_home.st_mode) and stat.S_IMODE(info_home.st_mode) == 0o700
    assert info_home.st_uid == 65534 and stat.S_IMODE(tmp_path.stat().st_mode) == 0o711


@as_root
def test_a_private_home_is_never_made_through_a_symlink(tmp_path: Path) -> None:
    state = tmp_path / "state"
    private_home(state, "x", 65534, 65534)
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    (state / "homes" / "evil").symlink_to(victim)  # as if planted: the walk must not follow it
    with pytest.raises(OSError, match=r"cannot open \S+/homes/evil: .*remove it"):
        private_home(state, "evil", 65534, 65534)
    assert victim.stat().st_uid == 0, "root's chown went through a symlink"


@as_root
def test_a_command_nobody_cannot_reach_is_refused_with_the_directory_and_the_fix(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    script = private / "server.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    server = ServerConfig(name="p", transport="stdio", command=str(script))
    with pytest.raises(SpawnRefused, match=rf"cannot execute {script} as nobody: /\S+ is 0700 "
                                           r"\(owner root\); it runs as nobody \(the default .*set user ="):
        spec_for_server(server, state_dir=tmp_path / "state", role="probe")


def test_cgroup_files_are_read_the_way_the_kernel_writes_them() -> None:
    own = cgroups.parse_proc_cgroup("12:pids:/user.slice\n4:memory:/process_api/abc\n1:name=systemd:/\n0::/x.scope\n")
    assert own["pids"] == "/user.slice" and own["memory"] == "/process_api/abc" and own[""] == "/x.scope"
    mountinfo = (
        "30 25 0:26 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n"
        "31 25 0:27 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory\n"
        "32 25 0:28 / /sys/fs/cgroup/pids rw,relatime shared:11 - cgroup cgroup rw,pids\n"
    )
    v2, v1 = cgroups.parse_mountinfo(mountinfo)
    assert v2 == Path("/sys/fs/cgroup/unified") and v1 == {"memory": Path("/sys/fs/cgroup/memory"),
                                                          "pids": Path("/sys/fs/cgroup/pids")}
    events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n"
    assert cgroups.parse_counter(events, "oom_kill") == 2
    assert cgroups.parse_counter("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n", "oom_kill") == 1


@as_root
def test_check_config_warns_per_server_about_root_and_about_what_its_account_cannot_run(tmp_path: Path) -> None:
    import subprocess
    import sys

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "server").write_text("#!/bin/sh\n")
    (private / "server").chmod(0o755)
    config = tmp_path / "sup.toml"
    config.write_text(f"""
[supervisor]
socket = "{tmp_path}/ctl.sock"
state_dir = "{tmp_path}/state"
[[servers]]
name = "as-root"
transport = "stdio"
user = "root"
command = "/bin/cat"
limits = {{ memory = "512M", tasks = 256, open_files = 4096 }}
[[servers]]
name = "hidden"
transport = "stdio"
command = "{private}/server"
[[servers]]
name = "fine"
transport = "stdio"
command = "/bin/cat"
""")
    ctl = Path(sys.executable).parent / "supervisorctl-mcp"
    done = subprocess.run([str(ctl), "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 2, done.stderr
    assert "server 'as-root': a root daemon runs it as root (user = 'root')" in lines[0]
    assert f"server 'hidden': cannot execute {private}/server as nobody: " in lines[1] and "set user =" in lines[1]
    assert not (tmp_path / "state").exists(), "check-config makes nothing"
