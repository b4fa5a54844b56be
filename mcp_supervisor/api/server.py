"""The control API: aiohttp over a Unix socket, versioned ``/v1`` JSON routes and SSE events.

Why a Unix socket with SO_PEERCRED instead of a TCP port with tokens: the kernel tells us who the
peer is, so there is no secret to leak, and filesystem permissions (mode 0660) are a second wall.
Why a middleware that turns every unexpected exception into a JSON 500: a bad request or a bug in
one route must never take the supervisor down, and a script must always get a parseable answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import math
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from mcp_supervisor.api.control import SupervisorControl, UnknownServer
from mcp_supervisor.events import Event
from mcp_supervisor.health.model import Command
from mcp_supervisor.logging import get_logger

log = get_logger("mcp_supervisor.api")

MAX_WAIT = 300.0
"""Cap for ``/v1/ready?wait=``: a long-poll longer than this is a client bug or a stuck script."""
HEARTBEAT = 15.0
"""Seconds between SSE comment lines; they keep proxies awake and detect vanished clients."""
SOCKET_MODE = 0o660

CONTROL_KEY: web.AppKey[SupervisorControl] = web.AppKey("control", SupervisorControl)
VAULT_KEY: web.AppKey[Any] = web.AppKey("vault", object)
HEARTBEAT_KEY: web.AppKey[float] = web.AppKey("heartbeat", float)
STOPPING_KEY: web.AppKey[asyncio.Event] = web.AppKey("stopping", asyncio.Event)

_PEERCRED = struct.Struct("3i")
_T = TypeVar("_T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiStartError(RuntimeError):
    """The API cannot listen on its socket; ``str()`` says why and what to do."""


class ApiError(Exception):
    """A request the API refuses; becomes ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


# --- middlewares --------------------------------------------------------------------------------


_HTTP_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except UnknownServer as exc:
        name = exc.args[0] if exc.args else "?"
        return error_response(404, "unknown_server", f"no server named {name!r} in the running config")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason
        if exc.status == 404:
            message = f"no route {request.method} {request.path} (see GET /v1/status, /v1/ready, /v1/events)"
        elif exc.status == 405:
            allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
            message = f"{request.method} is not allowed on {request.path}" + (f"; use {allowed}" if allowed else "")
        response = error_response(exc.status, code, message)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("api handler failed", method=request.method, path=request.path)
        return error_response(500, "internal", "internal error in the supervisor; see its log")


def peer_credentials(request: web.Request) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the peer, from the kernel; None when the transport has no socket."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


def make_peer_middleware(allowed_uids: Iterable[int], allowed_gids: Iterable[int]) -> Any:
    uids = {0, os.getuid(), *allowed_uids}
    gids = set(allowed_gids)

    @web.middleware
    async def peer_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        creds = peer_credentials(request)
        if creds is None:
            log.warning("refused a peer without credentials", path=request.path)
            return error_response(403, "forbidden", "peer credentials unavailable; connect over the Unix socket")
        pid, uid, gid = creds
        if uid not in uids and gid not in gids:
            log.warning("refused a peer", pid=pid, uid=uid, gid=gid, path=request.path)
            return error_response(
                403,
                "forbidden",
                f"uid {uid} is not allowed on this socket; add it to [supervisor] allowed_uids "
                "(or its group to allowed_gids)",
            )
        return await handler(request)

    return peer_middleware


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
    if not answer["ready"] and wait > 0:
        waited = await _unless_stopping(request.app, control.wait_ready(servers, wait))
        # a daemon that is stopping answers a parked long-poll now, with what it knows
        answer = waited if waited is not None else control.readiness(servers)
    return web.json_response(answer, status=200 if answer["ready"] else 503)


async def probe(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return web.json_response(await _finish(_control(request).probe_now(name)))


def _command_route(cmd: Command) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.json_response(await _finish(_control(request).command(name, cmd)))

    handler.__name__ = f"command_{cmd}"
    return handler


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The optional JSON object body; an empty body is ``{}``."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the request body must be a JSON object")
    return body


async def emergency(request: web.Request) -> web.Response:
    body = await _json_body(request)
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


def _sse_frame(event_json: dict[str, Any]) -> bytes:
    data = json.dumps(event_json, separators=(",", ":"), default=str)
    return f"id: {event_json.get('seq', '')}\nevent: {event_json.get('kind', 'message')}\ndata: {data}\n\n".encode()


async def _next_or_none(queue: asyncio.Queue[Event], timeout: float) -> Event | None:
    try:
        return await asyncio.wait_for(queue.get(), timeout)
    except TimeoutError:
        return None


async def events(request: web.Request) -> web.StreamResponse:
    bus = _control(request).bus
    heartbeat = request.app[HEARTBEAT_KEY]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    with bus.subscription() as queue:
        await response.prepare(request)
        try:
            await response.write(b": connected\n\n")
            stopping = request.app[STOPPING_KEY]
            while not stopping.is_set():
                event = await _unless_stopping(request.app, _next_or_none(queue, heartbeat))
                if event is None:
                    if not stopping.is_set():
                        await response.write(b": heartbeat\n\n")
                    continue
                await response.write(_sse_frame(event.to_json()))
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away: leave, which drops the subscription
    return response


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
        client_max_size=1024 * 1024,
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
    if extra_routes is not None:
        extra_routes(app)
    return app


# --- the socket ---------------------------------------------------------------------------------


def _someone_listens(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        return True  # e.g. EAGAIN (backlog full) or a timeout: something is there
    finally:
        probe.close()
    return True


def bind_socket(path: Path) -> socket.socket:
    """A listening socket at ``path`` with mode 0660, replacing only a stale (dead) socket file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    if path.exists() or path.is_symlink():
        mode = path.lstat().st_mode
        if not stat.S_ISSOCK(mode):
            raise ApiStartError(
                f"{path} exists and is not a socket; refusing to replace it (remove it or choose "
                "another path with --socket or [supervisor] socket)"
            )
        if _someone_listens(path):
            raise ApiStartError(
                f"another mcp-supervisor is already listening on {path}; stop it first "
                "(or give this one another --socket)"
            )
        log.info("removing a stale control socket", socket=str(path))
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        # before listen() nobody can connect, so there is no window with a wider mode; a
        # process-wide umask change would race with other threads creating files
        os.chmod(path, SOCKET_MODE)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ApiStartError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    return sock


class ApiServer:
    """A running API; ``close()`` stops it and removes its socket file (if it is still ours)."""

    def __init__(self, runner: web.AppRunner, socket_path: Path, inode: int) -> None:
        self.runner = runner
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
    app = build_app(
        control,
        allowed_uids=allowed_uids,
        allowed_gids=allowed_gids,
        extra_routes=extra_routes,
        vault=vault,
        heartbeat=heartbeat,
    )
    sock = bind_socket(socket_path)
    inode = socket_path.lstat().st_ino
    # handler_cancellation: a long-poll or SSE client that hangs up frees its waiter at once;
    # state-changing routes are shielded so they still complete.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    try:
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
    except BaseException:
        await runner.cleanup()
        sock.close()
        socket_path.unlink(missing_ok=True)
        raise
    log.info("control API listening", socket=str(socket_path))
    return ApiServer(runner, socket_path, inode)
