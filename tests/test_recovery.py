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
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from mcp_supervisor.events import Event
from mcp_supervisor.health.model import Command, State
from tests.live_daemon import PY, RUN_AS, free_port, make_config, managed_notes, managed_server, running, state, until
from tests.servers.fixtures import pid_alive

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
    config = make_config(tmp_path, managed_server(
        "jira", port, ["-c", "import sys; print('token rejected', file=sys.stderr); sys.exit(1)"],
        'recovery = { max_attempts = 5, window = "10m", backoff_initial = "100ms", backoff_factor = 2, '
        'backoff_max = "400ms" }\n'
        f'fallback = {{ url = "http://127.0.0.1:{fallback_port}/rest/api/2/serverInfo", expect_status = 200 }}',
        interval="200ms", timeout="500ms", failure_threshold=1))
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


# --- healing never stops (issue 7) -------------------------------------------------------------------

HEALING = Path(__file__).resolve().parent / "servers" / "healing.py"
_CEILING = re.compile(r"retry in (\d+(?:\.\d+)?)s \(ceiling (\d+(?:\.\d+)?)s\)")
_ALERTS = ("down", "needs_human", "fallback")


def alerts(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind == "notify" and e.data["notify"] in _ALERTS]


def resolutions(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind == "notify" and e.data["notify"] == "recovered"]


@pytest.mark.timeout(600)
async def test_kill_9_twelve_times_keeps_coming_back_slower_with_one_alert(tmp_path: Path) -> None:
    """Default policy (5 attempts in 10 min, 1 s initial, x2), backoff_max shortened to 2 s."""
    port = free_port()
    # start_period is also how long a restarted server may take to answer (loaded CI machines)
    server = managed_notes("notes", port, interval="250ms", timeout="2s", start_period="30s")
    server = server.replace('recovery = { backoff_initial = "100ms", backoff_max = "1s" }', 'recovery = { backoff_max = "2s" }')
    seen: list[Event] = []
    async with running(make_config(tmp_path, server)) as sup:
        runner = sup.runners["notes"]
        await until(sup, lambda: state(sup, "notes") is State.HEALTHY, 30, "first healthy", seen)
        pids = []
        for kill in range(12):
            pid = runner.process.pid
            pids.append(pid)
            os.kill(pid, signal.SIGKILL)
            await until(
                sup,
                lambda p=pid: state(sup, "notes") is State.HEALTHY and runner.process.pid != p and runner.process.running,
                60,
                f"healthy again after kill {kill + 1}",
                seen,
            )
        entry = next(s for s in sup.status()["servers"] if s["name"] == "notes")
        assert isinstance(entry["pid"], int) and pid_alive(entry["pid"]) and entry["pid"] not in pids
        assert entry["tool_count"] == 3  # known from the first tools check, kept between them
    assert_one_action_at_a_time(seen)
    restarts = [e for e in seen if e.kind == "action" and e.data["rung"] == "restart"]
    assert len(restarts) == 12 and entry["restarts"] == 12
    assert entry["last_exit"] == "killed by SIGKILL"
    assert isinstance(entry["started_at"], float) and abs(entry["started_at"] - time.time()) < 60
    assert entry["next_attempt_at"] is None
    # growing, jittered, capped delays: the first crash restarts at once, each crash soon after a
    # recovery waits longer (equal jitter: [ceiling/2, ceiling]), up to the 2 s cap
    plans = [(float(m.group(1)), float(m.group(2))) for e in seen if e.kind == "state"
             and (m := _CEILING.search(e.data["reason"]))]
    ceilings = [c for _, c in plans]
    assert ceilings[:2] == [1.0, 2.0] and ceilings == sorted(ceilings) and max(ceilings) == 2.0, plans
    assert all(c / 2 <= d <= c for d, c in plans)
    delays = [e.data["delay"] for e in restarts]
    assert delays[0] is None and 0.5 <= delays[1] <= 1.0 <= delays[2] <= 2.0
    assert all(1.0 <= d <= 2.0 for d in delays[2:]), delays
    # one alert for the whole incident, then the restarts went on
    (alert,) = alerts(seen)
    assert alert.data["notify"] == "needs_human"
    assert "5 recovery attempt(s)" in alert.data["detail"] and "killed by SIGKILL" in alert.data["detail"]
    after = [e for e in restarts if seen.index(e) > seen.index(alert)]
    assert len(after) >= 6
    assert resolutions(seen) == []  # still flapping: resolved only after stable_after of health
    reasons = [e.data["reason"] for e in seen if e.kind == "state" and e.data["new"] in ("recovering", "backoff")]
    assert not any("threshold" in r for r in reasons) and any("killed by SIGKILL" in r for r in reasons)


