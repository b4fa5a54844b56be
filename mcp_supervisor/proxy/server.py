"""The proxy's Streamable HTTP endpoint: ``/servers/<name>/mcp`` on loopback, behind a bearer token.

Why the same handlers serve the control socket (``/v1/proxy/<name>/mcp``) without the token: the
stdio bridge reaches the daemon there, and the socket's own uid/gid rule already says who may.
Every refusal is a JSON-RPC error body with a status a client can act on: 401 token, 404 unknown
server or session, 413 too big, 400 not one JSON-RPC message, 503 too many sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from mcp_supervisor.logging import get_logger
from mcp_supervisor.proxy.service import ProxyService, TooManySessions
from mcp_supervisor.proxy.session import ProxySession
from mcp_supervisor.proxy.token import bearer_ok
from mcp_supervisor.proxy.wire import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    SESSION_HEADER,
    UNKNOWN_SERVER,
    VERSION_HEADER,
    BadMessage,
    Message,
    error,
    is_notification,
    is_request,
    is_response,
    modern_version,
    parse_message,
    sse_event,
)

log = get_logger("mcp_supervisor.proxy")
HEARTBEAT = 15.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def rpc_error(status: int, code: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(error(None, code, text)), content_type="application/json",
                        headers=headers)


class ProxyHandlers:
    """POST/GET/DELETE of one server's MCP endpoint, whatever listener they are mounted on."""

    def __init__(self, service: ProxyService) -> None:
        self.service = service

    def add_routes(self, app: web.Application, prefix: str) -> None:
        path = prefix + "/{name}/mcp"
        app.router.add_post(path, self.post)
        app.router.add_get(path, self.get)
        app.router.add_delete(path, self.delete)

    def _unknown(self, name: str) -> web.Response:
        known = ", ".join(self.service.known_names()) or "none"
        return rpc_error(404, UNKNOWN_SERVER, f"no server named {name!r} is supervised here (known: {known})")

    async def post(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        server = self.service.server_config(name)
        if server is None:
            return self._unknown(name)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.service.rejected += 1
            return rpc_error(413, INVALID_REQUEST, f"the body is larger than {self.service.max_body} bytes "
                             "([proxy] max_body)")
        try:
            message = parse_message(body)
        except BadMessage as exc:
            self.service.rejected += 1
            return rpc_error(400, exc.code, str(exc))
        session_id = request.headers.get(SESSION_HEADER)
        if session_id:
            found = self.service.legacy(name, session_id)
            if found is None:
                return rpc_error(404, INVALID_REQUEST, "Session not found: initialize a new session")
            session = found
        elif is_request(message) and message["method"] == "initialize":
            try:
                session = self.service.new_legacy(server)
            except TooManySessions as exc:
                return rpc_error(503, INTERNAL_ERROR, f"{exc}; close idle sessions (DELETE) or raise the limit")
        elif modern_version(message, request.headers.get(VERSION_HEADER)) is not None or not is_request(message):
            session = self.service.modern(server)
        else:
            return rpc_error(400, INVALID_REQUEST, "Bad Request: no Mcp-Session-Id; send initialize first, or a "
                             "2026-07-28 request (MCP-Protocol-Version header)")
        if is_response(message):
            session.client_response(message)
            return web.Response(status=202)
        if is_notification(message):
            if session.core.era == "legacy":
                session.notify(message)
            return web.Response(status=202)
        headers = None
        if session.core.era == "modern":
            headers = {k: v for k, v in request.headers.items()
                       if k.lower().startswith("mcp-") and k.lower() != "mcp-session-id"}
        return await self._answer(request, session, message, headers)

    async def _answer(self, request: web.Request, session: ProxySession, message: Message,
                      headers: dict[str, str] | None) -> web.StreamResponse:
        key, queue = session.request(message, headers)
        extra = {SESSION_HEADER: session.id} if session.id else {}
        try:
            first, final = await queue.get()
            if final:
                if message["method"] == "initialize" and "error" in first:
                    self.service.forget_failed(session)
                    extra = {}
                return web.Response(body=json.dumps(first), content_type="application/json", headers=extra)
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                                   **extra})
            await response.prepare(request)
            await response.write(sse_event(first))
            while not final:
                answer, final = await queue.get()
                await response.write(sse_event(answer))
            return response
        except (asyncio.CancelledError, ConnectionError):
            session.client_gone(key)
            raise

    async def get(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if self.service.server_config(name) is None:
            return self._unknown(name)
        session_id = request.headers.get(SESSION_HEADER)
        if not session_id:
            return rpc_error(405, INVALID_REQUEST, "GET needs an Mcp-Session-Id (2026-07-28 requests have no stream)",
                             {"Allow": "POST"})
        session = self.service.legacy(name, session_id)
        if session is None:
            return rpc_error(404, INVALID_REQUEST, "Session not found: initialize a new session")
        if session.stream_open:
            return rpc_error(409, INVALID_REQUEST, "this session already has an open event stream")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               SESSION_HEADER: session.id})
        await response.prepare(request)
        session.stream_open = True
        try:
            while not session.closed:
                try:
                    message = await asyncio.wait_for(session.stream.get(), HEARTBEAT)
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                await response.write(sse_event(message))
        except ConnectionError:
            pass
        finally:
            session.stream_open = False
        return response

    async def delete(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        session_id = request.headers.get(SESSION_HEADER, "")
        if await self.service.drop(name, session_id):
            return web.Response(status=200)
        return rpc_error(404, INVALID_REQUEST, "Session not found")


class ProxyServer:
    """The loopback listener: token check first, then the handlers."""

    def __init__(self, service: ProxyService, token: str, max_body: int) -> None:
        self.service = service
        self._token = token
        self._max_body = max_body
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self._max_body, middlewares=[self._auth])
        ProxyHandlers(self.service).add_routes(app, "/servers")
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not bearer_ok(request.headers.get("Authorization"), self._token):
            self.service.unauthorized += 1
            return rpc_error(401, INVALID_REQUEST, "missing or wrong bearer token: send 'Authorization: Bearer "
                             "<token>' with the token from the [proxy] token_file",
                             {"WWW-Authenticate": 'Bearer realm="mcp-supervisor proxy"'})
        return await handler(request)

    async def start(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")  # validated as loopback HOST:PORT when the config loaded
        # handler_cancellation: a client that closes its answer stream cancels the call (the 2026 way)
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0,
                                     handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, host.strip("[]"), int(port), reuse_address=True).start()
        addresses: Any = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else int(port)

    async def close(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None
