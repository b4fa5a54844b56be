"""The control API: aiohttp over a Unix socket, versioned ``/v1`` JSON routes and SSE events.

Why a Unix socket with SO_PEERCRED instead of a TCP port with tokens: the kernel tells us who the
peer is, so there is no secret to leak, and filesystem permissions are a second wall. The socket
and its directory live in ``api/unix_socket.py``; what every request passes through (peer check,
bounded bodies, errors as JSON, redaction) in ``api/middleware.py``; the routes are here.
Why connections idle for ``IDLE_TIMEOUT`` are closed: a client that connects and never finishes
its request (or 500 of them) must not hold the daemon's file descriptors forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from mcp_supervisor import sse
from mcp_supervisor.api.app_keys import CONTROL_KEY, VAULT_KEY
from mcp_supervisor.api.control import SupervisorControl
from mcp_supervisor.api.event_stream import stream_events
from mcp_supervisor.api.middleware import (
    MAX_BODY,
    AccessLogger,
    ApiError,
    Handler,
    JsonErrorsProtocol,
    errors_middleware,
    json_body,
    make_peer_middleware,
)
from mcp_supervisor.api.unix_socket import bind_socket, listen_backlog
from mcp_supervisor.events import Event
from mcp_supervisor.health.model import Command
from mcp_supervisor.logging import get_logger
from mcp_supervisor.redact import REDACTOR

log = get_logger("mcp_supervisor.api")

MAX_WAIT = 300.0
"""Cap for ``/v1/ready?wait=``: a long-poll longer than this is a client bug or a stuck script."""
HEARTBEAT = 15.0
"""Seconds between SSE comment lines; they keep proxies awake and detect vanished clients."""
IDLE_TIMEOUT = 5.0
"""Seconds a connection may sit without a complete request (before the first and between requests)."""

HEARTBEAT_KEY: web.AppKey[float] = web.AppKey("heartbeat", float)
STOPPING_KEY: web.AppKey[asyncio.Event] = web.AppKey("stopping", asyncio.Event)

_T = TypeVar("_T")


# --- routes -------------------------------------------------------------------------------------


def _control(request: web.Request) -> SupervisorControl:
    return request.app[CONTROL_KEY]


async def _unless_stopping(app: web.Application, coro: Coroutine[Any, Any, _T]) -> _T | None:
    """``coro``'s result, or None if the server starts shutting down first (then ``coro`` is cancelled).

    Why: a long-poll or an event stream must not hold a stopping daemon for aiohttp's grace period.
    """
    task = asyncio.ensure_future(coro)
    stopping = asyncio.ensure_future(app[STOPPING_KEY].wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return task.result() if not task.cancelled() else None


async def _finish(coro: Coroutine[Any, Any, _T]) -> _T:
    """Let a state-changing call complete even if the client hangs up mid-way."""
    return await asyncio.shield(asyncio.ensure_future(coro))


def parse_servers(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    return names or None


def parse_wait(raw: str | None) -> float:
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "bad_wait", f"wait={raw!r} is not a number of seconds (0..{MAX_WAIT:g})") from None
    if not math.isfinite(value) or value < 0:
        raise ApiError(400, "bad_wait", f"wait={raw!r} must be a number of seconds between 0 and {MAX_WAIT:g}")
    return min(value, MAX_WAIT)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "pid": os.getpid()})


async def status(request: web.Request) -> web.Response:
    return web.json_response(_control(request).status())


async def ready(request: web.Request) -> web.Response:
    servers = parse_servers(request.query.get("servers"))
    wait = parse_wait(request.query.get("wait"))
    control = _control(request)
    answer = control.readiness(servers)  # also validates names before a long wait
    if not answer["ready"] and wait > 0 and not request.app[STOPPING_KEY].is_set():
        waited = await _unless_stopping(request.app, control.wait_ready(servers, wait))
        answer = waited if waited is not None else control.readiness(servers)
    if request.app[STOPPING_KEY].is_set():
        answer = stopping_answer(answer)  # a daemon on its way out is never "ready"
    return web.Response(body=_encoded(answer), status=200 if answer["ready"] else 503,
                        content_type="application/json")


_last_ready: tuple[dict[str, Any], bytes] | None = None


def _encoded(answer: dict[str, Any]) -> bytes:
    """The JSON of a readiness answer; the runtime hands out the same dict until the answer
    changes, so a job polling through a storm gets the bytes encoded once (issue 22)."""
    global _last_ready
    if _last_ready is None or _last_ready[0] is not answer:
        _last_ready = (answer, json.dumps(answer).encode())
    return _last_ready[1]


def stopping_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """``answer`` as a stopping daemon must give it: not ready, and saying why."""
    not_ready = list(answer.get("not_ready") or []) or [
        {"name": "*", "state": "stopping", "reason": "daemon stopping"}
    ]
    return {**answer, "ready": False, "daemon": "stopping", "not_ready": not_ready}


async def probe(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return web.json_response(await _finish(_control(request).probe_now(name)))


def _command_route(cmd: Command) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.json_response(await _finish(_control(request).command(name, cmd)))

    handler.__name__ = f"command_{cmd}"
    return handler


async def emergency(request: web.Request) -> web.Response:
    body = await json_body(request)
    name = body.get("server")
    if name is not None and (not isinstance(name, str) or not name):
        raise ApiError(400, "bad_request", '"server" must be a server name (a non-empty string)')
    unknown = set(body) - {"server"}
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s) {sorted(unknown)}; only \"server\" is accepted")
    return web.json_response(await _finish(_control(request).command(name, Command.EMERGENCY)))


async def reload(request: web.Request) -> web.Response:
    answer = await _finish(_control(request).reload())
    return web.json_response(answer, status=200 if answer.get("ok", True) else 422)


def _sse_frame(event: Event) -> bytes:
    event_json = REDACTOR.payload(event.to_json())
    data = json.dumps(event_json, separators=(",", ":"), default=str)
    return sse.frame(data, event=str(event_json.get("kind", "message")), id=event_json.get("seq", ""))


async def events(request: web.Request) -> web.StreamResponse:
    """Every bus event, redacted, as it happens (the CLI's ``events``, the guardian, the dashboard)."""
    return await stream_events(request, _control(request).bus, _sse_frame, stopping=request.app[STOPPING_KEY],
                               heartbeat=request.app[HEARTBEAT_KEY])


def build_app(
    control: SupervisorControl,
    *,
    allowed_uids: Iterable[int] = (),
    allowed_gids: Iterable[int] = (),
    extra_routes: Callable[[web.Application], None] | None = None,
    vault: Any = None,
    heartbeat: float = HEARTBEAT,
) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, make_peer_middleware(allowed_uids, allowed_gids)],
        client_max_size=MAX_BODY,
    )
    app[CONTROL_KEY] = control
    app[VAULT_KEY] = vault
    app[HEARTBEAT_KEY] = heartbeat
    app[STOPPING_KEY] = asyncio.Event()

    async def on_shutdown(app: web.Application) -> None:
        app[STOPPING_KEY].set()

    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/ready", ready)
    app.router.add_get("/v1/events", events)
    app.router.add_post("/v1/servers/{name}/probe", probe)
    for cmd in (Command.RECOVER, Command.PAUSE, Command.RESUME):
        app.router.add_post(f"/v1/servers/{{name}}/{cmd}", _command_route(cmd))
    app.router.add_post("/v1/emergency", emergency)
    app.router.add_post("/v1/reload", reload)
    from mcp_supervisor.api.vault_routes import add_vault_routes

    add_vault_routes(app)  # answer 404 "no vault configured" rather than "no route" when absent
    from mcp_supervisor.api.history_routes import add_history_routes

    add_history_routes(app)  # /v1/history, /v1/report, POST /v1/runs (the record: control.history)
    from mcp_supervisor.api.alert_routes import add_alert_routes

    add_alert_routes(app)  # /v1/silences (silences and maintenance windows: control.notifier)
    from mcp_supervisor.api.contract_routes import add_contract_routes

    add_contract_routes(app)  # /v1/servers/{name}/tools, accept-tools (tool contracts: control.contracts)
    if extra_routes is not None:
        extra_routes(app)
    return app


