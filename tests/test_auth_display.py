"""What ``status``, the dashboard and the status page say about an OAuth server's token.

What a person notices: per server the auth type and grant, when the access token expires, when it
was last refreshed and will be next, and when the refresh token ends if that is known; never the
token. The facts come from a real token owner holding a real (stored, encrypted) token, through
``auth.registry.auth_status``, the one source, into each output's own rendering code; the owner's
status entry growing a key that carries a token must not change that.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.auth import OAuthToken

from mcp_supervisor.auth import registry
from mcp_supervisor.auth.owner import TokenOwner
from mcp_supervisor.auth.store import EncryptedTokenStorage
from mcp_supervisor.cli.render import auth_text, status_table
from mcp_supervisor.config import parse_config
from mcp_supervisor.health.auth_view import auth_facts
from mcp_supervisor.redact import REDACTOR
from mcp_supervisor.web.summary import build_summary

ACCESS = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJqaXJhIn0.c2lnbmF0dXJlLXRleHQ"
REFRESH = "refresh-3b8e1f0c"


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[TokenOwner]:
    """A token owner that loaded a stored token, as the daemon's does at start."""
    config = parse_config(f"""
[supervisor]
state_dir = "{tmp_path}/state"
[[servers]]
name = "jira"
transport = "http"
url = "http://127.0.0.1:9/mcp"
auth = {{ type = "oauth", grant = "client_credentials", client_id = "mcp-supervisor", client_secret = "s3cret-x" }}
""", tmp_path / "c.toml")
    server = config.server("jira")
    storage = EncryptedTokenStorage(tmp_path / "state", "jira", os.urandom(32))
    asyncio.run(storage.set_tokens(OAuthToken(access_token=ACCESS, refresh_token=REFRESH, expires_in=3600)))
    storage.update(refresh_expires_at=time.time() + 30 * 86400)  # the authorization server said when it ends
    owner = TokenOwner(server, storage)
    assert owner.adopt(storage.read())  # what the owner does with the stored record at start
    assert owner.bearer == ACCESS  # it holds the token: the outputs below must not show it
    registry.register("jira", owner)
    try:
        yield owner
    finally:
        registry.unregister("jira", owner)


def _status(auth: dict[str, Any] | None) -> dict[str, Any]:
    return {"ready": True, "servers": [{"name": "jira", "state": "healthy", "since": time.time() - 60,
                                        "latency_ms": 8.0, "critical": True, "message": "", "auth": auth}]}


def _no_token(text: str) -> None:
    for secret in (ACCESS, REFRESH, ACCESS.split(".")[2], "s3cret-x"):
        assert secret not in text


def test_every_output_shows_the_tokens_times_and_never_the_token(owner: TokenOwner,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    entry = registry.auth_status("jira")
    assert entry is not None
    expires = owner.facts.expires_at
    assert expires is not None and expires > time.time() + 3000
    status = _status(entry)
    # the CLI table (and status --json is the entry itself)
    table = status_table(status)
    assert "(oauth token until " in table and "next " in table and "grant client_credentials" in table, table
    assert "refreshed " in table and "refresh token until " in table
    _no_token(table + json.dumps(status))
    # the dashboard's message cell (the same words)
    cell = auth_text(entry)
    assert cell.startswith("(oauth token until ") and cell in table
    # the status page's document: times as numbers, no problem text (it names commands)
    page = build_summary(status, title="t", now=time.time(), scrub=REDACTOR.scrub)
    shown = page["servers"][0]["auth"]
    assert shown["expires_at"] == pytest.approx(expires, abs=1) and shown["grant"] == "client_credentials"
    assert shown["next_refresh"] < shown["expires_at"] and "problem" not in shown
    _no_token(json.dumps(page))


def test_keys_a_newer_owner_adds_are_shown_and_a_token_among_them_is_not() -> None:
    now = time.time()
    entry = {"type": "oauth", "grant": "authorization_code", "expires_at": now + 600, "last_refresh": now - 60,
             "next_refresh": now + 420, "refresh_expires_at": now + 30 * 86400,
             "access_token": ACCESS, "refresh_token": REFRESH, "debug": {"token": ACCESS}}
    facts = auth_facts(entry)
    assert facts is not None and set(facts) == {"type", "grant", "expires_at", "last_refresh", "next_refresh",
                                                "refresh_expires_at", "problem"}
    text = auth_text(entry, now)
    assert "refresh token until " in text and "grant authorization_code" in text, text
    page = build_summary(_status(entry), title="t", now=now, scrub=REDACTOR.scrub)
    assert page["servers"][0]["auth"]["refresh_expires_at"] == pytest.approx(now + 30 * 86400)
    _no_token(text + json.dumps(page))
    # a grant or type that is not a plain word is not shown (it could be anything)
    assert auth_facts({"type": ACCESS, "grant": "a b"}) == {**dict.fromkeys(facts), "type": "oauth"}
    assert auth_text({}, now) == "(oauth no token)"
