"""The warm check of a kept-open Streamable-HTTP connection: one raw JSON-RPC POST over aiohttp.

Why not the SDK session: a request through the SDK's client stack (pydantic models, anyio memory
streams, a dispatcher task, httpx2 with event hooks) cost 2.2-2.9 ms of daemon CPU per probe at 200
servers; the same exchange as a prebuilt POST on aiohttp's C-accelerated parser costs well under
1 ms. The SDK still does everything that needs it: the handshake that negotiates the era, cold
probes, ``tools/list`` and every failure. Any answer on this path but a good one or a timeout
makes the prober drop the connection and reconnect through the SDK, whose errors are classified
(auth, refused, protocol, expired session) exactly as before; so this module never classifies.

Pure parts (``build_request``, ``check_answer``) are separate from the one I/O function (``send``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp_supervisor import __version__, sse

if TYPE_CHECKING:
    import aiohttp

PROTOCOL_VERSION_META_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_INFO_META_KEY = "io.modelcontextprotocol/clientInfo"
CLIENT_CAPABILITIES_META_KEY = "io.modelcontextprotocol/clientCapabilities"
"""The 2026-07-28 request envelope: servers answer -32602 without protocol version and capabilities."""

_REQUEST_ID = 1
_CLIENT_INFO = {"name": "mcp-supervisor", "version": __version__}
_MAX_ANSWER_BYTES = 1 << 20
_DRAIN_GRACE = 0.25


class LightFailure(Exception):
    """The light request did not get a good answer; the caller reconnects through the SDK."""


@dataclass(frozen=True)
class LightRequest:
    """A prebuilt request: the same bytes are posted on every warm check of one connection."""

    url: str
    body: bytes
    headers: Mapping[str, str]
    method: str


def build_request(
    url: str,
    *,
    legacy: bool,
    protocol_version: str,
    session_id: str | None,
    headers: Mapping[str, str],
) -> LightRequest:
    """The lightest request of the connection's era.

    2026-07-28 (no handshake, no session): ``server/discover`` with the ``_meta`` envelope and the
    ``MCP-Protocol-Version`` and ``Mcp-Method`` headers (without the latter the server answers
    400 / -32020). Handshake era (2025-xx): ``ping`` on the session the handshake opened
    (``Mcp-Session-Id``), which also proves the session is still known to the server.
    """
    out = {str(k): str(v) for k, v in headers.items()}  # the server's configured headers (tokens)
    out["Accept"] = "application/json, text/event-stream"
    out["Content-Type"] = "application/json"
    out["MCP-Protocol-Version"] = protocol_version
    message: dict[str, Any]
    if legacy:
        method = "ping"
        message = {"jsonrpc": "2.0", "id": _REQUEST_ID, "method": method}
        if session_id:
            out["Mcp-Session-Id"] = session_id
    else:
        method = "server/discover"
        meta = {
            PROTOCOL_VERSION_META_KEY: protocol_version,
            CLIENT_INFO_META_KEY: _CLIENT_INFO,
            CLIENT_CAPABILITIES_META_KEY: {},
        }
        message = {"jsonrpc": "2.0", "id": _REQUEST_ID, "method": method, "params": {"_meta": meta}}
        out["Mcp-Method"] = method
    body = json.dumps(message, separators=(",", ":")).encode()
    return LightRequest(url=url, body=body, headers=out, method=method)


def _verdict_of(message: Any) -> bool:
    """True when ``message`` is the good answer to our request; raise when it is an error answer."""
    if not isinstance(message, dict) or message.get("id") != _REQUEST_ID:
        return False  # a notification or someone else's message: keep looking
    if "result" in message:
        return True
    error = message.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    raise LightFailure(f"JSON-RPC error {code}")


def check_answer(status: int, content_type: str, payload: bytes) -> None:
    """Raise ``LightFailure`` unless the reply (JSON, or a whole SSE body) answers our request."""
    if status != 200:
        raise LightFailure(f"HTTP {status}")
    try:
        if content_type.startswith("text/event-stream"):
            for event in sse.parse([payload, b"\n\n"]):  # a last event without its blank line counts
                if _verdict_of(json.loads(event.data)):
                    return
        else:
            decoded = json.loads(payload)
            for message in decoded if isinstance(decoded, list) else [decoded]:
                if _verdict_of(message):
                    return
    except ValueError as exc:
        raise LightFailure(f"reply is not JSON ({type(exc).__name__})") from None
    raise LightFailure("no answer to the request in the reply")


def _answers(event: sse.SseEvent) -> bool:
    try:
        return _verdict_of(json.loads(event.data))
    except ValueError as exc:
        raise LightFailure(f"reply is not JSON ({type(exc).__name__})") from None


async def _read_event_stream(response: aiohttp.ClientResponse) -> None:
    """Read SSE events until the answer to our request; a server may keep the stream open."""
    parser = sse.SseParser()
    seen = 0
    async for chunk in response.content.iter_any():
        seen += len(chunk)
        if seen > _MAX_ANSWER_BYTES:
            raise LightFailure("reply too large")
        if any(_answers(event) for event in parser.feed(chunk)):
            return
    if not any(_answers(event) for event in parser.feed(b"\n\n")):  # a last event without its blank line
        raise LightFailure("no answer to the request in the reply")


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read the end of an SSE answer so its connection goes back to the pool.

    SDK servers end the stream right after the answer; a connection left with unread bytes is
    closed instead, and the next check pays a new TCP connection (most of its cost, measured).
    A server that keeps the stream open gets a short grace, then the connection is dropped.
    """
    if response.content.at_eof():
        return
    try:
        async with asyncio.timeout(_DRAIN_GRACE):
            while await response.content.readany():
                pass
    except TimeoutError:
        pass


async def send(session: aiohttp.ClientSession, request: LightRequest) -> None:
    """Post the request and check the answer; the caller bounds the time it may take.

    A kept-alive connection the server closed just as the request went out fails with
    ``ServerDisconnectedError``; one retry on a new connection tells that race from a server
    that went away.
    """
    import aiohttp

    for attempt in (1, 2):
        try:
            async with session.post(request.url, data=request.body, headers=request.headers) as response:
                content_type = response.headers.get("Content-Type", "")
                if response.status == 200 and content_type.startswith("text/event-stream"):
                    await _read_event_stream(response)
                    await _drain(response)
                    return
                length = response.content_length
                if length is not None and length > _MAX_ANSWER_BYTES:
                    raise LightFailure("reply too large")
                check_answer(response.status, content_type, await response.read())
                return
        except aiohttp.ServerDisconnectedError:
            if attempt == 2:
                raise