class ApiServer:
    """A running API; ``close()`` stops it and removes its socket file (if it is still ours)."""

    def __init__(self, runner: web.AppRunner, listener: asyncio.Server, socket_path: Path, inode: int) -> None:
        self.runner = runner
        self._listener = listener
        self.socket_path = socket_path
        self._inode = inode
        self._closed = False

    @property
    def app(self) -> web.Application:
        app = self.runner.app
        assert app is not None
        return app

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._listener.close()  # no new connections; the runner then ends the open ones
        await self.runner.cleanup()
        try:
            if self.socket_path.lstat().st_ino == self._inode:
                self.socket_path.unlink()
        except FileNotFoundError:
            pass

    aclose = close


async def start_api_server(
    control: SupervisorControl,
    socket_path: Path,
    *,
    allowed_uids: Iterable[int] = (),
    allowed_gids: Iterable[int] = (),
    extra_routes: Callable[[web.Application], None] | None = None,
    vault: Any = None,
    heartbeat: float = HEARTBEAT,
) -> ApiServer:
    """Listen on ``socket_path``. Raises ApiStartError if another daemon is already there."""
    socket_path = Path(socket_path)
    allowed_uids, allowed_gids = list(allowed_uids), list(allowed_gids)
    app = build_app(
        control,
        allowed_uids=allowed_uids,
        allowed_gids=allowed_gids,
        extra_routes=extra_routes,
        vault=vault,
        heartbeat=heartbeat,
    )
    sock, socket_path = bind_socket(socket_path, shared=bool(allowed_uids or allowed_gids))
    inode = socket_path.lstat().st_ino
    # handler_cancellation: a long-poll or SSE client that hangs up frees its waiter at once;
    # state-changing routes are shielded so they still complete.
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log_class=AccessLogger, shutdown_timeout=1.0,
        keepalive_timeout=IDLE_TIMEOUT,
    )  # fmt: skip
    try:
        await runner.setup()
        server = runner.server
        assert server is not None

        def protocol() -> JsonErrorsProtocol:  # aiohttp's own, but malformed requests get JSON errors
            return JsonErrorsProtocol(server, loop=loop, keepalive_timeout=IDLE_TIMEOUT, access_log_class=AccessLogger)

        loop = asyncio.get_running_loop()
        listener = await loop.create_server(protocol, sock=sock, backlog=listen_backlog())  # listen() again
    except BaseException:
        await runner.cleanup()
        sock.close()
        socket_path.unlink(missing_ok=True)
        raise
    log.info("control API listening", socket=str(socket_path))
    return ApiServer(runner, listener, socket_path, inode)
