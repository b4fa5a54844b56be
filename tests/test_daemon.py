"""The runtime in-process against real MCP servers: detection, recovery actions, readiness, reload.

Every server here is a real process speaking MCP through the official SDK (examples/notes_server.py)
or a real HTTP server; the Supervisor drives the real probes, health machine and actuators.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from aiohttp import web

from mcp_supervisor.config import parse_config
from mcp_supervisor.events import Event
from mcp_supervisor.health.model import Command, EnterFallback, State
from mcp_supervisor.runtime.executor import Executor
from mcp_supervisor.runtime.supervisor import Supervisor
from tests.live_daemon import (
    EXAMPLE,
    PY,
    RUN_AS,
    free_port,
    make_config,
    managed_notes,
    running,
    state,
    unauthorized,
    until,
)

pytestmark = pytest.mark.timeout(90)


async def test_managed_server_killed_with_sigkill_comes_back_healthy(tmp_path: Path) -> None:
    port = free_port()
    async with running(make_config(tmp_path, managed_notes("notes", port))) as sup:
        await until(sup, lambda: state(sup, "notes") is State.HEALTHY, 20, "notes healthy")
        old_pid = sup.runners["notes"].process.pid
        started = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        events = await until(
            sup,
            lambda: state(sup, "notes") is State.HEALTHY and sup.runners["notes"].process.pid != old_pid,
            20,
            "notes healthy again under a new pid",
        )
        elapsed = time.monotonic() - started
        kinds = [(e.kind, e.data.get("new") or e.data.get("rung")) for e in events]
        assert ("action", "restart") in kinds
        done = [e for e in events if e.kind == "action_done"]
        assert done and done[0].data["ok"] is True and done[0].data["rung"] == "restart"
        assert any(e.kind == "state" and e.data["new"] in ("failed", "recovering") for e in events)
        assert elapsed < 15
        assert sup.readiness()["ready"] is True


async def test_hung_server_is_caught_by_the_probe_deadline_and_restarted(tmp_path: Path) -> None:
    port = free_port()
    async with running(make_config(tmp_path, managed_notes("notes", port))) as sup:
        await until(sup, lambda: state(sup, "notes") is State.HEALTHY, 20, "notes healthy")
        old_pid = sup.runners["notes"].process.pid
        os.kill(old_pid, signal.SIGSTOP)  # alive, but answers nothing
        try:
            events = await until(
                sup,
                lambda: state(sup, "notes") is State.HEALTHY and sup.runners["notes"].process.pid != old_pid,
                25,
                "the hung server replaced by a healthy one",
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(old_pid, signal.SIGCONT)
        failures = [e.data.get("failure_class") for e in events if e.kind == "probe" and not e.data["ok"]]
        assert "timeout" in failures
        assert any(e.kind == "action" and e.data["rung"] == "restart" for e in events)
        assert _zombie(old_pid)  # gone (or only an unreaped entry)


async def test_401_server_needs_a_human_and_is_never_restarted(tmp_path: Path) -> None:
    port = free_port()
    servers = unauthorized("jira", port, 'headers = { Authorization = "Bearer expired-token-123456" }',
                           interval="200ms", timeout="1s", failure_threshold=2)
    async with running(make_config(tmp_path, servers)) as sup:
        pid = sup.runners["jira"].process.pid
        events = await until(sup, lambda: state(sup, "jira") is State.NEEDS_HUMAN, 20, "jira needs_human")
        # stay a few probe rounds: still needs_human, still the same process, no action ever ran
        more = await _collect(sup, 1.0)
        assert state(sup, "jira") is State.NEEDS_HUMAN
        assert sup.runners["jira"].process.pid == pid
        assert not [e for e in events + more if e.kind == "action"]
        entry = next(s for s in sup.status()["servers"] if s["name"] == "jira")
        assert entry["failure_class"] == "auth"
        readiness = sup.readiness()
        assert readiness["ready"] is False and readiness["not_ready"][0]["name"] == "jira"
        assert "expired-token-123456" not in repr(sup.status()) + repr([e.data for e in events + more])


async def test_managed_command_that_cannot_start_needs_a_human_at_once(tmp_path: Path) -> None:
    port = free_port()
    servers = f"""
