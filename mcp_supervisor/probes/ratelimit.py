"""Recognise "too many requests" in what a probe saw: pure functions, no I/O.

Why apart from ``classify.py``: the shapes are many (HTTP 429 with or without ``Retry-After`` in
seconds or as a date; a JSON-RPC error whose code or text says rate limit; a tool result that does)
and each needs the server's own words and its wait, so ``status`` can say "rate limited until
09:04:10: <what the server said>". Classifying it as its own class keeps a 429 from counting as
a failure (``health/ratelimit.py`` holds the probes back instead).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

from mcp.shared.exceptions import MCPError

from mcp_supervisor.health.ratelimit import rate_limit_wait

_WORDS = re.compile(r"rate[ _-]?limit|too many requests|quota exceeded|throttl", re.IGNORECASE)
RATE_LIMIT_CODES = frozenset({429, -32029})
"""JSON-RPC error codes servers use for a rate limit (HTTP's own number; a common custom one)."""
_MAX_WORDS = 160


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def says_rate_limited(text: str) -> bool:
    """The usual words of a rate-limit message (a tool result, an error text)."""
    return bool(_WORDS.search(text))


def _words(body: str) -> str:
    """The server's own words from a 429 body: a JSON-RPC/JSON error message, else the text."""
    try:
        decoded: Any = json.loads(body)
    except ValueError:
        decoded = None
    if isinstance(decoded, Mapping):
        error = decoded.get("error")
        for candidate in (error.get("message") if isinstance(error, Mapping) else error, decoded.get("message")):
            if isinstance(candidate, str) and candidate.strip():
                return _short(candidate)
    return _short(body)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_WORDS else text[: _MAX_WORDS - 1] + "…"


def _data_wait(data: Any) -> float | None:
    if isinstance(data, Mapping):
        for key in ("retryAfter", "retry_after", "retry_after_seconds"):
            value = data.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return None


def rate_limit_verdict(
    errors: Sequence[BaseException], statuses: Sequence[int], limits: Sequence[tuple[str | None, str]]
) -> tuple[str, float | None] | None:
    """(the server's words, its wait) when a probe saw a 429 (``statuses``, and ``limits``: each
    429's ``Retry-After`` and body start) or a rate-limit JSON-RPC error; else None."""
    if limits or 429 in statuses:
        header, body = limits[-1] if limits else (None, "")
        return (_words(body) if body.strip() else "HTTP 429 Too Many Requests"), parse_retry_after(header)
    for err in errors:
        if isinstance(err, MCPError) and (err.code in RATE_LIMIT_CODES or says_rate_limited(err.message)):
            return _short(err.message) or f"JSON-RPC error {err.code}", _data_wait(getattr(err, "data", None))
    return None


def limited_text(words: str, retry_after: float | None, probe_interval: float, now: float | None = None) -> str:
    """``rate limited until 09:04:10: <the server's words>`` (local time of the next probe)."""
    wait = rate_limit_wait(retry_after, probe_interval)
    until = time.strftime("%H:%M:%S", time.localtime((time.time() if now is None else now) + wait))
    said = "" if retry_after is not None else " (no Retry-After)"
    return f"rate limited until {until}{said}: {words}"
