"""OAuth client credentials against a real authorization server (npm ``oidc-provider``).

The story: a remote MCP server accepts only short-lived access tokens (5 s here, an hour in
life) from an authorization server no one here wrote. The daemon, with nothing but a client id
and a secret file, keeps the server healthy across several token lifetimes (renewing at 80 %, so
no probe ever meets an expired token), keeps the tokens out of its state directory (except
encrypted), its log and its API; and when the client is disabled at the authorization server the
server turns ``needs_human`` naming the fix, without a restart. Skipped, saying why, when node/npm
cannot install ``oidc-provider``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.config.loading import ConfigError, parse_config
from tests.live_daemon import PY, api, cli, daemon_process, http_server, server_status, stop, supervisor_table, wait_for
from tests.servers.fixtures import ROOT, free_port, wait_port_open

PROVIDER_SCRIPT = ROOT / "tests" / "servers" / "oidc_provider.mjs"
RESOURCE_SERVER = ROOT / "tests" / "servers" / "oauth_resource.py"
TTL = 10
"""Seconds an access token lives: renewed at 8 s, the provider's whole-second ``exp`` leaves >= 1 s."""
SECRET = "client-secret-7f3a9c2e"


def test_auth_table_errors_name_the_field_and_the_fix(tmp_path: Path) -> None:
    base = '[supervisor]\nstate_dir = "{d}"\n[[servers]]\nname = "jira"\ntransport = "{t}"\n{where}\nauth = {auth}\n'
    cases = [
        ("http", 'url = "http://127.0.0.1:1/mcp"', '{ type = "oauth", grant = "password", client_id = "a", '
         'client_secret = "b" }', "'device_code'"),
        ("http", 'url = "http://127.0.0.1:1/mcp"', '{ type = "oauth", client_secret = "b" }', "needs client_id"),
        ("http", 'url = "http://127.0.0.1:1/mcp"', '{ type = "oauth", client_id = "a" }', "needs client_secret"),
        ("http", 'url = "http://127.0.0.1:1/mcp"', '{ type = "oauth", grant = "private_key_jwt", client_id = "a" }',
         "needs private_key"),
        ("http", 'url = "http://127.0.0.1:1/mcp"', '{ type = "oauth", client_id = "a", client_secret = "b", '
         'token_url = "auth.example.com/token" }', "not an http(s) URL"),
        ("stdio", 'command = "true"', '{ type = "oauth", client_id = "a", client_secret = "b" }', "http/sse servers"),
    ]
    for transport, where, auth, expected in cases:
        text = base.format(d=tmp_path, t=transport, where=where, auth=auth)
        with pytest.raises(ConfigError) as caught:
            parse_config(text, tmp_path / "c.toml")
        assert "auth" in str(caught.value) and expected in str(caught.value), str(caught.value)


@dataclass
class AuthServer:
    directory: Path
    port: int
    resource_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def resource(self) -> str:
        return f"http://127.0.0.1:{self.resource_port}/mcp"

    def start(self, *extra: str) -> None:
        with open(self.directory / "provider.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["node", str(self.directory / "oidc_provider.mjs"), str(self.port), self.resource, str(TTL), *extra],
                cwd=self.directory, env={"PATH": "/usr/bin:/bin:/usr/local/bin", "OIDC_CLIENT_SECRET": SECRET},
                stdout=log, stderr=log)
        wait_port_open(self.port, 20, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to run oidc-provider (apt-get install nodejs npm)")
    directory = tmp_path_factory.mktemp("oidc")
    installed = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefer-offline", "oidc-provider@9"],
                               cwd=directory, capture_output=True, text=True, timeout=300)
    if installed.returncode != 0:
        pytest.skip(f"npm cannot install oidc-provider: {installed.stderr.strip()[-300:]}")
    shutil.copy(PROVIDER_SCRIPT, directory / "oidc_provider.mjs")
    server = AuthServer(directory, free_port(), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _all_text(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in directory.rglob("*") if path.is_file() and not path.is_symlink())


def test_daemon_keeps_an_oauth_server_healthy_and_says_when_the_client_is_refused(
        auth_server: AuthServer, tmp_path: Path) -> None:
    seen = tmp_path / "tokens-seen"
    with open(tmp_path / "resource.log", "ab") as log:
        resource = subprocess.Popen([PY, str(RESOURCE_SERVER), str(auth_server.resource_port), auth_server.issuer,
                                     str(seen)], stdout=log, stderr=log)
    try:
        wait_port_open(auth_server.resource_port, 30, resource)
        secret_file = tmp_path / "jira.secret"
        secret_file.write_text(SECRET + "\n")
        secret_file.chmod(0o600)
        auth = (f'auth = {{ type = "oauth", grant = "client_credentials", client_id = "mcp-supervisor", '
                f'client_secret = "${{file:{secret_file}}}", scopes = ["mcp"], issuer = "{auth_server.issuer}" }}')
        config = tmp_path / "mcp-supervisor.toml"
        config.write_text(supervisor_table(tmp_path)
                          + http_server("jira", auth_server.resource_port, auth, interval="400ms", timeout="2s",
                                        failure_threshold=1))
        sock = tmp_path / "ctl.sock"
        with daemon_process(config) as daemon:
            wait_for(lambda: daemon.poll() is None and server_status(sock, "jira")["state"] == "healthy", 40,
                     "jira healthy with its first token", ignore=(OSError, KeyError, StopIteration, AssertionError))
            # three and more token lifetimes: every look finds it healthy, never an auth failure
            answers: list[dict[str, Any]] = []
            start = time.monotonic()
            while time.monotonic() - start < 2.5 * TTL:
                answers.append(server_status(sock, "jira"))
                time.sleep(0.25)
            states = {a["state"] for a in answers}
            assert states == {"healthy"}, [(a["state"], a["message"]) for a in answers if a["state"] != "healthy"]
            last = answers[-1]["auth"]
            assert last["type"] == "oauth" and last["failures"] == 0 and last["renewals"] >= 3, last
            assert last["expires_at"] > time.time() and last["next_refresh_at"] < last["expires_at"]
            shown = cli(sock, "status").stdout
            assert "(oauth token until " in shown, shown

            # the token text: nowhere under state_dir (only encrypted), in the log or the API
            tokens = [line for line in seen.read_text().splitlines() if line]
            assert len(tokens) >= 3
            exposed = _all_text(tmp_path / "state") + (tmp_path / "daemon.log").read_bytes()
            _, status_all = api(sock, "/v1/status")
            exposed += json.dumps([status_all, answers]).encode() + shown.encode()
            for token in tokens:
                assert token.encode() not in exposed
                assert token.split(".")[2].encode() not in exposed  # not even the signature part
            assert SECRET.encode() not in exposed
            assert (tmp_path / "state" / "auth" / "jira.token").stat().st_mode & 0o777 == 0o600

            # the client is disabled at the authorization server: needs_human naming the fix, no restart
            auth_server.stop()
            auth_server.start("--without-client")
            wait_for(lambda: server_status(sock, "jira")["state"] == "needs_human", 3 * TTL + 10,
                     "jira needs_human once its client is refused")
            final = server_status(sock, "jira")
            assert final["failure_class"] == "auth"
            assert "invalid_client" in final["hint"] and "supervisorctl-mcp reload" in final["hint"], final
            assert final["restarts"] in (0, None) and final["auth"]["problem"] == final["hint"]
    finally:
        stop(resource)