[[servers]]
name = "ghost"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"
managed = true
{RUN_AS}
command = "{tmp_path}/no-such-server"
"""
    async with running(make_config(tmp_path, servers)) as sup:
        await until(sup, lambda: state(sup, "ghost") is State.NEEDS_HUMAN, 10, "ghost needs_human")
        entry = next(s for s in sup.status()["servers"] if s["name"] == "ghost")
        assert entry["failure_class"] == "config"
        assert "no-such-server" in entry["message"] and "recover ghost" in entry["hint"]


async def test_wait_ready_wakes_on_the_state_change_and_pause_stops_probing(tmp_path: Path) -> None:
    port = free_port()
    async with running(make_config(tmp_path, managed_notes("notes", port))) as sup:
        assert sup.readiness()["ready"] is False
        answer = await sup.wait_ready(None, timeout=20)
        assert answer == {"ready": True, "daemon": "running", "not_ready": [], "fallback": [], "rate_limited": []}
        await sup.command("notes", Command.PAUSE)
        assert state(sup, "notes") is State.PAUSED
        events = await _collect(sup, 0.8)
        assert not [e for e in events if e.kind == "probe" and e.server == "notes"]
        await sup.command("notes", Command.RESUME)
        await until(sup, lambda: state(sup, "notes") is State.HEALTHY, 10, "notes healthy after resume")


async def test_reload_replaces_only_changed_servers(tmp_path: Path) -> None:
    a, b = free_port(), free_port()
    config = make_config(tmp_path, managed_notes("a", a) + managed_notes("b", b))
    async with running(config) as sup:
        await sup.wait_ready(None, timeout=20)
        pid_a = sup.runners["a"].process.pid
        runner_b = sup.runners["b"]
        c = free_port()
        assert config.source is not None
        config.source.write_text(
            f'[supervisor]\nstate_dir = "{tmp_path}/state"\n'
            + managed_notes("a", a)
            + managed_notes("c", c, interval="300ms")
        )
        result = await sup.reload()
        assert result == {"ok": True, "added": ["c"], "removed": ["b"], "changed": []}
        assert sup.runners["a"].process.pid == pid_a
        assert runner_b.process.pid is None or not runner_b.process.running
        answer = await sup.wait_ready(None, timeout=20)
        assert answer["ready"] is True
        config.source.write_text("[[servers]]\nname = 1\n")
        rejected = await sup.reload()
        assert rejected["ok"] is False and "servers[0]" in rejected["error"]
        assert set(sup.runners) == {"a", "c"}


_CONFIG_READING_SERVER = """
import json, os, sys
config, example = sys.argv[1], sys.argv[2]
try:
    port = int(json.load(open(config))["port"])
except Exception as exc:
    sys.exit(f"bad config {config}: {exc}")
os.execv(sys.executable, [sys.executable, example, "http", str(port)])
"""


async def test_corrupted_config_is_restored_by_the_ladder_and_the_server_comes_back(tmp_path: Path) -> None:
    from mcp_supervisor.vault.service import VaultService

    port = free_port()
    app_config = tmp_path / "app.json"
    app_config.write_text(json.dumps({"port": port}))
    servers = f"""
[backup]
key_file = "{tmp_path}/vault.key"
locations = ["{tmp_path}/backups"]

[[configs]]
name = "app"
path = "{app_config}"
format = "json"
required_keys = ["port"]

[[servers]]
name = "app"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"
managed = true
{RUN_AS}
command = "{PY}"
args = ["-c", {json.dumps(_CONFIG_READING_SERVER)}, "{app_config}", "{EXAMPLE}"]
config = "app"
probe = {{ interval = "250ms", timeout = "800ms", failure_threshold = 2, start_period = "10s" }}
recovery = {{ backoff_initial = "100ms", backoff_max = "500ms" }}
"""
    config = make_config(tmp_path, servers)
    vault = VaultService(config)
    await vault.backup("test")  # the good version is in the vault
    supervisor = Supervisor(config, config.source, vault=vault)
    async with asyncio.TaskGroup() as tg:
        await supervisor.start(tg)
        try:
            await until(supervisor, lambda: state(supervisor, "app") is State.HEALTHY, 20, "app healthy")
            app_config.write_text('{"port": ')  # an editor crashed mid-write
            os.kill(supervisor.runners["app"].process.pid, signal.SIGKILL)
            events: list[Event] = []
            await until(
                supervisor,
                lambda: any(e.kind == "action_done" and e.data["rung"] == "restore_config" for e in events)
                and state(supervisor, "app") is State.HEALTHY,
                30,
                "restore_config and healthy",
                seen=events,
            )
        finally:
            async with asyncio.timeout(10):
                await supervisor.aclose()
    rungs = [(e.data["rung"], e.data["ok"]) for e in events if e.kind == "action_done"]
    assert ("restore_config", True) in rungs
    assert rungs[0][0] == "restart"  # the cheapest rung is tried first
    assert json.loads(app_config.read_text()) == {"port": port}
    assert list(tmp_path.glob("app.json.corrupt-*")), "the damaged file is kept aside, never deleted"


async def test_fallback_check_is_a_plain_get_with_the_expected_status(tmp_path: Path) -> None:
    statuses = {"/ok": 200, "/broken": 503}

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=statuses[request.path], text="direct api")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    import aiohttp

    session = aiohttp.ClientSession()

    async def http() -> aiohttp.ClientSession:
        return session

    async def no_docker() -> None:
        return None

    executor = Executor(no_docker, None, http)
    try:
        for path, expected in (("/ok", True), ("/broken", False)):
            config = parse_config(
                f'[[servers]]\nname = "x"\ntransport = "http"\nurl = "http://127.0.0.1:1/mcp"\n'
                f'fallback = {{ url = "http://127.0.0.1:{port}{path}", expect_status = 200 }}\n'
            )
            ok, detail = await executor.execute(config.servers[0], EnterFallback(attempt=1), None)
            assert ok is expected, detail
        closed = parse_config(
            '[[servers]]\nname = "x"\ntransport = "http"\nurl = "http://127.0.0.1:1/mcp"\n'
            f'fallback = {{ url = "http://127.0.0.1:{free_port()}/", timeout = "1s" }}\n'
        )
        ok, detail = await executor.execute(closed.servers[0], EnterFallback(attempt=1), None)
        assert not ok and "unreachable" in detail
    finally:
        await session.close()
        await runner.cleanup()


async def _collect(sup: Supervisor, seconds: float) -> list[Event]:
    seen: list[Event] = []
    with sup.bus.subscription() as queue:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    seen.append(await queue.get())
    return seen


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].split()[0] == "Z"


# --- readiness while the daemon starts, reloads and stops (issue 7, item 1) --------------------

_STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    time.sleep(60)\n"


def _external(name: str, port: int, interval: str = "300ms") -> str:
    return f"""
