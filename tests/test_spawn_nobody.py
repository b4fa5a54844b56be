"""Real third-party stdio servers, run the way a root daemon runs them: as nobody, clean environment.

One from the npm registry (``@modelcontextprotocol/server-everything``) and one from PyPI
(``mcp-server-time``), installed once into ``/opt/mcp-supervisor-tests`` (0755: nobody can read it;
the interpreter under /root could not be used, so the PyPI one gets a venv of Debian's
/usr/bin/python3). Each test skips with the reason when the install cannot be made here.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mcp_supervisor.config import ProbeConfig, ServerConfig
from mcp_supervisor.health.model import ProbeKind
from mcp_supervisor.probes import ProbeContext, create_prober
from mcp_supervisor.spawn import procfs

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(os.geteuid() != 0, reason="running servers as nobody needs a root daemon")]

BASE = Path("/opt/mcp-supervisor-tests")
DAEMON_CANARY = "daemon-only-canary-5d1e"


def _install(marker: Path, steps: list[list[str]]) -> str | None:
    """Run the install steps unless ``marker`` exists; None on success, else why not. Under a lock
    on BASE: xdist workers and other test sessions on this machine share the install."""
    if marker.exists():
        return None
    BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    BASE.chmod(0o755)
    with open(BASE / ".install.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return None if marker.exists() else _run_steps(marker, steps)


def _run_steps(marker: Path, steps: list[list[str]]) -> str | None:
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=400, env={**os.environ},
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{step[0]} failed: {exc}"
        if done.returncode != 0:
            return f"{' '.join(step[:3])} failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return None if marker.exists() else f"{marker} is missing after the install"


@pytest.fixture(scope="session")
def everything() -> Path:
    target = BASE / "npm"
    exe = target / "node_modules" / ".bin" / "mcp-server-everything"
    problem = _install(exe, [["npm", "install", "--prefix", str(target), "--no-audit", "--no-fund",
                              "@modelcontextprotocol/server-everything"]])
    if problem:
        pytest.skip(f"cannot install @modelcontextprotocol/server-everything from npm: {problem}")
    return exe


@pytest.fixture(scope="session")
def time_server() -> Path:
    target = BASE / "time-venv"
    exe = target / "bin" / "mcp-server-time"
    problem = _install(exe, [["/usr/bin/python3", "-m", "venv", str(target)],
                             [str(target / "bin" / "pip"), "install", "-q", "mcp-server-time"]])
    if problem:
        pytest.skip(f"cannot install mcp-server-time from PyPI into a /usr/bin/python3 venv: {problem}")
    return exe


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state directory nobody can pass through to its HOME (pytest's tmp tree is root's 0700)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="mcp-nobody-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def context(state_dir: Path) -> AsyncIterator[ProbeContext]:
    ctx = ProbeContext(state_dir=state_dir / "state")
    yield ctx
    await ctx.aclose()


def group_of(pgid: int) -> list[int]:
    return [s.pid for s in procfs.group_members(pgid, procfs.all_stats()) if s.alive]


def ids(pid: int) -> tuple[list[int], list[int]]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return [int(x) for x in fields["Uid"]], [int(x) for x in fields["Groups"]]


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


async def test_npm_and_pypi_servers_are_healthy_as_nobody_and_see_only_their_own_environment(
    everything: Path, time_server: Path, context: ProbeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAEMON_ONLY_TOKEN", DAEMON_CANARY)
    servers = [
        ServerConfig(name="everything", transport="stdio", command=str(everything), args=["stdio"],
                     env={"EVERYTHING_SECRET": "secret-of-everything"}, limits={"open_files": 1024},
                     probe=ProbeConfig(timeout=60)),
        ServerConfig(name="time", transport="stdio", command=str(time_server),
                     env={"TIME_SECRET": "secret-of-time"}, probe=ProbeConfig(timeout=60)),
    ]
    probers = [create_prober(server, context) for server in servers]
    try:
        for prober in probers:  # warm: the instance stays up so its processes can be read
            result = await prober.probe(ProbeKind.WARM)
            assert result.ok, f"{prober.server.name}: {result.message}"
        for prober in probers:
            pgid = prober.warm_pid  # type: ignore[attr-defined]
            assert pgid is not None
            members = group_of(pgid)
            assert members, f"{prober.server.name}: no process in group {pgid}"
            other = "TIME_SECRET" if prober.server.name == "everything" else "EVERYTHING_SECRET"
            own = "EVERYTHING_SECRET" if prober.server.name == "everything" else "TIME_SECRET"
            for pid in members:
                uids, groups = ids(pid)
                assert uids == [65534] * 4 and 0 not in groups, (prober.server.name, pid, uids, groups)
                env = environ(pid)
                assert "DAEMON_ONLY_TOKEN" not in env and DAEMON_CANARY not in "".join(env.values())
                assert other not in env and env.get(own), (prober.server.name, sorted(env))
                assert env["HOME"].endswith(f"/homes/{prober.server.name}") and env["USER"] == "nobody"
        cold = await probers[1].probe(ProbeKind.COLD)  # the MCP client's full path, as nobody too
        assert cold.ok, cold.message
    finally:
        for prober in probers:
            await prober.aclose()
