"""What every request to the control API passes through: who is asking, bounded input, honest errors.

Why a middleware that turns every unexpected exception into a JSON 500: a bad request or a bug in
one route must never take the supervisor down, and a script must always get a parseable answer.
Why bodies are bounded here (size, nesting depth, time to arrive): a request is untrusted input;
``[`` x 1000 must be a 400, not a ``RecursionError`` 500, and a client that never sends its body
must not hold a handler forever. Why JSON answers pass the redactor on the way out: a route (ours
or a plug-in's) that echoes an error text must not leak a token through the socket.
Why a protocol class of our own (``JsonErrorsProtocol``): a request aiohttp cannot even parse (a
bad request line, a header over 8 KB, TLS bytes) never reaches a middleware; aiohttp answers it
itself in plain text, and a script must get the API's JSON error there too.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler

from mcp_supervisor.api.unix_socket import peer_credentials, peer_groups
from mcp_supervisor.health.model import UnknownServer
from mcp_supervisor.logging import get_logger
from mcp_supervisor.redact import REDACTOR

log = get_logger("mcp_supervisor.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY_TIMEOUT = 5.0
"""Seconds a client has to send a request body once its headers arrived."""
MAX_BODY = 1024 * 1024
"""Bytes; a larger body is a 413 (no route takes more than a small JSON object)."""
MAX_JSON_DEPTH = 32
"""Deeper request bodies are refused before parsing; no route takes more than a few levels."""


class ApiError(Exception):
    """A request the API refuses; becomes ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": REDACTOR.text(message)}}, status=status)


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
        return _redacted(await handler(request))
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
        elif exc.status == 413:
            message = f"the request body is larger than {MAX_BODY} bytes"
        response = error_response(exc.status, code, message)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("api handler failed", method=request.method, path=request.path)
        return error_response(500, "internal", "internal error in the supervisor; see its log")


def _redacted(response: web.StreamResponse) -> web.StreamResponse:
    """A JSON answer with every known secret value masked (streams mask their own frames)."""
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return response
    body = response.body
    if not isinstance(body, bytes | bytearray) or not body:
        return response
    text = body.decode("utf-8", "replace")
    scrubbed = REDACTOR.text(text)
    if scrubbed != text:  # re-encode from the data: a masked value must stay valid JSON
        response.body = json.dumps(REDACTOR.payload(json.loads(body))).encode()
    return response


def make_peer_middleware(allowed_uids: Iterable[int], allowed_gids: Iterable[int]) -> Any:
    uids = {0, os.getuid(), *allowed_uids}
    gids = frozenset(allowed_gids)

    @web.middleware
    async def peer_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        creds = peer_credentials(transport.get_extra_info("socket") if transport is not None else None)
        if creds is None:
            log.warning("refused a peer without credentials", path=request.path)
            return error_response(403, "forbidden", "peer credentials unavailable; connect over the Unix socket")
        pid, uid, gid = creds
        if uid not in uids and gid not in gids and not (gids and gids & peer_groups(pid, uid)):
            log.warning("refused a peer", pid=pid, uid=uid, gid=gid, path=request.path)
            return error_response(
                403,
                "forbidden",
                f"uid {uid} is not allowed on this socket; add it to [supervisor] allowed_uids "
                "(or one of its groups to allowed_gids)",
            )
        return await handler(request)

    return peer_middleware


def _depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether brackets nest deeper than ``limit`` outside strings (a linear scan, no recursion)."""
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


async def json_body(request: web.Request) -> dict[str, Any]:
    """The optional JSON object body; an empty body is ``{}``. Every bad body is a 4xx."""
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(408, "timeout", f"the request body did not arrive within {BODY_TIMEOUT:g} s") from None
    if not raw.strip():
        return {}
    if _depth_exceeds(raw, MAX_JSON_DEPTH):
        raise ApiError(400, "bad_json", f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, "bad_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the request body must be a JSON object")
    return body


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log through our logger: debug level, path without its query string."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log.debug("api request", method=request.method, path=request.path, status=response.status,
                  ms=round(time * 1000, 1))

    @property
    def enabled(self) -> bool:
        return True


_PARSE_DETAIL_MAX = 200


class JsonErrorsProtocol(RequestHandler):
    """aiohttp's HTTP/1.1 connection, answering what it cannot parse with the API's JSON error."""

    __slots__ = ()

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it; refuses once a response began
        if status >= 500:
            code, text = ("timeout" if status == 504 else "internal"), "internal error in the supervisor; see its log"
        else:
            detail = " ".join(str(getattr(exc, "message", None) or message or "").split())[:_PARSE_DETAIL_MAX]
            code = _HTTP_CODES.get(status, "bad_request")
            text = "malformed HTTP/1.1 request" + (f": {detail}" if detail else "") + " (send HTTP/1.1 with JSON bodies)"
        response = error_response(status, code, text)
        response.force_close()
        return response