[[servers]]
name = "{name}"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"
probe = {{ interval = "{interval}", timeout = "1s", failure_threshold = 1 }}
"""


def _stubborn(tmp: Path, tag: str) -> str:
    """A non-critical managed process that ignores SIGTERM: stopping it takes the whole grace."""
    script = tmp / "stubborn.py"
    script.write_text(_STUBBORN)
    return f"""
[[servers]]
name = "slow"
transport = "http"
url = "http://127.0.0.1:{free_port()}/mcp"
managed = true
critical = false
command = "{PY}"
args = ["{script}", "{tag}"]
"""


async def test_readiness_is_no_while_starting_reloading_and_stopping(tmp_path: Path) -> None:
    down = free_port()
    config = make_config(tmp_path, _external("db", down) + _stubborn(tmp_path, "a"))
    supervisor = Supervisor(config, config.source)
    starting = supervisor.readiness()
    assert starting["ready"] is False and starting["daemon"] == "starting"
    assert starting["not_ready"] == [{"name": "db", "state": "starting", "reason": "daemon starting"}]
    async with asyncio.TaskGroup() as tg:
        await supervisor.start(tg)
        try:
            await until(supervisor, lambda: state(supervisor, "db") is State.FAILED, 10, "db failed")
            assert supervisor.readiness()["daemon"] == "running"
            assert config.source is not None
            # the reload changes db (and the slow-to-stop server): db is "reloading" meanwhile
            config.source.write_text(config.source.read_text().replace('"300ms"', '"400ms"').replace('"a"]', '"b"]'))
            reload = asyncio.ensure_future(supervisor.reload())
            await until(supervisor, lambda: supervisor.phase == "reloading" or reload.done(), 5, "the reload to begin")
            assert not reload.done(), reload.result()
            during = supervisor.readiness()
            assert during["ready"] is False and during["daemon"] == "reloading"
            assert {"name": "db", "state": "reloading", "reason": "reloading"} in during["not_ready"]
            assert (await reload)["changed"] == ["db", "slow"]
            after = supervisor.readiness()
            assert after["ready"] is False and after["daemon"] == "running"
            db = supervisor.runners["db"]
            if db.last_result is None:  # a reloaded server is "starting" until its first probe
                assert after["not_ready"][0]["state"] == "starting"
            # a parked long-poll hears "daemon stopping" as soon as the shutdown begins
            parked = asyncio.ensure_future(supervisor.wait_ready(None, timeout=60))
            await until(supervisor, lambda: bool(supervisor._waiters), 5, "the long-poll to park")
            supervisor.begin_stop()
            answer = await asyncio.wait_for(parked, 5)
            assert answer["ready"] is False and answer["daemon"] == "stopping"
            assert answer["not_ready"] == [{"name": "db", "state": "stopping", "reason": "daemon stopping"}]
        finally:
            async with asyncio.timeout(10):
                await supervisor.aclose()
    # no runners left: still "no", never a vacuous "ready"
    assert not supervisor.runners and supervisor.readiness()["ready"] is False


async def test_a_failed_start_stops_the_processes_already_started(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "state" / "logs" / "slow.log").mkdir(parents=True)  # the second server's log cannot open
    config = make_config(tmp_path, managed_notes("first", port) + _stubborn(tmp_path, "a"))
    supervisor = Supervisor(config, config.source)
    async with asyncio.TaskGroup() as tg:
        with pytest.raises(IsADirectoryError):
            await supervisor.start(tg)
    first = supervisor._closing[0].process if supervisor._closing else None
    assert first is not None and first.pid is None, "the first server's process is still running"
    assert supervisor.records is not None and not supervisor.records.live(), "a process is still on record"
