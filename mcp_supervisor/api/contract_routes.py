"""Tool contracts over the control API: see what changed, accept it.

``GET /v1/servers/{name}/tools`` answers the pending change (added, removed, changed fields), the
server's version before and after and whether the server is ``drifted``;
``POST /v1/servers/{name}/accept-tools`` pins what the server now says (``runtime/contracts.py``)
and probes it at once with a ``tools/list``, so a drifted server is ready again in one step.
Hashes and tool names only: nothing secret is in a contract.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mcp_supervisor.api.app_keys import CONTROL_KEY
from mcp_supervisor.api.middleware import ApiError
from mcp_supervisor.health.model import ProbeKind, UnknownServer


def _parts(request: web.Request) -> tuple[Any, Any]:
    control = request.app[CONTROL_KEY]
    keeper = getattr(control, "contracts", None)
    if keeper is None:
        raise ApiError(404, "no_contracts", "tool contracts are not kept by this daemon")
    name = request.match_info["name"]
    runner = getattr(control, "runners", {}).get(name)
    if runner is None:
        raise UnknownServer(name)
    return keeper, runner


async def get_tools(request: web.Request) -> web.Response:
    keeper, runner = _parts(request)
    return web.json_response({**keeper.pending(runner.server), "state": str(runner.state)})


async def accept_tools(request: web.Request) -> web.Response:
    keeper, runner = _parts(request)
    answer = keeper.accept(runner.server)
    await runner.probe_now(ProbeKind.TOOLS)
    return web.json_response({**answer, "state": str(runner.state)})


def add_contract_routes(app: web.Application) -> None:
    app.router.add_get("/v1/servers/{name}/tools", get_tools)
    app.router.add_post("/v1/servers/{name}/accept-tools", accept_tools)
