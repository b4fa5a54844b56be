"""``/v1/history``, ``/v1/report`` and ``POST /v1/runs`` over the real socket with a real record:
bad input gets a 400 naming the parameter and the fix; no record gets a clear 404; secrets from
the config never reach the record; ``[history]``/``[reports]`` config errors name field and fix."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.api.client import ApiError, SupervisorClient
from mcp_supervisor.api.server import ApiServer, start_api_server
from mcp_supervisor.config import ConfigError, parse_config
from mcp_supervisor.events import Event
from mcp_supervisor.history.service import HistoryService
from mcp_supervisor.logging import REDACTOR
from tests.test_api import DrivenControl

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def recorded(short_tmp: Path) -> AsyncIterator[tuple[DrivenControl, HistoryService, Path]]:
    control = DrivenControl({"alpha": "healthy", "beta": "failed"}, critical={"alpha"})
    config = parse_config(f'[supervisor]\nstate_dir = "{short_tmp}/state"\n', short_tmp / "config.toml")
    history = HistoryService(lambda: config, control.bus, lambda: dict(control.states), flush_interval=0.1,
                             scheduled_reports=False)
    control.history = history  # type: ignore[attr-defined]
    task = asyncio.create_task(history.run())
    server = await start_api_server(control, short_tmp / "ctl.sock")
    try:
        async with asyncio.timeout(20):
            await history.ready.wait()
        yield control, history, short_tmp / "ctl.sock"
    finally:
        await server.close()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


async def call(sock: Path, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    client = SupervisorClient(sock, timeout=20)
    try:
        return await asyncio.to_thread(client.request, method, path, body)
    except ApiError as exc:
        return exc.status, {"error": {"code": exc.code, "message": exc.message}}


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/v1/history?days=abc", "days='abc' is not a number"),
        ("/v1/history?days=-1", "days='-1' must be between 0 and 3660"),
        ("/v1/history?limit=0", "limit='0' must be between 1 and 10000"),
        ("/v1/history?days=nan", "days='nan' must be between"),
        ("/v1/report?period=month", "use period=day, period=week or since=UNIX_TIME"),
        ("/v1/report?period=day&since=1", "give either period= or since=, not both"),
        ("/v1/report?since=tomorrow", "since='tomorrow' is not a number"),
    ],
)
async def test_bad_queries_get_400_naming_the_parameter(
    recorded: tuple[DrivenControl, HistoryService, Path], path: str, needle: str
) -> None:
    status, body = await call(recorded[2], "GET", path)
    assert status == 400 and needle in body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"event": "started"}, '"run_id" must be'),
        ({"event": "begun", "run_id": "a"}, '"event" must be "started" or "finished"'),
        ({"event": "finished", "run_id": "a", "exit_code": "3"}, '"exit_code" must be an integer'),
        ({"event": "finished", "run_id": "a", "report": []}, '"report" must be a JSON object'),
        ({"event": "started", "run_id": "a", "colour": "red"}, "unknown field(s) ['colour']"),
        ({"event": "started", "run_id": "a", "command": 5}, '"command" must be a string'),
    ],
)
async def test_bad_run_posts_get_400_and_record_nothing(
    recorded: tuple[DrivenControl, HistoryService, Path], body: dict[str, Any], needle: str
) -> None:
    _control, history, sock = recorded
    status, answer = await call(sock, "POST", "/v1/runs", body)
    assert status == 400 and needle in answer["error"]["message"]
    events, _ = await history.history(time.time() - 60, time.time() + 1, None, 100)
    assert not [e for e in events if e["kind"] == "run"]


async def test_history_and_report_over_the_socket(recorded: tuple[DrivenControl, HistoryService, Path]) -> None:
    control, _history, sock = recorded
    control.set_state("beta", "healthy")
    status, body = await call(sock, "GET", "/v1/history?days=1&server=beta")
    assert status == 200 and [(e["server"], e["to_state"]) for e in body["events"]] == [("beta", "healthy")]
    status, report = await call(sock, "GET", "/v1/report?period=week")
    assert status == 200 and report["period"] == "week" and report["until"] - report["since"] == 7 * 86400
    assert (report["servers_total"], report["servers_healthy"], report["failed_servers"]) == (2, 2, [])
    assert report["recovery_rate"] == 1.0 and report["recoveries"] == 1  # beta: failed at start, healed
    status, report = await call(sock, "GET", f"/v1/report?since={time.time() - 60}")
    assert status == 200 and report["period"] == "custom"


async def test_without_a_record_the_routes_say_so(short_tmp: Path) -> None:
    control = DrivenControl({"alpha": "healthy"})
    server: ApiServer = await start_api_server(control, short_tmp / "ctl.sock")
    try:
        status, body = await call(short_tmp / "ctl.sock", "GET", "/v1/report")
        assert status == 404 and body["error"]["code"] == "no_history" and "[history]" in body["error"]["message"]
        # a guarded run is still announced on the bus (the notifier can still send it)
        with control.bus.subscription() as queue:
            status, body = await call(short_tmp / "ctl.sock", "POST", "/v1/runs",
                                      {"event": "finished", "run_id": "r", "exit_code": 0})
            assert status == 200
            kinds = [queue.get_nowait().kind for _ in range(queue.qsize())]
        assert kinds == ["run", "report"]
    finally:
        await server.close()


async def test_secrets_never_reach_the_record(recorded: tuple[DrivenControl, HistoryService, Path]) -> None:
    control, history, sock = recorded
    secret = "xoxb-very-secret-token-123"
    REDACTOR.update({secret})
    try:
        control.bus.publish(Event(kind="notify", server="alpha",
                                  data={"notify": "needs_human", "detail": f"401 with Bearer {secret}"}))
        status, _ = await call(sock, "POST", "/v1/runs", {"event": "started", "run_id": "r1",
                                                         "command": f"job.py --token {secret}"})
        assert status == 200
        await history.flush()
    finally:
        REDACTOR.update(())
    db = sqlite3.connect(history.path)
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    assert secret not in dump and "Bearer ***" in dump and "job.py --token ***" in dump


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[reports]\ndaily_at = "9.30"\n', "reports.daily_at: '9.30' is not a time of day; use 24-hour 'HH:MM'"),
        ('[reports]\nweekly_on = "mon"\n', "reports.weekly_on: 'mon' is not a weekday; use one of monday"),
        ('[history]\nretention = "forever"\n', "history.retention: 'forever' is not a duration"),
        ('[history]\nkeep = "1d"\n', "history.keep: unknown key"),
    ],
)
def test_config_errors_name_the_field_and_the_fix(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, tmp_path / "c.toml")
    assert needle in str(exc.value)


def test_config_defaults_and_off(tmp_path: Path) -> None:
    config = parse_config('[reports]\ndaily_at = "off"\nweekly_on = "Off"\n[history]\npath = "rec.db"\n',
                          tmp_path / "c.toml")
    assert (config.reports.daily_at, config.reports.weekly_on) == (None, None)
    assert config.history.path == tmp_path / "rec.db" and config.history.retention == 90 * 86400
    assert json.loads(json.dumps(parse_config("", tmp_path / "c.toml").reports.model_dump())) == {
        "daily_at": "09:30", "weekly_on": "monday"}


def test_report_text_shows_details_with_brackets_verbatim() -> None:
    from rich.console import Console

    from mcp_supervisor.cli.history_commands import render_report

    console = Console(record=True, width=200, color_system=None)
    console.print(render_report({"health": "DEGRADED", "period": "day", "servers_total": 2, "servers_healthy": 1,
                                 "uptime_pct": 97.5, "recovery_rate": 0.5, "failed_servers": ["jira"],
                                 "recommendations": ["jira needs a person: export [bold]JIRA_TOKEN[/] then recover"]}))
    text = console.export_text()
    assert "MCP health: DEGRADED" in text and "MCPs healthy: 1/2" in text and "uptime:       97.50 %" in text
    assert "recovery:     50 %" in text and "failed:       jira" in text
    assert "top recommendation: jira needs a person: export [bold]JIRA_TOKEN[/] then recover" in text


async def test_report_recommends_renewing_a_token_from_the_running_config(short_tmp: Path) -> None:
    from datetime import UTC, datetime, timedelta

    expires = (datetime.now(UTC) + timedelta(days=2)).date()  # good through the end of that UTC day
    config = parse_config(
        f'[supervisor]\nstate_dir = "{short_tmp}/state"\n[[servers]]\nname = "jira"\ntransport = "http"\n'
        f'url = "http://127.0.0.1:9/mcp"\ntoken_expires = {expires.isoformat()}\n', short_tmp / "config.toml")
    control = DrivenControl({"jira": "healthy"})
    history = HistoryService(lambda: config, control.bus, lambda: dict(control.states), flush_interval=0.1,
                             scheduled_reports=False)
    task = asyncio.create_task(history.run())
    try:
        async with asyncio.timeout(20):
            await history.ready.wait()
        report = await history.report(time.time() - 86400, time.time(), "day")
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    assert report["recommendations"] == ["renew the jira token: it expires in 3 days"]
