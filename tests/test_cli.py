"""``supervisorctl-mcp`` as a user runs it: the installed console script, as a subprocess, against
the real API server on a real socket (driven by the SupervisorControl from test_api)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.api.server import ApiServer, start_api_server
from mcp_supervisor.cli.render import ready_line, relative, status_rows
from mcp_supervisor.health.model import Command
from tests.live_daemon import wait_until
from tests.test_api import DrivenControl

CLI = Path(sys.executable).parent / "supervisorctl-mcp"
if not CLI.exists():  # pragma: no cover - a venv without the console script installed
    CLI = Path(shutil.which("supervisorctl-mcp") or "supervisorctl-mcp")


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """No inherited socket/config: the CLI must find only what the test gives it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_SUPERVISOR_")}
    env.update({"HOME": str(home), "XDG_RUNTIME_DIR": str(home), "COLUMNS": "200", "NO_COLOR": "1"})
    env.update(extra)
    return env


async def run_cli(*args: str, env: dict[str, str], timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(CLI), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def control() -> DrivenControl:
    return DrivenControl({"alpha": "healthy", "beta": "failed", "gamma": "healthy"}, critical={"alpha", "gamma"})


@pytest.fixture
def env(short_tmp: Path, sock_path: Path) -> dict[str, str]:
    return clean_env(short_tmp, MCP_SUPERVISOR_SOCKET=str(sock_path))


# --- ready --------------------------------------------------------------------------------------


async def test_ready_exit_codes_and_one_line_reasons(
    api: ApiServer, control: DrivenControl, env: dict[str, str]
) -> None:
    assert await run_cli("ready", env=env) == (0, "ready\n", "")
    control.set_state("gamma", "failed")
    code, out, _ = await run_cli("ready", env=env)
    assert code == 1 and out == "not ready: gamma is failed (gamma is failed)\n"
    code, out, _ = await run_cli("ready", "--server", "alpha", env=env)
    assert code == 0
    code, out, _ = await run_cli("ready", "--server", "alpha", "--server", "beta", env=env)
    assert code == 1 and "beta is failed" in out
    code, _, err = await run_cli("ready", "--server", "nope", env=env)
    assert code == 1 and "no server named 'nope'" in err


async def test_ready_wait_returns_as_soon_as_the_server_recovers(
    api: ApiServer, control: DrivenControl, env: dict[str, str]
) -> None:
    control.set_state("alpha", "starting")
    pending = asyncio.create_task(run_cli("ready", "--wait", "30", env=env))
    await wait_until(lambda: control.waiting == 1, 10)  # the CLI is parked in the long-poll
    assert not pending.done()
    control.set_state("alpha", "healthy")
    code, out, _ = await asyncio.wait_for(pending, 15)
    assert (code, out) == (0, "ready\n")


async def test_ready_wait_also_waits_for_a_daemon_that_is_still_starting(
    control: DrivenControl, sock_path: Path, env: dict[str, str]
) -> None:
    pending = asyncio.create_task(run_cli("ready", "--wait", "30", env=env))
    await asyncio.sleep(0.3)  # the CLI finds no socket for a while (not a correctness wait)
    assert not pending.done()
    server = await start_api_server(control, sock_path)
    try:
        code, out, _ = await asyncio.wait_for(pending, 15)
    finally:
        await server.close()
    assert (code, out) == (0, "ready\n")
    code, _, err = await run_cli("ready", "--wait", "0.3", env=env)
    assert code == 3 and "is mcp-supervisor running?" in err


async def test_ready_json_shape(api: ApiServer, control: DrivenControl, env: dict[str, str]) -> None:
    control.set_state("alpha", "failed")
    for args in (("--json", "ready"), ("ready", "--json")):
        code, out, _ = await run_cli(*args, env=env)
        body = json.loads(out)
        assert code == 1 and body["ready"] is False
        assert body["not_ready"] == [{"name": "alpha", "state": "failed", "reason": "alpha is failed"}]


# --- status -------------------------------------------------------------------------------------


async def test_status_json_is_exactly_what_the_api_returns(
    api: ApiServer, control: DrivenControl, env: dict[str, str]
) -> None:
    code, out, _ = await run_cli("status", "--json", env=env)
    assert code == 0 and json.loads(out) == control.status()


async def test_status_table_shows_state_since_latency_and_message(
    api: ApiServer, control: DrivenControl, env: dict[str, str]
) -> None:
    code, out, _ = await run_cli("status", env=env)
    assert code == 0
    for word in ("server", "state", "since", "latency", "message", "alpha", "beta (optional)", "failed", "1.5 ms", "ago"):
        assert word in out, word


def test_render_helpers() -> None:
    assert relative(None) == "-" and relative(100.0, 112.0) == "12s ago" and relative(0, 7200) == "2h ago"
    rows = status_rows({"servers": [{"name": "a", "state": "failed", "since": 0, "latency_ms": 1234.0,
                                     "failure_class": "refused", "message": "connection\nrefused", "critical": True}]},
                       now=90)
    assert rows == [("a", "failed", "1m ago", "1.2 s", "[refused] connection refused")]
    assert ready_line({"ready": True, "not_ready": [], "fallback": ["x"]}) == "ready (in fallback: x)"


def test_server_text_is_printed_as_is_never_as_markup() -> None:
    """stderr holding ``[/INFO]`` once crashed ``status`` (rich MarkupError) and ``[crashed]``
    vanished; every server-provided string is plain text now."""
    from mcp_supervisor.cli.render import status_table

    text = "[/INFO] boot [bold]x :smile: [crashed]"
    status = {"ready": False, "servers": [{"name": "noisy", "state": "failed", "since": None, "latency_ms": None,
                                           "failure_class": "crashed", "message": text, "critical": True}]}
    printed = status_table(status, colour=True)
    assert f"[crashed] {text}" in printed
    line = ready_line({"ready": False, "not_ready": [{"name": "noisy", "state": "failed", "reason": "[/INFO] [bold]"}]})
    assert line == "not ready: noisy is failed ([/INFO] [bold])"


def test_ready_line_says_what_the_daemon_is_doing() -> None:
    assert ready_line({"ready": False, "daemon": "stopping", "not_ready": [
        {"name": "db", "state": "stopping", "reason": "daemon stopping"}]}) == "not ready: daemon stopping"
    assert ready_line({"ready": False, "daemon": "starting", "not_ready": [
        {"name": "*", "state": "starting", "reason": "daemon starting"}]}) == "not ready: daemon starting"
    assert ready_line({"ready": False, "daemon": "reloading", "not_ready": [
        {"name": "db", "state": "reloading", "reason": "reloading"}]}) == "not ready: db is reloading"


# --- actions ------------------------------------------------------------------------------------


async def test_actions_reach_the_supervisor(api: ApiServer, control: DrivenControl, env: dict[str, str]) -> None:
    code, out, _ = await run_cli("probe", "alpha", env=env)
    assert code == 0 and out.startswith("probe alpha: ok")
    for args in (("recover", "beta"), ("pause", "alpha"), ("resume", "alpha"), ("emergency",), ("emergency", "gamma")):
        code, out, err = await run_cli(*args, env=env)
        assert code == 0, err
        assert out.startswith(f"{args[0]}: accepted")
    assert control.commands == [
        ("beta", Command.RECOVER),
        ("alpha", Command.PAUSE),
        ("alpha", Command.RESUME),
        (None, Command.EMERGENCY),
        ("gamma", Command.EMERGENCY),
    ]
    code, out, _ = await run_cli("pause", "alpha", "--json", env=env)
    assert code == 0 and json.loads(out)["accepted"] is True


async def test_unknown_server_fails_with_the_daemons_message(api: ApiServer, env: dict[str, str]) -> None:
    code, _, err = await run_cli("recover", "nope", env=env)
    assert code == 1 and "no server named 'nope'" in err
    code, out, _ = await run_cli("--json", "probe", "nope", env=env)
    assert code == 1 and json.loads(out)["error"]["code"] == "unknown_server"


async def test_reload_ok_and_rejected(api: ApiServer, control: DrivenControl, env: dict[str, str]) -> None:
    assert await run_cli("reload", env=env) == (0, "reloaded (no changes)\n", "")
    control.reload_error = "invalid config /x.toml:\n  - servers[0].url: bad"
    code, _, err = await run_cli("reload", env=env)
    assert code == 1 and "servers[0].url" in err and "old config keeps running" in err


async def first_event_line(control: DrivenControl, env: dict[str, str], cause: Any, *args: str) -> str:
    """Follow ``events`` (with ``args``), make one event happen, return the line printed for it."""
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "events", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        await wait_until(lambda: control.bus.subscriber_count == 1, 10)
        cause()
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    await wait_until(lambda: control.bus.subscriber_count == 0, 10)
    return line


async def test_events_streams_one_json_line_per_event(
    api: ApiServer, control: DrivenControl, env: dict[str, str]
) -> None:
    line = await first_event_line(control, env, lambda: control.set_state("beta", "recovering"), "--json")
    event = json.loads(line)
    assert (event["kind"], event["server"], event["new"]) == ("state", "beta", "recovering")


async def test_events_prints_sentences_with_rounded_durations(
    api: ApiServer, control: DrivenControl, env: dict[str, str]
) -> None:
    from mcp_supervisor.events import Event

    done = Event(kind="action_done", server="notes-http", data={
        "rung": "restart", "attempt": 2, "ok": True, "detail": "", "duration": 0.0112, "delay": 0.9338042456718074})
    line = await first_event_line(control, env, lambda: control.bus.publish(done))
    assert line.rstrip().endswith(" restart 2 of notes-http done in 11 ms after a 0.9 s backoff"), line


# --- finding the daemon -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("ready",), ("status",), ("probe", "a"), ("events",), ("reload",)])
async def test_unreachable_daemon_exits_3_naming_the_socket(short_tmp: Path, args: tuple[str, ...]) -> None:
    missing = short_tmp / "nobody-here.sock"
    code, _, err = await run_cli("--socket", str(missing), *args, env=clean_env(short_tmp))
    assert code == 3
    assert str(missing) in err and "is mcp-supervisor running?" in err


async def test_unreachable_json_is_an_error_object(short_tmp: Path) -> None:
    env = clean_env(short_tmp, MCP_SUPERVISOR_SOCKET=str(short_tmp / "none.sock"))
    code, out, _ = await run_cli("ready", "--json", env=env)
    assert code == 3
    body = json.loads(out)
    assert body["ready"] is False and body["error"]["code"] == "unreachable"
    code, out, _ = await run_cli("status", "--json", env=env)
    assert code == 3 and json.loads(out)["error"]["code"] == "unreachable"


async def test_socket_comes_from_flag_env_then_config(api: ApiServer, short_tmp: Path, sock_path: Path) -> None:
    config = short_tmp / "c.toml"
    await asyncio.to_thread(
        config.write_text, f'[supervisor]\nsocket = "{sock_path}"\nstate_dir = "{short_tmp / "state"}"\n'
    )
    bare = clean_env(short_tmp)
    assert (await run_cli("--config", str(config), "ready", env=bare))[0] == 0
    assert (await run_cli("ready", "--config", str(config), env=bare))[0] == 0
    assert (await run_cli("ready", env=clean_env(short_tmp, MCP_SUPERVISOR_CONFIG=str(config))))[0] == 0
    # the flag wins over the environment, which wins over the config
    wrong = str(short_tmp / "wrong.sock")
    assert (await run_cli("--socket", str(sock_path), "ready", env=clean_env(short_tmp, MCP_SUPERVISOR_SOCKET=wrong)))[0] == 0
    assert (await run_cli("--config", str(config), "ready", env=clean_env(short_tmp, MCP_SUPERVISOR_SOCKET=wrong)))[0] == 3


async def test_an_invalid_explicit_config_is_a_usage_error(short_tmp: Path) -> None:
    config = short_tmp / "bad.toml"
    await asyncio.to_thread(config.write_text, "[supervisor]\nsocket = 5\n")
    code, _, err = await run_cli("--config", str(config), "status", env=clean_env(short_tmp))
    assert code == 2 and "supervisor.socket" in err


# --- check-config and usage ---------------------------------------------------------------------


async def test_check_config_valid_and_invalid(short_tmp: Path) -> None:
    good = short_tmp / "good.toml"
    bad = short_tmp / "bad.toml"
    server = '[[servers]]\nname = "t"\ntransport = "stdio"\ncommand = "python3"\n'
    await asyncio.to_thread(good.write_text, server)
    await asyncio.to_thread(bad.write_text, server + '[servers.probe]\ninterval = "soon"\n')
    env = clean_env(short_tmp)
    code, out, _ = await run_cli("check-config", str(good), env=env)
    assert code == 0 and "ok (1 server(s)" in out
    code, _, err = await run_cli("check-config", str(bad), env=env)
    assert code == 1 and str(bad) in err and "servers[0] (t).probe.interval" in err and "'soon'" in err
    code, out, _ = await run_cli("check-config", "--json", str(bad), env=env)
    body = json.loads(out)
    assert code == 1 and body["valid"] is False and "probe.interval" in body["problems"][0]
    code, out, _ = await run_cli("--config", str(good), "check-config", env=env)
    assert code == 0
    code, _, err = await run_cli("check-config", str(short_tmp / "missing.toml"), env=env)
    assert code == 1 and "file not found" in err
    code, _, err = await run_cli("check-config", env=env)
    assert code == 1 and "no config file found" in err


@pytest.mark.parametrize(
    "args",
    [(), ("frobnicate",), ("ready", "--wait", "soon"), ("ready", "--wait", "1000"), ("probe",), ("status", "--bogus")],
)
async def test_usage_errors_exit_2(short_tmp: Path, args: tuple[str, ...]) -> None:
    code, out, err = await run_cli(*args, env=clean_env(short_tmp))
    assert code == 2 and "usage:" in err and out == ""
