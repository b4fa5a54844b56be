"""The guardian against a daemon that has ``POST /v1/runs`` (the record's route, CONTRACTS.md): the
real API server on a real socket, with a ``/v1/runs`` route added the way ``api/<x>_routes.py``
modules add theirs, and the guardian as the installed console script."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from mcp_supervisor.api.server import ApiServer, start_api_server
from tests.test_api import DrivenControl
from tests.test_cli import CLI, clean_env

JOB = Path(__file__).parent / "jobs" / "guarded_job.py"


@pytest.fixture
async def daemon(short_tmp: Path) -> AsyncIterator[tuple[ApiServer, DrivenControl, list[dict[str, Any]]]]:
    control = DrivenControl({"jira": "healthy", "gitlab": "healthy"})
    received: list[dict[str, Any]] = []

    @web.middleware
    async def record_runs(request: web.Request, handler: Any) -> web.StreamResponse:
        """Keeps every body the guardian POSTs to the daemon's own /v1/runs route."""
        if request.method == "POST" and request.path == "/v1/runs":
            received.append(await request.json())
        return await handler(request)

    def add_runs_route(app: web.Application) -> None:
        app.middlewares.append(record_runs)

    server = await start_api_server(control, short_tmp / "ctl.sock", extra_routes=add_runs_route)
    try:
        yield server, control, received
    finally:
        await server.close()


async def test_started_and_finished_are_posted_with_the_agreed_body(
    daemon: tuple[ApiServer, DrivenControl, list[dict[str, Any]]], short_tmp: Path
) -> None:
    server, _control, received = daemon
    env = clean_env(short_tmp, XDG_STATE_HOME=str(short_tmp / "state"))
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "--socket", str(server.socket_path), "run", "--json", "--", sys.executable, str(JOB), "exit", "3",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 3, err.decode()  # the job's own 3, not "unreachable": it ran
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert [b["event"] for b in received] == ["started", "finished"]
    started, finished = received
    assert set(started) == {"event", "run_id", "command", "exit_code"} and started["exit_code"] is None
    assert set(finished) == {"event", "run_id", "command", "exit_code", "report"}
    assert started["run_id"] == finished["run_id"] == report["run"]["run_id"]
    assert finished["exit_code"] == 3 and finished["command"].endswith("guarded_job.py exit 3")
    assert finished["report"]["period"] == "run" and finished["report"]["run"]["outcome"] == "failed"
    assert report["run"]["daemon"]["runs_api"] == "stored"
    assert report["run"]["precheck"]["backup"] == {"taken": False, "reason": "no vault configured"}
    saved = list((short_tmp / "state" / "mcp-supervisor" / "runs").glob("*.json"))
    assert [p.name for p in saved] == [f"{report['run']['run_id']}.json"]  # no config: the user's state dir


EXAMPLE = Path(__file__).parent.parent / "examples" / "guarded_analysis.py"


@pytest.mark.parametrize(("jira", "source"), [("healthy", "the Jira MCP server"), ("fallback", "the Jira REST API")])
async def test_the_example_job_guards_itself_and_uses_the_fallback_it_is_told(
    short_tmp: Path, jira: str, source: str
) -> None:
    control = DrivenControl({"jira": jira})
    server = await start_api_server(control, short_tmp / "ctl.sock")
    try:
        env = clean_env(short_tmp, MCP_SUPERVISOR_SOCKET=str(server.socket_path),
                        XDG_STATE_HOME=str(short_tmp / "state"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLE), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await server.close()
    assert proc.returncode == 0, err.decode()
    assert f"analysing today's tickets through {source}" in out.decode()
    [saved] = (short_tmp / "state" / "mcp-supervisor" / "runs").glob("*.json")
    report = json.loads(saved.read_text())
    assert report["run"]["outcome"] == "succeeded" and report["run"]["fallback"] == ([] if jira == "healthy" else ["jira"])
