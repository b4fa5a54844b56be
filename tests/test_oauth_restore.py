"""An OAuth server's token store: shown without the token, backed up, lost, restored, used again.

The story, against a real authorization server (npm ``oidc-provider``, the OAuth tests' own, with
two-minute tokens here) and an MCP server that checks every token: the daemon holds a token for
``jira``; ``status``, ``status --json`` and the status page say when it expires and when it is
refreshed next, and none of them (nor the backup listing) carries the token. A backup through
the daemon holds the token store; the daemon stops, ``state_dir/auth`` is deleted, ``restore
--state auth`` puts it back, and the restarted daemon serves ``jira`` with the very token it had
(no new token asked for: same expiry, no renewal). Skipped, saying why, without node/npm.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.oidc_fixture as oauth_fixture  # the OAuth tests' authorization server
from tests.live_daemon import PY, cli, daemon_process, http_server, server_status, stop, supervisor_table, wait_for
from tests.servers.fixtures import free_port, wait_port_open

TTL = 120
"""Long enough that the restarted daemon still finds the restored token inside its 80 % window."""


def install_provider(directory: Path) -> str | None:
    """``oidc-provider`` and the OAuth tests' provider script into ``directory`` (also for
    ``bench/bench_oauth.py``); the reason when npm cannot install it."""
    installed = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefer-offline", "oidc-provider@9"],
                               cwd=directory, capture_output=True, text=True, timeout=300)
    if installed.returncode != 0:
        return f"npm cannot install oidc-provider: {installed.stderr.strip()[-300:]}"
    shutil.copy(oauth_fixture.PROVIDER_SCRIPT, directory / "oidc_provider.mjs")
    return None


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """The OAuth tests' authorization server (their ``AuthServer``), issuing TTL-second tokens,
    and the SDK resource server in front of it, writing the tokens it accepts to a file."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to run oidc-provider (apt-get install nodejs npm)")
    directory = tmp_path_factory.mktemp("oidc")
    problem = install_provider(directory)
    if problem:
        pytest.skip(problem)
    server = oauth_fixture.AuthServer(directory, free_port(), free_port())
    with pytest.MonkeyPatch.context() as patch:  # AuthServer.start passes the module's TTL on
        patch.setattr(oauth_fixture, "TTL", TTL)
        server.start()
    seen = directory / "tokens-seen"
    with open(directory / "resource.log", "ab") as log:
        resource = subprocess.Popen([PY, str(oauth_fixture.RESOURCE_SERVER), str(server.resource_port), server.issuer,
                                     str(seen)], stdout=log, stderr=log)
    try:
        wait_port_open(server.resource_port, 30, resource)
        yield server, seen
    finally:
        stop(resource)
        server.stop()


def _config(tmp_path: Path, server: Any) -> tuple[Path, int]:
    secret = tmp_path / "jira.secret"
    secret.write_text(oauth_fixture.SECRET + "\n")
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


def _healthy(sock: Path) -> dict[str, Any]:
    wait_for(lambda: server_status(sock, "jira")["state"] == "healthy", 40, "jira healthy with its token",
             ignore=(OSError, KeyError, StopIteration, AssertionError))
    return server_status(sock, "jira")


def test_token_store_shown_backed_up_restored_and_used_again(authority: tuple[Any, Path], tmp_path: Path) -> None:
    server, seen = authority
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
        backup = cli(sock, "--config", str(config), "backup", "--json")  # through the daemon
        assert backup.returncode == 0 and "auth/jira.token" in json.loads(backup.stdout)["files"], backup
        listing = cli(sock, "--config", str(config), "backups", "--json").stdout
    tokens = [line for line in seen.read_text().splitlines() if line]
    assert tokens
    for token in tokens:  # the token text: in none of the outputs
        for output in (table, as_json, page, backup.stdout, listing):
            assert token not in output and token.split(".")[2] not in output

    shutil.rmtree(token_file.parent)
    restored = cli(sock, "--config", str(config), "restore", "--state", "auth")
    assert restored.returncode == 0 and "restored jira.token" in restored.stdout, restored.stderr
    assert token_file.stat().st_mode & 0o777 == 0o600

    with daemon_process(config):
        after = _healthy(sock)["auth"]
        # the restored token, not a new one: same expiry, no renewal
        assert after["renewals"] == 0 and after["expires_at"] == pytest.approx(before["expires_at"], abs=0.01), after
    assert [line for line in seen.read_text().splitlines() if line] == tokens  # the server saw no new token
