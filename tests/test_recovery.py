"""The recovery ladder end to end in the runtime: real processes, real kills, real HTTP.

* kill -9 a managed MCP server many times at random moments (also while it is still starting):
  every time it comes back healthy, and the runner never runs two recovery actions at once;
* a command that always exits at once backs off with growing, capped delays, then falls back
  to the direct API, with one alert for the whole incident.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
from pathlib import Path

import pytest
from aiohttp import web

from mcp_supervisor.events import Event
from mcp_supervisor.health.model import State
from tests.servers.fixtures import RUN_AS, pid_alive
from tests.test_daemon import PY, free_port, make_config, managed_notes, running, state, until

KILLS = int(os.environ.get("MCP_SUPERVISOR_KILL_ROUNDS", "25"))


def assert_one_action_at_a_time(events: list[Event]) -> int:
    in_flight = 0
    actions = 0
    for event in events:
        if event.kind == "action":
            assert in_flight == 0, "a second recovery action started while one was running"
            in_flight += 1
            actions += 1
        elif event.kind == "action_done":
            in_flight -= 1
    return actions


@pytest.mark.timeout(600)
async def test_kill_9_at_random_moments_always_comes_back(tmp_path: Path) -> None:
    port = free_port()
    server = managed_notes("notes", port, interval="200ms", timeout="800ms", start_period="0s")
    server = server.replace('recovery = { backoff_initial = "100ms", backoff_max = "1s" }',
                            'recovery = { backoff_initial = "50ms", backoff_max = "500ms", max_attempts = 1000 }')
    rng = random.Random(20261125)
    seen: list[Event] = []
    async with running(make_config(tmp_path, server)) as sup:
        runner = sup.runners["notes"]
        await until(sup, lambda: state(sup, "notes") is State.HEALTHY, 30, "first healthy", seen)
        pids = set()
        for _ in range(KILLS):
            pid = runner.process.pid
            pids.add(pid)
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if rng.random() < 0.3:  # sometimes kill the replacement while it is still starting
                await until(sup, lambda p=pid: runner.process.pid not in (None, p), 30, "a respawn", seen)
                await asyncio.sleep(rng.uniform(0.0, 0.5))
                pids.add(runner.process.pid)
                os.kill(runner.process.pid, signal.SIGKILL)
            await until(
                sup,
                lambda p=pid: state(sup, "notes") is State.HEALTHY and runner.process.pid != p and runner.process.running,
                60,
                "healthy again after kill -9",
                seen,
            )
        actions = assert_one_action_at_a_time(seen)
        assert actions >= KILLS
        assert len(pids) >= KILLS
        for pid in pids - {runner.process.pid}:
            assert not pid_alive(pid), f"pid {pid} outlived its restart"


async def test_crash_loop_backs_off_then_falls_back_with_one_alert(tmp_path: Path) -> None:
    async def api(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/rest/api/2/serverInfo", api)
    runner = web.AppRunner(app)
    await runner.setup()
    fallback_port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", fallback_port)
    await site.start()
    port = free_port()
    config = make_config(
        tmp_path,
        f"""
[[servers]]
name = "jira"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"
managed = true
{RUN_AS}
command = "{PY}"
args = ["-c", "import sys; print('token rejected', file=sys.stderr); sys.exit(1)"]
probe = {{ interval = "200ms", timeout = "500ms", failure_threshold = 1 }}
recovery = {{ max_attempts = 5, window = "10m", backoff_initial = "100ms", backoff_factor = 2, backoff_max = "400ms" }}
fallback = {{ url = "http://127.0.0.1:{fallback_port}/rest/api/2/serverInfo", expect_status = 200 }}
""",
    )
    seen: list[Event] = []
    try:
        async with running(config) as sup:
            await until(sup, lambda: state(sup, "jira") is State.FALLBACK, 60, "fallback", seen)
            readiness = sup.readiness()
    finally:
        await runner.cleanup()
    assert_one_action_at_a_time(seen)
    restarts = [e for e in seen if e.kind == "action" and e.data["rung"] == "restart"]
    assert len(restarts) == 5
    ceilings = [
        float(m.group(1))
        for e in seen
        if e.kind == "state" and e.data["new"] == "backoff" and (m := re.search(r"ceiling (\d+(?:\.\d+)?)s", e.data["reason"]))
    ]
    assert ceilings == sorted(ceilings) and max(ceilings) <= 0.4 + 1e-9
    alerts = [e for e in seen if e.kind == "notify" and e.data["notify"] in ("down", "fallback", "needs_human")]
    assert [a.data["notify"] for a in alerts] == ["fallback"]
    assert readiness["ready"] is True and "jira" in readiness["fallback"]
