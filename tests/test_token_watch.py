"""Token expiry warnings: from a JWT in the environment or header, or from token_expires."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from mcp_supervisor.config import parse_config
from mcp_supervisor.events import EventBus
from mcp_supervisor.health.tokens import ExpiryWarning
from mcp_supervisor.runtime.token_watch import due_warnings, watch_token_expiry

NOW = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)


def jwt(expires: datetime) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part({'exp': int(expires.timestamp()), 'sub': 'bot'})}.c2ln"


def config_for(environ: dict[str, str]) -> object:
    return parse_config(
        """
[[servers]]
name = "jira"
transport = "http"
url = "http://127.0.0.1:1/mcp"
token_env = "JIRA_TOKEN"
headers = { Authorization = "Bearer ${JIRA_TOKEN}" }
[[servers]]
name = "gitlab"
transport = "http"
url = "http://127.0.0.1:2/mcp"
token_expires = 2026-11-30
[[servers]]
name = "sheets"
transport = "http"
url = "http://127.0.0.1:3/mcp"
headers = { Authorization = "Bearer not-a-jwt" }
""",
        environ=environ,
    )


def test_each_level_is_warned_once_naming_the_variable_never_the_token() -> None:
    token = jwt(NOW + timedelta(hours=20))
    environ = {"JIRA_TOKEN": token}
    config = config_for(environ)
    sent: set[tuple[str, ExpiryWarning]] = set()
    first = due_warnings(config, NOW, sent, environ)  # type: ignore[arg-type]
    assert [(s.name, level) for s, level, _ in first] == [("jira", "1d"), ("gitlab", "7d")]
    jira_message = first[0][2]
    assert "JIRA_TOKEN" in jira_message and "renew" in jira_message and token not in jira_message
    assert due_warnings(config, NOW, sent, environ) == []  # type: ignore[arg-type]
    later = due_warnings(config, NOW + timedelta(days=6), sent, environ)  # type: ignore[arg-type]
    assert [(s.name, level) for s, level, _ in later] == [("jira", "expired"), ("gitlab", "expired")]


async def test_the_watcher_publishes_notify_events(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"JIRA_TOKEN": jwt(datetime.now(UTC) + timedelta(days=3))}
    config = config_for(environ)
    bus = EventBus()
    monkeypatch.setenv("JIRA_TOKEN", environ["JIRA_TOKEN"])
    with bus.subscription() as queue:
        task = asyncio.create_task(watch_token_expiry(lambda: config, bus, interval=3600))  # type: ignore[arg-type,return-value]
        event = await asyncio.wait_for(queue.get(), 5)
        task.cancel()
    assert event.kind == "notify" and event.data["notify"] == "token_expiry" and event.server == "jira"
    assert event.data["level"] == "7d"
