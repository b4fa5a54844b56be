"""What ``supervisorctl-mcp ready`` and ``status`` load: scripts poll them, so every import is latency.

Run as a user runs them (what the console script runs, against a real API server on a real
socket), listing every module loaded when the process ends. Timings are in
bench/bench_cli.py; this only guards against heavy modules creeping back in.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from mcp_supervisor.api.server import ApiServer
from tests.test_cli import clean_env, control  # noqa: F401  (fixtures; api and sock_path: conftest)

HEAVY = ("asyncio", "http.client", "email", "mcp_supervisor.cli.vault_commands", "mcp_supervisor.config",
         "pydantic", "aiohttp", "mcp", "shutil")


_WRAPPER = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.__stderr__.write('MODULES ' + ' '.join(sorted(sys.modules)) + '\\n'))\n"
    "sys.argv = ['supervisorctl-mcp', *sys.argv[1:]]\n"
    "from mcp_supervisor.cli.main import main\n"
    "sys.exit(main())\n"
)
"""What the console script runs, plus a list of every module loaded when the process ends."""


async def imported_by(*args: str, env: dict[str, str]) -> tuple[int, set[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WRAPPER, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd="/",
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = [line for line in err.decode().splitlines() if line.startswith("MODULES ")]
    assert proc.returncode is not None and lines, err.decode()[-500:]
    return proc.returncode, set(lines[-1].split()[1:])


@pytest.mark.parametrize(("args", "code"), [(("ready",), 0), (("ready", "--json"), 0), (("status", "--json"), 0),
                                            (("status",), 0)])
async def test_ready_and_status_load_no_heavy_module(
    api: ApiServer, sock_path: Path, short_tmp: Path, args: tuple[str, ...], code: int
) -> None:
    env = clean_env(short_tmp, MCP_SUPERVISOR_SOCKET=str(sock_path))
    exit_code, modules = await imported_by(*args, env=env)
    assert exit_code == code
    loaded = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert loaded == [], f"`supervisorctl-mcp {' '.join(args)}` imported {loaded}"


async def test_plugin_commands_are_still_offered_and_parsed(short_tmp: Path) -> None:
    env = clean_env(short_tmp)
    exit_code, modules = await imported_by("--help", env=env)
    assert exit_code == 0 and "mcp_supervisor.cli.vault_commands" in modules
    exit_code, modules = await imported_by("backups", "--help", env=env)
    assert exit_code == 0 and "mcp_supervisor.cli.vault_commands" in modules