@pytest.mark.timeout(300)
async def test_crash_loop_restarts_forever_at_the_cap_alerts_once_and_resolves_once(tmp_path: Path) -> None:
    port = free_port()
    marker = tmp_path / "fixed"
    config = make_config(tmp_path, managed_server(
        "jira", port, [str(HEALING), "exit-until", str(port), str(marker)],
        'recovery = { max_attempts = 3, window = "10m", backoff_initial = "100ms", backoff_max = "800ms" }',
        interval="200ms", timeout="2s", failure_threshold=1, start_period="20s"))
    seen: list[Event] = []
    async with running(config) as sup:
        runner = sup.runners["jira"]
        await until(sup, lambda: bool(alerts(seen)), 60, "the alert", seen)
        alert_at = len(seen)

        def restarts_after_alert() -> int:
            return sum(1 for e in seen[alert_at:] if e.kind == "action" and e.data["rung"] == "restart")

        backing_off: list[dict[str, Any]] = []

        def watch() -> bool:
            entry = next(s for s in sup.status()["servers"] if s["name"] == "jira")
            if entry["next_attempt_at"] is not None:
                backing_off.append({**entry, "asked_at": time.time()})
            return restarts_after_alert() >= 5

        await until(sup, watch, 120, "five restarts after the alert", seen)
        assert state(sup, "jira") is State.NEEDS_HUMAN and not sup.readiness()["ready"]
        marker.touch()  # the fix
        await until(sup, lambda: state(sup, "jira") is State.HEALTHY, 90, "healthy after the fix", seen)
        await until(sup, lambda: bool(resolutions(seen)), 10, "the resolution", seen)
        assert sup.readiness()["ready"]
        entry = next(s for s in sup.status()["servers"] if s["name"] == "jira")
        assert entry["restarts"] == runner.restarts >= 8
    assert_one_action_at_a_time(seen)
    (alert,) = alerts(seen)
    detail = alert.data["detail"]
    assert alert.data["notify"] == "needs_human" and "3 recovery attempt(s) (restart)" in detail
    assert "fatal: JIRA_TOKEN rejected by https://jira.example (401)" in detail  # what the server said last
    assert "restarts continue" in detail
    assert len(resolutions(seen)) == 1
    # while backing off, status said when the next attempt is due (wall clock, within the cap)
    assert backing_off, "next_attempt_at was never set while backing off"
    sample = backing_off[-1]
    assert sample["last_exit"] == "exited with code 1"
    assert isinstance(sample["next_attempt_at"], float) and isinstance(sample["asked_at"], float)
    assert sample["asked_at"] - 0.1 <= sample["next_attempt_at"] <= sample["asked_at"] + 0.8 + 0.1
    # after the alert the restarts came at the cap: delays drawn from [cap/2, cap]
    delays = [float(m.group(1)) for e in seen[alert_at:] if e.kind == "state" and (m := _CEILING.search(e.data["reason"]))]
    assert all(0.4 <= d <= 0.8 for d in delays)


@pytest.mark.timeout(300)
async def test_stdio_server_that_cannot_start_is_not_ready_while_its_warm_copy_answers(tmp_path: Path) -> None:
    data = tmp_path / "repo.db"
    data.write_text("notes")
    interval = 2.0
    config = make_config(
        tmp_path,
        f"""
[[servers]]
name = "git"
transport = "stdio"
{RUN_AS}
command = "{PY}"
args = ["{HEALING}", "datafile", "{data}"]
probe = {{ interval = "{interval}s", timeout = "10s", cold_interval = "4s", tools_interval = "1h" }}
""",
    )
    seen: list[Event] = []
    async with running(config) as sup:
        runner = sup.runners["git"]
        await until(sup, lambda: state(sup, "git") is State.HEALTHY and runner.prober.warm_pid is not None, 60,
                    "healthy with a warm copy", seen)
        warm_pid = runner.prober.warm_pid
        data.rename(tmp_path / "moved-away.db")

        def cold_failed() -> bool:
            return any(e.kind == "probe" and e.data["probe"] == "cold" and not e.data["ok"] for e in seen)

        await until(sup, cold_failed, 60, "a failed cold probe", seen)
        failed_at = time.monotonic()
        await until(sup, lambda: not sup.readiness()["ready"], 2 * interval + 2 * 10, "not ready", seen)
        took = time.monotonic() - failed_at
        (item,) = sup.readiness()["not_ready"]
        assert item["reason"].startswith(f"FileNotFoundError: data file {data} does not exist"), item["reason"]
        assert pid_alive(warm_pid), "the warm copy was still running"
        (data.parent / "moved-away.db").rename(data)
        await until(sup, lambda: sup.readiness()["ready"], 60, "ready after the data is back", seen)
    cold = [e for e in seen if e.kind == "probe" and e.data["probe"] == "cold" and not e.data["stale"]]
    failed = [e for e in cold if not e.data["ok"]]
    assert len(failed) >= 3 and cold[-1].data["ok"]  # cold checks every interval until one passed
    # the loaded-machine allowance: the cold probes themselves take time (a Python spawn)
    assert took <= 2 * interval + 2 * max(e.data["latency_ms"] for e in failed) / 1000 + 2, took


