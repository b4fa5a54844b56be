"""Rate limits as the proxy meets them (pure): which answer says "too many requests", for how long,
and what the client is told when a call cannot wait for it.

Why apart from the core: a 429 is an answer, not an outage (issue 21), so the proxy holds a call
that is safe to repeat until the limit lifts (within ``proxy.hold``) instead of passing the error
on; the shapes of such an answer and the sentence for the client are this module's, the core only
decides whose call waits.
"""

from __future__ import annotations

import time
from typing import Any

from mcp_supervisor.proxy.wire import Message, RequestId, error

RATE_LIMITED = -32029
"""The JSON-RPC code of a rate limit the proxy could not wait out (the code probes recognise)."""
LIMIT_CODES = frozenset({429, RATE_LIMITED})
DEFAULT_WAIT = 1.0
"""Seconds a call waits after a 429 without ``Retry-After`` before it is sent again."""


def limit_answer(status: int, body_error: dict[str, Any] | None, retry_after: float | None) -> dict[str, Any]:
    """The JSON-RPC error body a link makes of an HTTP 429: the server's words, the status and its wait."""
    words = body_error.get("message") if isinstance(body_error, dict) else None
    data: dict[str, Any] = {"status": status}
    if retry_after is not None:
        data["retryAfter"] = retry_after
    return {"code": RATE_LIMITED, "message": words if isinstance(words, str) and words else
            "HTTP 429 Too Many Requests", "data": data}


def limit_of(answer: Message) -> tuple[str, float | None] | None:
    """(the server's words, its wait in seconds or None) when ``answer`` says "rate limited"."""
    body = answer.get("error")
    if not isinstance(body, dict):
        return None
    data = body.get("data")
    status = data.get("status") if isinstance(data, dict) else None
    if body.get("code") not in LIMIT_CODES and status != 429:
        return None
    wait = None
    if isinstance(data, dict):
        for key in ("retryAfter", "retry_after"):
            value = data.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                wait = float(value)
                break
    words = body.get("message")
    return (words if isinstance(words, str) and words else "rate limited"), wait


def limited_error(request_id: RequestId | None, server: str, what: str, words: str, wait: float,
                  now_wall: float, why: str) -> Message:
    """The honest answer to a call that cannot wait for the limit: the server's words and when it
    lifts (``wait`` seconds after ``now_wall``); ``why`` says why the proxy did not wait."""
    until = now_wall + wait
    clock = time.strftime("%H:%M:%S", time.localtime(until))
    text = f"{what} on server {server!r}: rate limited until {clock} ({why}): {words}"
    return error(request_id, RATE_LIMITED, text, {"server": server, "until": round(until, 3),
                                                  "retryAfter": round(wait, 3)})
