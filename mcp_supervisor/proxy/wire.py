"""JSON-RPC and server-sent-event helpers of the proxy (pure: no I/O).

Why hand-rolled and not the SDK's pydantic models: the proxy forwards messages it does not need to
understand, byte for byte in meaning; validating every field would refuse extensions the client
and the server agree on, and would cost most of the proxy's latency budget.
"""

from __future__ import annotations

import json
from typing import Any

from mcp_supervisor.sse import SseParser

Message = dict[str, Any]
RequestId = str | int

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INTERNAL_ERROR = -32603
BACKEND_UNAVAILABLE = -32001
"""The server did not come back within ``proxy.hold``; the message names its state and reason."""
NOT_RETRIED = -32002
"""An unsafe call was in flight when the backend restarted; it was not sent again."""
UNKNOWN_SERVER = -32003
MODERN_VERSIONS = frozenset({"2026-07-28"})
MAX_MESSAGE = 16 * 1024 * 1024
SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"


class BadMessage(ValueError):
    """The body is not one JSON-RPC 2.0 message; ``code`` is the JSON-RPC error to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_message(body: bytes) -> Message:
    """One JSON-RPC 2.0 request, notification or response, or :class:`BadMessage`."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMessage(PARSE_ERROR, f"the body is not JSON: {exc}") from None
    if isinstance(data, list):
        raise BadMessage(INVALID_REQUEST, "JSON-RPC batches are not supported; send one message per request")
    if not isinstance(data, dict) or data.get("jsonrpc") != "2.0":
        raise BadMessage(INVALID_REQUEST, 'not a JSON-RPC 2.0 message (an object with "jsonrpc": "2.0")')
    method = data.get("method")
    if method is not None and not isinstance(method, str):
        raise BadMessage(INVALID_REQUEST, '"method" must be a string')
    if ("id" in data and not isinstance(data["id"], str | int)) or isinstance(data.get("id"), bool):
        raise BadMessage(INVALID_REQUEST, '"id" must be a string or an integer')
    if method is None and "id" not in data:
        raise BadMessage(INVALID_REQUEST, 'a message needs a "method" or an "id"')
    if method is None and "result" not in data and "error" not in data:
        raise BadMessage(INVALID_REQUEST, 'a response needs a "result" or an "error"')
    return data


def is_request(message: Message) -> bool:
    return "method" in message and "id" in message


def is_notification(message: Message) -> bool:
    return "method" in message and "id" not in message


def is_response(message: Message) -> bool:
    return "method" not in message and "id" in message


def error(request_id: RequestId | None, code: int, text: str, data: Any = None) -> Message:
    body: dict[str, Any] = {"code": code, "message": text}
    if data is not None:
        body["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": body}


def with_id(message: Message, new_id: RequestId | None) -> Message:
    return {**message, "id": new_id}


def call_label(message: Message) -> str:
    """``tools/call 'charge'`` or the method: how an error names the call."""
    params = message.get("params")
    tool = params.get("name") if isinstance(params, dict) and message.get("method") == "tools/call" else None
    return f"tools/call {tool!r}" if isinstance(tool, str) else str(message.get("method"))


def not_retried(request_id: RequestId | None, server: str, message: Message) -> Message:
    """The honest error for an unsafe call in flight when the backend restarted."""
    params = message.get("params")
    tool = params.get("name") if isinstance(params, dict) else None
    text = (f"{call_label(message)} on server {server!r}: backend restarted during the call; not retried "
            "because it may have taken effect")
    return error(request_id, NOT_RETRIED, text, {"server": server, "tool": tool, "retried": False})


def progress_token(message: Message) -> Any:
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return meta.get("progressToken") if isinstance(meta, dict) else None


def modern_version(message: Message, header: str | None) -> str | None:
    """The 2026-era protocol version a stateless request declares (header or ``_meta``), if any."""
    if header in MODERN_VERSIONS:
        return header
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get("io.modelcontextprotocol/protocolVersion") if isinstance(meta, dict) else None
    return version if version in MODERN_VERSIONS else None


def sse_event(message: Message) -> bytes:
    from mcp_supervisor.sse import frame

    return frame(json.dumps(message, separators=(",", ":")), event="message")


def sse_parser() -> SseParser:
    """The one SSE reader (``mcp_supervisor.sse``), with room for MCP messages of up to 16 MiB."""
    return SseParser(max_line=MAX_MESSAGE)
