"""Token expiry warnings: from a JWT in the environment or header, or from token_expires."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from mcp_supervisor.config import parse_config
from mcp_supervisor.events import EventBus
from mcp_supervisor.runtime.token_watch import Sent, due_warnings, watch_token_expiry

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
    sent: Sent = set()
    first = due_warnings(config, NOW, sent, environ)  # type: ignore[arg-type]
    assert [(s.name, level) for s, level, _ in first] == [("jira", "1d"), ("gitlab", "7d")]
    jira_message = first[0][2]
    assert "JIRA_TOKEN" in jira_message and "renew" in jira_message and token not in jira_message
    assert due_warnings(config, NOW, sent, environ) == []  # type: ignore[arg-type]
    later = due_warnings(config, NOW + timedelta(days=6), sent, environ)  # type: ignore[arg-type]
    assert [(s.name, level) for s, level, _ in later] == [("jira", "expired"), ("gitlab", "expired")]


def test_a_renewed_token_is_warned_about_again() -> None:
    """Renewing the token (a reload, a new value in the env file) re-arms 7d, 1d and expired."""
    old = {"JIRA_TOKEN": jwt(NOW + timedelta(hours=20))}
    sent: Sent = set()
    first = due_warnings(config_for(old), NOW, sent, old)  # type: ignore[arg-type]
    assert ("jira", "1d") in [(s.name, level) for s, level, _ in first]
    renewed = {"JIRA_TOKEN": jwt(NOW + timedelta(days=30))}
    assert [s.name for s, _, _ in due_warnings(config_for(renewed), NOW, sent, renewed)] == []  # type: ignore[arg-type]
    levels = []
    for days in (24, 29, 31):  # the new token's own week, day and expiry
        for server, level, message in due_warnings(config_for(renewed), NOW + timedelta(days=days), sent, renewed):  # type: ignore[arg-type]
            if server.name == "jira":
                levels.append(level)
                assert renewed["JIRA_TOKEN"] not in message
    assert levels == ["7d", "1d", "expired"]
    assert not any(renewed["JIRA_TOKEN"] in str(key) or old["JIRA_TOKEN"] in str(key) for key in sent)


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
