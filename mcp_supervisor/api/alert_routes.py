"""``/v1/silences``: silences and maintenance windows over the control API.

``GET /v1/silences[?all=1]`` lists the active ones (``all``: also those ended in the last week),
``POST /v1/silences`` makes one (``{"server": "jira" | "*", "for": 3600 | "1h", "reason": "...",
"kind": "silence" | "maintenance"}``), ``DELETE /v1/silences/{id}`` ends one early. Why strict
validation here too: a script posts these; a bad body is a 400 naming the field and the fix.
Every change is stored in the record before it is answered (a daemon restart keeps it).
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from mcp_supervisor.api.app_keys import CONTROL_KEY
from mcp_supervisor.api.middleware import ApiError, json_body

_FIELDS = {"server", "for", "reason", "kind"}


def _notifier(request: web.Request) -> Any:
    notifier = getattr(request.app[CONTROL_KEY], "notifier", None)
    if notifier is None:
        raise ApiError(404, "no_notifier", "the notifier is not running in this daemon")
    return notifier


def _seconds(raw: Any) -> float:
    from mcp_supervisor.config.base import parse_duration

    if isinstance(raw, bool) or raw is None:
        raise ApiError(400, "bad_request", '"for" is required: seconds or a duration such as "1h"')
    try:
        value = parse_duration(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_request", f'"for": {exc}') from None
    if not math.isfinite(value):
        raise ApiError(400, "bad_request", '"for" must be a finite duration')
    return value


async def get_silences(request: web.Request) -> web.Response:
    import time

    notifier = _notifier(request)
    now = time.time()
    everything = request.query.get("all") in ("1", "true", "yes")
    items = [s.to_json(now) for s in notifier.silences.listing(now, include_ended=everything)]
    maintenance = {name: s.to_json(now) for name, s in notifier.silences.maintenance(now).items()}
    return web.json_response({"silences": items, "maintenance": maintenance})


async def post_silence(request: web.Request) -> web.Response:
    from mcp_supervisor.notify.silences import SilenceError

    body = await json_body(request)
    unknown = set(body) - _FIELDS
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s) {sorted(unknown)}; accepted: {sorted(_FIELDS)}")
    server, reason, kind = body.get("server"), body.get("reason", ""), body.get("kind", "silence")
    if not isinstance(server, str) or not server:
        raise ApiError(400, "bad_request", '"server" must be a server name or "*" (every server)')
    if not isinstance(reason, str) or not isinstance(kind, str):
        raise ApiError(400, "bad_request", '"reason" and "kind" must be strings')
    try:
        made = await _notifier(request).add_silence(kind, server, _seconds(body.get("for")), reason)
    except SilenceError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    return web.json_response(made, status=201)


async def delete_silence(request: web.Request) -> web.Response:
    from mcp_supervisor.notify.silences import SilenceError

    try:
        ended = await _notifier(request).end_silence(request.match_info["id"])
    except SilenceError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    return web.json_response(ended)


def add_alert_routes(app: web.Application) -> None:
    app.router.add_get("/v1/silences", get_silences)
    app.router.add_post("/v1/silences", post_silence)
    app.router.add_delete("/v1/silences/{id}", delete_silence)
