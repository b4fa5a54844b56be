"""structlog setup: a console renderer on a terminal, JSON lines otherwise (journald, files).

Why stdlib records go through structlog's ``ProcessorFormatter``: aiohttp, the MCP SDK and asyncio
log through the stdlib; with ``log_format = "json"`` each of their lines (tracebacks included, as
an ``exception`` field) must be one JSON object, so ``journalctl -o cat | jq`` never chokes, and
must pass the same redactor as our own lines (``mcp_supervisor.redact``).

Why the SDK's client tracebacks are cut to one line: the SDK logs a full traceback for every
connection a probe loses (a killed SSE server: 60 lines per probe); the probe result already says
what happened, so the log keeps the exception's type and message only. A malformed request
(a header over 8 KB) is the client's error, not ours: aiohttp's traceback for it becomes one
warning line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog

from mcp_supervisor.redact import MASK, REDACTOR, Redactor, collect_secrets

__all__ = ["MASK", "REDACTOR", "Redactor", "collect_secrets", "get_logger", "setup_logging"]

QUIET_TRACEBACK_LOGGERS = ("mcp.client", "mcp.shared")
"""Loggers whose tracebacks are reduced to ``type: message`` (the probe result has the story)."""


def _renderer(fmt: str, stream: TextIO) -> Any:
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    return structlog.dev.ConsoleRenderer(colors=True) if use_console else structlog.processors.JSONRenderer()


def setup_logging(
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> Redactor:
    """Configure structlog, and route the stdlib's records through the same renderer and redactor."""
    stream = sys.stderr if stream is None else stream
    REDACTOR.update(secrets)
    renderer = _renderer(fmt, stream)
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            REDACTOR,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            REDACTOR,
            renderer,
        ],
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_mcp_supervisor", False)]:
        root.removeHandler(old)  # a second setup (tests, the CLI) replaces, never doubles, the handler
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(_QuietTracebacks())
    handler._mcp_supervisor = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
    return REDACTOR


def _client_error(exc: BaseException) -> bool:
    from aiohttp.http_exceptions import HttpProcessingError

    return isinstance(exc, HttpProcessingError)


class _QuietTracebacks(logging.Filter):
    """SDK client tracebacks and aiohttp's traces of malformed requests become one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        if record.name.startswith(QUIET_TRACEBACK_LOGGERS) or (
            record.name == "aiohttp.server" and _client_error(exc)
        ):
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {_one_line(exc)}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            if record.name == "aiohttp.server":
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(f"{type(e).__name__}: {_one_line(e)}" for e in exc.exceptions[:3])
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split())[:300]


def get_logger(name: str = "mcp_supervisor") -> Any:
    return structlog.get_logger(name)
