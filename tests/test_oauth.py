"""OAuth machine grants against a real authorization server (npm ``oidc-provider``).

The story: a remote MCP server accepts only short-lived access tokens (10 s here, an hour in
life) from an authorization server no one here wrote. The daemon, with nothing but a client id
and a secret file (``client_credentials``) or a signing key (``private_key_jwt``), keeps the servers healthy across several token lifetimes (renewing at 80 %, so
no probe ever meets an expired token), keeps the tokens out of its state directory (except
encrypted), its log and its API; and when the client is disabled at the authorization server the
server turns ``needs_human`` naming the fix, without a restart. Skipped, saying why, when node/npm
cannot install ``oidc-provider``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.config.loading import ConfigError, parse_config
from tests.live_daemon import api, cli, daemon_process, http_server, server_status, supervisor_table, wait_for
from tests.oidc_fixture import SECRET, TTL, AuthServer, auth_server, exposed_text

__all__ = ["auth_server"]  # the module's provider fixture


def test_auth_table_errors_name_the_field_and_the_fix(tmp_path: Path) -> None:
    base = '[supervisor]\nstate_dir = "{d}"\n[[servers]]\nname = "jira"\ntransport = "{t}"\n{where}\nauth = {auth}\n'
    cases = [
        ("http", 'url = "http://127.0.0.1:1/mcp"', '{ type = "oauth", grant = "password", client_id = "a", '
         'client_secret = "b" }', "'device_code'"),
        ("http", 'url = "http://127.0.0.1:1/mcp"', '{ type = "oauth", client_secret = "b" }', "needs client_id"),
        ("http", 'url = "http://127.0.0.1:1/mcp"', '{ type = "oauth", client_id = "a" }', "needs client_secret"),
        ("http", 'url = "http://127.0.0.1:1/mcp"', '{ type = "oauth", grant = "private_key_jwt", client_id = "a" }',
         "needs private_key_file"),
        ("http", 'url = "http://127.0.0.1:1/mcp"', '{ type = "oauth", client_id = "a", client_secret = "b", '
         'token_url = "auth.example.com/token" }', "not an http(s) URL"),
        ("stdio", 'command = "true"', '{ type = "oauth", client_id = "a", client_secret = "b" }', "http/sse servers"),
    ]
    for transport, where, auth, expected in cases:
        text = base.format(d=tmp_path, t=transport, where=where, auth=auth)
        with pytest.raises(ConfigError) as caught:
            parse_config(text, tmp_path / "c.toml")
        assert "auth" in str(caught.value) and expected in str(caught.value), str(caught.value)


def test_daemon_keeps_oauth_servers_healthy_and_says_when_the_client_is_refused(
        auth_server: AuthServer, tmp_path: Path) -> None:
    secret_file = tmp_path / "jira.secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    auth = (f'auth = {{ type = "oauth", grant = "client_credentials", client_id = "mcp-supervisor", '
            f'client_secret = "${{file:{secret_file}}}", scopes = ["mcp"], issuer = "{auth_server.issuer}" }}')
    signed = (f'auth = {{ type = "oauth", grant = "private_key_jwt", client_id = "mcp-jwt", '
              f'private_key_file = "{auth_server.key_file}", scopes = ["mcp"], issuer = "{auth_server.issuer}" }}')
    probe = {"interval": "400ms", "timeout": "2s", "failure_threshold": 1}
    config = tmp_path / "mcp-supervisor.toml"
    config.write_text(supervisor_table(tmp_path) + http_server("jira", auth_server.resource_port, auth, **probe)
                      + http_server("wiki", auth_server.resource_port, signed, **probe))
    sock = tmp_path / "ctl.sock"
    with daemon_process(config) as daemon:
        wait_for(lambda: daemon.poll() is None and {server_status(sock, n)["state"] for n in ("jira", "wiki")}
                 == {"healthy"}, 40, "jira and wiki healthy with their first tokens",
                 ignore=(OSError, KeyError, StopIteration, AssertionError))
        # three and more token lifetimes: every look finds both healthy, never an auth failure
        answers: list[dict[str, Any]] = []
        start = time.monotonic()
        while time.monotonic() - start < 2.5 * TTL:
            answers += [server_status(sock, "jira"), server_status(sock, "wiki")]
            time.sleep(0.25)
        states = {a["state"] for a in answers}
        assert states == {"healthy"}, [(a["name"], a["state"], a["message"]) for a in answers if a["state"] != "healthy"]
        for last in answers[-2:]:
            facts = last["auth"]
            assert facts["type"] == "oauth" and facts["failures"] == 0 and facts["renewals"] >= 3, last
            assert facts["expires_at"] > time.time() and facts["next_refresh_at"] < facts["expires_at"]
            assert facts["last_refresh_at"] <= time.time() and facts["login_needed"] is False
        assert answers[-1]["auth"]["grant"] == "private_key_jwt"
        assert "token issued to mcp-jwt (client_credentials)" in auth_server.log_text()
        shown = cli(sock, "status").stdout
        assert "(oauth token until " in shown, shown

        # the token text: nowhere under state_dir (only encrypted), in the log or the API
        tokens = auth_server.seen_tokens()
        assert len(tokens) >= 6
        exposed = exposed_text(tmp_path / "state", tmp_path / "daemon.log")
        _, status_all = api(sock, "/v1/status")
        exposed += json.dumps([status_all, answers]).encode() + shown.encode()
        for token in tokens:
            assert token.encode() not in exposed
            assert token.split(".")[2].encode() not in exposed  # not even the signature part
        assert SECRET.encode() not in exposed
        assert b"PRIVATE KEY" not in exposed
        assert (tmp_path / "state" / "auth" / "jira.token").stat().st_mode & 0o777 == 0o600

        # the client is disabled at the authorization server: needs_human naming the fix, no restart
        auth_server.stop()
        try:
            auth_server.start("--without-client")
            # (while the provider restarts a renewal may meet a closed port: retried, then refused)
            wait_for(lambda: server_status(sock, "jira")["state"] == "needs_human"
                     and "invalid_client" in server_status(sock, "jira")["hint"], 3 * TTL + 30,
                     "jira needs_human once its client is refused")
            final = server_status(sock, "jira")
            assert final["failure_class"] == "auth"
            assert "invalid_client" in final["hint"] and "supervisorctl-mcp reload" in final["hint"], final
            assert final["restarts"] in (0, None) and final["auth"]["problem"] == final["hint"]
            assert server_status(sock, "wiki")["state"] == "healthy"  # the other client is unaffected
        finally:
            auth_server.stop()
            auth_server.start()
