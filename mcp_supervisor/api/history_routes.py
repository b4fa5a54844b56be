"""``/v1/history``, ``/v1/report`` and ``POST /v1/runs``: the record over the control API.

Why the runs route publishes events instead of writing rows: the bus is the one way into the
record, so a guarded run is recorded, streamed to ``/v1/events`` and sent to Slack alike.
Why strict validation: a script posts here; a bad body gets a 400 naming the field and the fix,
never a 500 and never a row of garbage in the record.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from aiohttp import web

from mcp_supervisor.api.app_keys import CONTROL_KEY
from mcp_supervisor.api.middleware import ApiError, json_body
from mcp_supervisor.events import Event

MAX_DAYS = 3660.0
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_RUN_FIELDS = {"event", "run_id", "command", "exit_code", "report", "started_at", "finished_at", "duration_s",
               "required", "fallback", "failures", "recoveries", "servers"}


def _history(request: web.Request) -> Any:
    control = request.app[CONTROL_KEY]
    history = getattr(control, "history", None)
    if history is None:
        raise ApiError(404, "no_history", "the record is off ([history] enabled = false) or not running; "
                                          "see the daemon's log")
    return history


def _number(raw: str | None, name: str, low: float, high: float) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or not (low <= value <= high):
        raise ApiError(400, "bad_request", f"{name}={raw!r} must be between {low:g} and {high:g}")
    return value


def _server(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    if len(raw) > 64:
        raise ApiError(400, "bad_request", "server= is too long (names have at most 64 characters)")
    return raw


async def _answer(call: Any) -> Any:
    from mcp_supervisor.history.store import HistoryError

    try:
        return await call
    except HistoryError as exc:
        raise ApiError(409, "history_unavailable", str(exc)) from None


async def get_history(request: web.Request) -> web.Response:
    days = _number(request.query.get("days"), "days", 0.0, MAX_DAYS) or 1.0
    limit = int(_number(request.query.get("limit"), "limit", 1, MAX_LIMIT) or DEFAULT_LIMIT)
    server = _server(request.query.get("server"))
    until = time.time()
    since = until - days * 86400.0
    events, cut = await _answer(_history(request).history(since, until, server, limit))
    return web.json_response({"since": since, "until": until, "server": server, "events": events, "truncated": cut})


async def get_report(request: web.Request) -> web.Response:
    period = request.query.get("period") or None
    since_raw = request.query.get("since")
    until = time.time()
    if period not in (None, "day", "week"):
        raise ApiError(400, "bad_request", f"period={period!r}: use period=day, period=week or since=UNIX_TIME")
    since = _number(since_raw, "since", 0.0, until)
    if since is not None and period is not None:
        raise ApiError(400, "bad_request", "give either period= or since=, not both")
    if since is None:
        period = period or "day"
        since = until - (7 if period == "week" else 1) * 86400.0
    else:
        period = "custom"
    report = await _answer(_history(request).report(since, until, period))
    return web.json_response(report)


def _validate_run(body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - _RUN_FIELDS
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s) {sorted(unknown)}; accepted: {sorted(_RUN_FIELDS)}")
    event = body.get("event")
    if event not in ("started", "finished"):
        raise ApiError(400, "bad_request", '"event" must be "started" or "finished"')
    run_id = body.get("run_id")
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise ApiError(400, "bad_request", '"run_id" must be 1-128 letters, digits, ".", "_", ":" or "-"')
    command = body.get("command", "")
    if not isinstance(command, str) or len(command) > 4096:
        raise ApiError(400, "bad_request", '"command" must be a string of at most 4096 characters')
    exit_code = body.get("exit_code")
    if exit_code is not None and (not isinstance(exit_code, int) or isinstance(exit_code, bool)):
        raise ApiError(400, "bad_request", '"exit_code" must be an integer or null')
    report = body.get("report")
    if report is not None and not isinstance(report, dict):
        raise ApiError(400, "bad_request", '"report" must be a JSON object (the REPORT shape) or absent')
    return body


async def post_run(request: web.Request) -> web.Response:
    from mcp_supervisor.logging import REDACTOR

    body = REDACTOR.scrub(_validate_run(await json_body(request)))
    control = request.app[CONTROL_KEY]
    history = getattr(control, "history", None)
    data = {k: v for k, v in body.items() if k != "report"}
    answer: dict[str, Any] = {"ok": True, "run_id": body["run_id"], "event": body["event"]}
    if body["event"] == "started":
        control.bus.publish(Event(kind="run", data=data))
        return web.json_response(answer)
    report = body.get("report")
    if report is None and history is not None:
        started = await _answer(history.run_started(body["run_id"]))
        if started is not None:
            report = await _answer(history.report(started, time.time(), "run"))
    report = dict(report) if isinstance(report, dict) else {}
    report["period"] = "run"
    report.setdefault("run", data)
    control.bus.publish(Event(kind="run", data={**data, "report": report}))
    control.bus.publish(Event(kind="report", data={"period": "run", "report": report}))
    answer["report"] = report
    return web.json_response(answer)


def add_history_routes(app: web.Application) -> None:
    app.router.add_get("/v1/history", get_history)
    app.router.add_get("/v1/report", get_report)
    app.router.add_post("/v1/runs", post_run)