@pytest.mark.timeout(180)
async def test_401_heals_by_itself_when_the_token_file_is_fixed_without_a_restart(tmp_path: Path) -> None:
    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text("expired-token-000\n")
    config = make_config(tmp_path, managed_server(
        "jira", port, [str(HEALING), "token-file", str(port), str(token_file)],
        'headers = { Authorization = "Bearer renewed-token-111" }',
        interval="250ms", timeout="2s", failure_threshold=2, start_period="60s"))
    seen: list[Event] = []
    async with running(config) as sup:
        await until(sup, lambda: state(sup, "jira") is State.NEEDS_HUMAN, 60, "needs_human on the 401", seen)
        assert sup.readiness()["not_ready"][0]["state"] == "needs_human"
        token_file.write_text("renewed-token-111\n")  # the person renews the token
        await until(sup, lambda: state(sup, "jira") is State.HEALTHY, 30, "healthy with no command", seen)
        await until(sup, lambda: bool(resolutions(seen)), 10, "the resolution", seen)
        entry = next(s for s in sup.status()["servers"] if s["name"] == "jira")
    assert [e for e in seen if e.kind in ("action", "action_done")] == []
    assert entry["restarts"] == 0 and entry["last_exit"] is None
    assert [a.data["notify"] for a in alerts(seen)] == ["needs_human"]
    assert len(resolutions(seen)) == 1
    assert "renewed-token-111" not in repr([e.data for e in seen])


# --- actions and probes cannot be confused (issue 7 item 5) --------------------------------------------


async def test_a_probe_that_started_before_a_command_never_counts(tmp_path: Path) -> None:
    arrived = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_route("*", "/mcp", hang)
    site_runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await site_runner.setup()
    port = free_port()
    await web.TCPSite(site_runner, "127.0.0.1", port).start()
    config = make_config(
        tmp_path,
        f"""
[[servers]]
name = "slow"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"
probe = {{ interval = "1h", timeout = "2s", failure_threshold = 1 }}
""",
    )
    seen: list[Event] = []
    try:
        async with running(config) as sup:
            runner = sup.runners["slow"]
            with sup.bus.subscription() as queue:
                probe = asyncio.create_task(runner.probe_now())
                await asyncio.wait_for(arrived.wait(), 30)  # the probe is in flight
                await sup.command("slow", Command.RECOVER)  # the operator acts meanwhile
                result = await asyncio.wait_for(probe, 30)
                state_after = state(sup, "slow")
                while not queue.empty():
                    seen.append(queue.get_nowait())
    finally:
        await site_runner.cleanup()
    assert not result.ok and result.failure is not None  # it failed ...
    (event,) = [e for e in seen if e.kind == "probe"]
    assert event.data["stale"] is True  # ... but started before the command,
    assert state_after is State.STARTING  # so it did not fail the server (threshold 1)


async def test_an_on_demand_probe_waits_for_a_running_restart(tmp_path: Path) -> None:
    port = free_port()
    async with running(make_config(tmp_path, managed_notes("notes", port, interval="1s"))) as sup:
        await until(sup, lambda: sup.runners["notes"].process.running, 30, "the process")
        before = sup.runners["notes"].process.pid
        await until(sup, lambda: state(sup, "notes") is State.HEALTHY, 30, "healthy")
        seen: list[Event] = []
        with sup.bus.subscription() as queue:
            await sup.command("notes", Command.RECOVER)  # a restart starts now ...
            answer = await sup.probe_now("notes")  # ... and the probe waits for it
            while not queue.empty():
                seen.append(queue.get_nowait())
        assert sup.runners["notes"].process.pid != before
    # a scheduled probe that was already running when the restart began is marked stale
    counted = [e for e in seen if e.kind in ("action", "action_done") or (e.kind == "probe" and not e.data["stale"])]
    assert [e.kind for e in counted[:3]] == ["action", "action_done", "probe"], counted
    assert answer["result"] is not None
