"""One redactor for every way out: logs, API and SSE payloads, CLI output, probe messages.

Why one: two redactors with different rules leak through the gap between them (the prober used
to know URL query strings, the log did not). Every secret value the config can hold is collected
here, once: server ``env`` and ``headers`` values (and the bare token after ``Bearer``), URL
userinfo and query values, ``args`` marked in ``secret_args``, fallback headers and URL, the
Slack token, the variable named by ``token_env``, and every ``${file:...}`` value wherever it was
used. ``scrub`` masks those values wherever they occur; logs additionally mask whole values under
keys that look secret (token, authorization, ...), which API payloads must not (``token_env``
names a variable, it is not one).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:
    from mcp_supervisor.config import Config, ServerConfig

MASK = "***"
SECRET_KEY_RE = re.compile(r"(token|authorization|password|passwd|secret|api[_-]?key|cookie|credential)", re.I)
MIN_SECRET_LEN = 6
"""Shorter values ("1", "true") are not worth masking and would garble unrelated text."""


class Redactor:
    """Masks known secret values; ``update()`` swaps the set on reload (also a structlog processor)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._pattern: re.Pattern[str] | None = None
        self._config: set[str] = set()
        self._live: dict[str, frozenset[str]] = {}
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        self._config = set(secrets)
        self._compile()

    def live(self, owner: str, secrets: Iterable[str]) -> None:
        """Secrets that appear at run time (an OAuth owner's current tokens), kept across ``update``
        and replaced per ``owner``: a renewed token replaces the old one."""
        self._live[owner] = frozenset(secrets)
        self._compile()

    def _compile(self) -> None:
        every = self._config.union(*self._live.values())
        values = sorted({s for s in every if len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def text(self, value: str) -> str:
        return self._pattern.sub(MASK, value) if self._pattern is not None else value

    def scrub(self, value: Any, *, by_key: bool = True) -> Any:
        """``value`` with secrets masked; containers are copied, never changed in place."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self._item(str(k), v, by_key) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v, by_key=by_key) for v in value)
        if isinstance(value, BaseException | os.PathLike) or not isinstance(value, int | float | bool | None):
            return self.text(str(value))
        return value

    def payload(self, value: Any) -> Any:
        """For API/SSE/CLI payloads: values only (field names like ``token_env`` stay readable)."""
        return self.scrub(value, by_key=False)

    def _item(self, key: str, value: Any, by_key: bool) -> Any:
        if by_key and SECRET_KEY_RE.search(key) and isinstance(value, str | bytes) and value:
            return MASK
        return self.scrub(value, by_key=by_key)

    def __call__(self, logger: Any, method: str, event_dict: Any) -> Any:
        for key in list(event_dict):
            event_dict[key] = self._item(key, event_dict[key], True)
        return event_dict


def _credential_parts(value: str) -> list[str]:
    """A header value and, for ``Bearer x``/``Basic x``/``Token x``, the bare credential too."""
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() in ("bearer", "basic", "token"):
        return [value, rest.strip()]
    return [value]


def url_secrets(url: str | None) -> list[str]:
    """Userinfo and query values of a URL (raw and percent-decoded), and the whole query."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return []
    found = [x for x in (username, password) if x]
    if parts.query:
        found.append(parts.query)
        found.extend(value for _, value in parse_qsl(parts.query, keep_blank_values=False))
        found.extend(raw.partition("=")[2] for raw in parts.query.split("&") if "=" in raw)
    return [*found, *(unquote(x) for x in found)]


def server_secrets(server: ServerConfig, environ: Mapping[str, str] | None = None) -> set[str]:
    """What one server's config holds that could be a credential."""
    environ = os.environ if environ is None else environ
    found: set[str] = set(server.env.values())
    if server.auth is not None:
        found.update(s for s in (server.auth.client_secret,) if s)
    for value in server.headers.values():
        found.update(_credential_parts(value))
    found.update(url_secrets(server.url))
    found.update(server.args[i] for i in server.secret_args if 0 <= i < len(server.args))
    if server.fallback is not None:
        for value in server.fallback.headers.values():
            found.update(_credential_parts(value))
        found.update(url_secrets(server.fallback.url))
    if server.token_env and environ.get(server.token_env):
        found.update(_credential_parts(environ[server.token_env]))
    return {value for value in found if value}


def collect_secrets(config: Config, environ: Mapping[str, str] | None = None) -> set[str]:
    """Every value in the config that could be a credential."""
    found: set[str] = set(config.file_secrets)
    for server in config.servers:
        found |= server_secrets(server, environ)
    if config.slack.token:
        found.update(_credential_parts(config.slack.token))
    found.update(url_secrets(config.slack.base_url))
    notify = getattr(config, "notify", None)
    if notify is not None and notify.slack is not None:
        for value in (notify.slack.token, notify.slack.webhook_url):
            if value:
                found.update(_credential_parts(value))
                found.update(url_secrets(value))
    if notify is not None and notify.apprise is not None:
        for url in notify.apprise.urls:
            found.add(url)
            found.update(url_secrets(url))
    return found


REDACTOR = Redactor()
"""The process-wide instance: the daemon and the CLI load it from their config."""


class RedactingStream:
    """A text stream that masks known secrets on the way out (the CLI's stdout and stderr)."""

    def __init__(self, stream: Any, redactor: Redactor = REDACTOR) -> None:
        self._stream = stream
        self._redactor = redactor

    def write(self, text: str) -> int:
        self._stream.write(self._redactor.text(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self._stream, name)
