"""structlog setup: a console renderer on a terminal, JSON lines otherwise (journald, files).

Why redaction lives here: a token must never reach a log line, whatever code logged it. The
processor masks every known secret value (collected from the config: server env and header values,
fallback header values, the Slack token, bearer tokens named by ``token_env``) wherever it occurs
in an event, and masks whole values under keys that look secret (token, authorization, ...).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from mcp_supervisor.config import Config

MASK = "***"
_SECRET_KEY_RE = re.compile(r"(token|authorization|password|passwd|secret|api[_-]?key|cookie|credential)", re.I)
_MIN_SECRET_LEN = 6
"""Shorter values ("1", "true") are not worth masking and would garble unrelated text."""


class Redactor:
    """A structlog processor; ``update()`` swaps the secret set on reload."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._pattern: re.Pattern[str] | None = None
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        values = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._pattern.sub(MASK, value) if self._pattern is not None else value
        if isinstance(value, dict):
            return {k: self._scrub_item(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v) for v in value)
        if isinstance(value, BaseException | os.PathLike) or not isinstance(value, int | float | bool | None):
            return self.scrub(str(value))
        return value

    def _scrub_item(self, key: str, value: Any) -> Any:
        if _SECRET_KEY_RE.search(key) and isinstance(value, str | bytes) and value:
            return MASK
        return self.scrub(value)

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = self._scrub_item(key, event_dict[key])
        return event_dict


def collect_secrets(config: Config, environ: MutableMapping[str, str] | None = None) -> set[str]:
    """Every value in the config that could be a credential."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()

    def add(value: str | None) -> None:
        if not value:
            return
        found.add(value)
        scheme, _, rest = value.partition(" ")
        if rest and scheme.lower() in ("bearer", "basic", "token"):
            found.add(rest.strip())

    for server in config.servers:
        for value in server.env.values():
            add(value)
        for value in server.headers.values():
            add(value)
        if server.fallback is not None:
            for value in server.fallback.headers.values():
                add(value)
        if server.token_env:
            add(environ.get(server.token_env))
    add(config.slack.token)
    if config.notify.slack is not None:
        add(config.notify.slack.token)
        add(config.notify.slack.webhook_url)
    if config.notify.apprise is not None:
        for url in config.notify.apprise.urls:
            add(url)
    return found


REDACTOR = Redactor()


def setup_logging(
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> Redactor:
    """Configure structlog (and route the stdlib's warnings through the same stream)."""
    stream = sys.stderr if stream is None else stream
    REDACTOR.update(secrets)
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer(colors=True) if use_console else structlog.processors.JSONRenderer()
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            REDACTOR,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    if not any(getattr(h, "_mcp_supervisor", False) for h in root.handlers):
        handler = logging.StreamHandler(stream)
        handler.addFilter(_StdlibRedactFilter())
        handler._mcp_supervisor = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
    return REDACTOR


class _StdlibRedactFilter(logging.Filter):
    """Third-party libraries log through the stdlib; their messages get the same scrubbing."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = REDACTOR.scrub(record.getMessage())
        record.args = None
        return True


def get_logger(name: str = "mcp_supervisor") -> Any:
    return structlog.get_logger(name)
