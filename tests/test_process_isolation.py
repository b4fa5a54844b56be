"""Managed servers run least-privileged: their own account, a clean environment, their stop signal.

Real children read through /proc: what the kernel says the process is and holds, not what our
code meant to pass.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.actuators.process import ManagedProcess, ProcessStartError
from mcp_supervisor.config import ConfigError, ServerConfig, parse_config
from tests.servers.fixtures import TEST_USER

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
SLEEP = ["-c", "echo up; exec sleep 60"]


def shell_server(name: str, *, args: list[str] = SLEEP, **fields: Any) -> ServerConfig:
    fields.setdefault("user", TEST_USER)
    return ServerConfig(
        name=name, transport="http", url="http://127.0.0.1:1/mcp", managed=True, command="/bin/sh", args=args,
        **fields,
    )  # fmt: skip


async def started(proc: ManagedProcess, timeout: float = 10.0) -> int:
    """Start and wait (deadline) until the shell has exec'd into sleep, so /proc shows the server."""
    await proc.start()
    pid = proc.pid
    assert pid is not None
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}/comm").read_text().strip() != "sleep":
        assert time.monotonic() < deadline, "the server did not come up"
        await asyncio.sleep(0.02)
    return pid


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().partition("=")[::2] for item in raw.split(b"\0") if item)


def ids_of(pid: int) -> dict[str, list[int]]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split(":")[1].split() for line in status if ":" in line}
    return {key: [int(x) for x in fields[key]] for key in ("Uid", "Gid", "Groups")}


async def test_environment_holds_neither_the_daemons_variables_nor_another_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAEMON_ONLY_CANARY", "daemon-canary-7f3a")
    monkeypatch.setenv("SHARED_BY_CHOICE", "passed-on-purpose")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    a = ManagedProcess(shell_server("a", env={"A_TOKEN": "token-of-a-91c2"}, inherit_env=["SHARED_BY_CHOICE"]), tmp_path)
    b = ManagedProcess(shell_server("b", env={"B_TOKEN": "token-of-b-44d1"}), tmp_path)
    try:
        env_a = environ_of(await started(a))
        env_b = environ_of(await started(b))
    finally:
        await a.close()
        await b.close()
    assert env_a["A_TOKEN"] == "token-of-a-91c2" and env_a["SHARED_BY_CHOICE"] == "passed-on-purpose"
    assert env_b["B_TOKEN"] == "token-of-b-44d1" and "SHARED_BY_CHOICE" not in env_b
    for env, other in ((env_a, "token-of-b-44d1"), (env_b, "token-of-a-91c2")):
        values = "\n".join(env.values())
        assert "daemon-canary-7f3a" not in values and "DAEMON_ONLY_CANARY" not in env
        assert other not in values
        assert env["TZ"] == "Europe/Berlin" and env["PATH"] and env["USER"] == TEST_USER
    assert set(env_b) <= {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "B_TOKEN", "PWD", "SHLVL", "_"}


@as_root
async def test_user_nobody_runs_the_server_as_65534_without_roots_groups(tmp_path: Path) -> None:
    proc = ManagedProcess(shell_server("n", user="nobody"), tmp_path)
    try:
        pid = await started(proc)
        ids, env = ids_of(pid), environ_of(pid)
    finally:
        await proc.close()
    assert ids["Uid"] == [65534] * 4
    assert 0 not in ids["Gid"] and 0 not in ids["Groups"]
    assert env["USER"] == "nobody" and env["HOME"] != "/root"
    assert "up" in (tmp_path / "n.log").read_text()


@as_root
async def test_a_root_daemon_runs_a_server_without_user_as_nobody(tmp_path: Path) -> None:
    proc = ManagedProcess(shell_server("d", user=None), tmp_path)
    try:
        ids = ids_of(await started(proc))
    finally:
        await proc.close()
    assert ids["Uid"] == [65534] * 4 and 0 not in ids["Groups"]


@as_root
async def test_a_command_nobody_cannot_run_says_which_field_fixes_it(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    script = private / "server.sh"
    script.write_text("#!/bin/sh\nsleep 60\n")
    script.chmod(0o755)
    server = ServerConfig(
        name="p", transport="http", url="http://127.0.0.1:1/mcp", managed=True, command=str(script)
    )
    proc = ManagedProcess(server, tmp_path)
    with pytest.raises(ProcessStartError, match=r"cannot execute \S+/server.sh as nobody: \S+ is 0700 \(owner root\); "
                       r"it runs as nobody \(the default under a root daemon: 'user' is not set\): set user ="):
        await proc.start()
    await proc.close()


async def test_an_unknown_user_is_refused_with_the_field_named(tmp_path: Path) -> None:
    proc = ManagedProcess(shell_server("u", user="no-such-account-x"), tmp_path)
    with pytest.raises(ProcessStartError, match=r"user = 'no-such-account-x' is not an account"):
        await proc.start()
    assert proc.pid is None
    await proc.close()


async def test_stop_signal_is_the_one_configured(tmp_path: Path) -> None:
    script = ["-c", "trap 'echo got-INT; exit 0' INT; echo up; while :; do sleep 0.05; done"]
    proc = ManagedProcess(shell_server("s", args=script, stop_signal="INT"), tmp_path)
    await proc.start()
    log = tmp_path / "s.log"
    deadline = time.monotonic() + 10
    while "up" not in log.read_text():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await proc.stop()
    await proc.close()
    assert proc.returncode == 0 and "got-INT" in log.read_text()


async def test_stop_timeout_bounds_the_wait_for_a_server_that_ignores_its_signal(tmp_path: Path) -> None:
    script = ["-c", "trap '' TERM; echo up; exec sleep 60"]
    proc = ManagedProcess(shell_server("t", args=script, stop_timeout=0.2), tmp_path, grace=120.0)
    pid = await started(proc)
    began = time.monotonic()
    await proc.stop()
    await proc.close()
    assert time.monotonic() - began < 60, "stop waited for the 120 s grace instead of stop_timeout"
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ('user = "nobody"', "'user' applies to servers the supervisor starts"),
        ('limits = { memory = "lots" }', "'lots' is not a size; use a number with a unit: '64M'"),
        ("stop_timeout = \"1s\"", "'stop_timeout' applies to managed servers only"),
        ('args = ["--token", "x"]\nsecret_args = [2]', "secret_args: 2 is not an index into args"),
        ('stop_signal = "TERMINATE"', "stop_signal: invalid value 'TERMINATE'"),
    ],
)
def test_process_fields_are_validated_with_the_field_named(fields: str, message: str) -> None:
    text = f'[[servers]]\nname = "x"\ntransport = "http"\nurl = "http://127.0.0.1:1/mcp"\n{fields}\n'
    if "secret_args" in fields or "stop_signal" in fields or "limits" in fields:
        text += 'managed = true\ncommand = "/bin/true"\n'
    with pytest.raises(ConfigError, match="servers\\[0\\] \\(x\\)") as caught:
        parse_config(text, environ={})
    assert message in str(caught.value)


def test_a_daemon_that_is_not_root_runs_servers_as_itself_and_refuses_other_users() -> None:
    from mcp_supervisor.spawn.identity import IdentityError, resolve_identity

    own = resolve_identity(shell_server("o", user=None), daemon_euid=65534)
    assert own.uid == 65534 and own.switch is False and own.name == "nobody"
    with pytest.raises(IdentityError, match=r"user = 'root' needs a daemon running as root .* remove 'user'"):
        resolve_identity(shell_server("r", user="root"), daemon_euid=65534)
