"""``/v1/backups`` and ``/v1/configs/{name}/restore``: the vault over the control API.

Why errors are mapped here: a restore of an unknown config or snapshot is the caller's mistake
(404/400 with the reason), an unreadable vault is the operator's to fix (409 with the fix), and
neither may surface as a 500 or leak file contents.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mcp_supervisor.api.app_keys import VAULT_KEY
from mcp_supervisor.api.middleware import ApiError, json_body


def _vault(request: web.Request) -> Any:
    vault = request.app[VAULT_KEY]
    if vault is None:
        raise ApiError(
            404, "no_vault", "no vault configured (add [backup] locations = [...] to the config)"
        )
    return vault


async def _guard(call: Any) -> Any:
    from mcp_supervisor.vault.crypto import VaultError
    from mcp_supervisor.vault.service import NoBackupsYet, RestoreError

    try:
        return await call
    except RestoreError as exc:
        missing = isinstance(exc, NoBackupsYet) or "no watched config" in str(exc) or "not found" in str(exc)
        status = 404 if missing else 409
        raise ApiError(status, "restore_failed", str(exc)) from None
    except VaultError as exc:
        raise ApiError(409, "vault_error", str(exc)) from None


async def list_backups(request: web.Request) -> web.Response:
    return web.json_response({"snapshots": await _guard(_vault(request).list_snapshots())})


async def create_backup(request: web.Request) -> web.Response:
    body = await json_body(request)
    unknown = set(body) - {"accept"}
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s) {sorted(unknown)}; only \"accept\" is accepted")
    accept = body.get("accept", False)
    if not isinstance(accept, bool):
        raise ApiError(400, "bad_request", '"accept" must be true or false')
    return web.json_response(await _guard(_vault(request).backup("api", accept=accept)))


async def restore_config(request: web.Request) -> web.Response:
    body = await json_body(request)
    unknown = set(body) - {"snapshot"}
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s) {sorted(unknown)}; only \"snapshot\" is accepted")
    snapshot = body.get("snapshot")
    if snapshot is not None and (not isinstance(snapshot, str) or not snapshot or "/" in snapshot):
        raise ApiError(400, "bad_request", '"snapshot" must be a snapshot id (see GET /v1/backups)')
    vault = _vault(request)
    return web.json_response(await _guard(vault.restore(request.match_info["name"], snapshot)))


def add_vault_routes(app: web.Application) -> None:
    app.router.add_get("/v1/backups", list_backups)
    app.router.add_post("/v1/backups", create_backup)
    app.router.add_post("/v1/configs/{name}/restore", restore_config)
