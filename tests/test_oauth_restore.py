"""An OAuth server's token store: shown without the token, backed up, lost, restored, used again.

The story, against a real authorization server (npm ``oidc-provider``, the OAuth tests' own, with
two-minute tokens here) and an MCP server that checks every token: the daemon holds a token for
``jira``; ``status``, ``status --json`` and the status page (in Chromium when installed) say when it expires and when it is
refreshed next, and none of them (nor the backup listing) carries the token. A backup through
the daemon holds the token store; the daemon stops, ``state_dir/auth`` is deleted, ``restore
--state auth`` puts it back, and the restarted daemon serves ``jira`` with the very token it had
(no new token asked for: same expiry, no renewal). Skipped, saying why, without node/npm.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.live_daemon import cli, daemon_process, http_server, server_status, supervisor_table, wait_for
from tests.oidc_fixture import SECRET, AuthServer, provider_fixture
from tests.servers.fixtures import free_port
from tests.test_status_page import chrome

TTL = 120
"""Long enough that the restarted daemon still finds the restored token inside its 80 % window."""


authority = provider_fixture("authority", TTL)
"""The OAuth tests' authorization server and resource server, issuing TTL-second tokens."""


def _config(tmp_path: Path, server: AuthServer) -> tuple[Path, int]:
    secret = tmp_path / "jira.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    web = free_port()
    auth = (f'auth = {{ type = "oauth", client_id = "mcp-supervisor", client_secret = "${{file:{secret}}}", '
            f'scopes = ["mcp"], issuer = "{server.issuer}" }}')
    config = tmp_path / "mcp-supervisor.toml"
    config.write_text(supervisor_table(tmp_path) + f"""
[backup]
key_file = "{tmp_path}/keys/vault.key"
locations = ["{tmp_path}/backup0"]
[web]
listen = "127.0.0.1:{web}"
""" + http_server("jira", server.resource_port, auth, interval="500ms", timeout="3s"))
    return config, web


def _page_text(web: int) -> str | None:
    """The status page's auth line as Chromium renders it, and the whole page's source."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return None
    driver = chrome()
    try:
        driver.get(f"http://127.0.0.1:{web}/")
        line = "return Array.from(document.querySelectorAll('.server .auth')).map((e) => e.textContent).join()"
        wait_for(lambda: "token until" in driver.execute_script(line), 20, "the page's auth line")
        text = str(driver.execute_script(line))
        assert text.startswith("oauth: token until ") and "next refresh" in text and "client_credentials" in text
        return text + str(driver.page_source)
    finally:
        driver.quit()


def _healthy(sock: Path) -> dict[str, Any]:
    wait_for(lambda: server_status(sock, "jira")["state"] == "healthy", 40, "jira healthy with its token",
             ignore=(OSError, KeyError, StopIteration, AssertionError))
    return server_status(sock, "jira")


def test_token_store_shown_backed_up_restored_and_used_again(authority: AuthServer, tmp_path: Path) -> None:
    server = authority
    config, web = _config(tmp_path, server)
    sock = tmp_path / "ctl.sock"
    token_file = tmp_path / "state" / "auth" / "jira.token"
    with daemon_process(config):
        before = _healthy(sock)["auth"]
        assert before["expires_at"] > time.time() + TTL / 2
        table = cli(sock, "status").stdout
        as_json = cli(sock, "status", "--json").stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/summary", timeout=10) as answer:
            page = answer.read().decode()
        assert "(oauth token until " in table and "next " in table, table
        shown = json.loads(page)["servers"][0]["auth"]
        assert shown["expires_at"] == pytest.approx(before["expires_at"], abs=1) and shown["next_refresh"]
        rendered = _page_text(web)  # what a person sees in a browser (None: no chromium here)
        backup = cli(sock, "--config", str(config), "backup", "--json")  # through the daemon
        assert backup.returncode == 0 and "auth/jira.token" in json.loads(backup.stdout)["files"], backup
        listing = cli(sock, "--config", str(config), "backups", "--json").stdout
    tokens = server.seen_tokens()
    assert tokens
    for token in tokens:  # the token text: in none of the outputs
        for output in (table, as_json, page, backup.stdout, listing, rendered or ""):
            assert token not in output and token.split(".")[2] not in output

    shutil.rmtree(token_file.parent)
    restored = cli(sock, "--config", str(config), "restore", "--state", "auth")
    assert restored.returncode == 0 and "restored jira.token" in restored.stdout, restored.stderr
    assert token_file.stat().st_mode & 0o777 == 0o600

    with daemon_process(config):
        after = _healthy(sock)["auth"]
        # the restored token, not a new one: same expiry, no renewal
        assert after["renewals"] == 0 and after["expires_at"] == pytest.approx(before["expires_at"], abs=0.01), after
    assert server.seen_tokens() == tokens  # the server saw no new token
