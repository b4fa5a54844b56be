"""OAuth person grants against a real authorization server (npm ``oidc-provider``): the one login,
then refresh tokens rotated by the daemon and a CLI at once, a revoked grant, a tampered token file.

The story: ``notes`` needs a person's grant. Until someone signs in it is ``needs_human`` naming
``supervisorctl-mcp login notes``. The login uses the device grant (the provider offers it): the
test approves the code on the provider's own pages with a real HTTP client, as a browser would; no
client id is configured, so the login registers one (RFC 7591). The daemon takes the new grant
without a restart and renews it with rotating refresh tokens across several 10 s lifetimes while a
CLI process (``login notes --refresh``) renews at the same time: the provider revokes the whole
grant when a refresh token is sent twice, so any race fails the test by itself. A known end of the
grant is announced once. Revoked at the provider, the grant makes ``notes`` ``needs_human`` naming
the login, one alert, no restart; a tampered token file is set aside, named, and the fix said.
``wiki`` (a machine grant) stays healthy all along. The token text is nowhere but encrypted.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.live_daemon import BIN, api, cli, daemon_process, http_server, server_status, supervisor_table, wait_for
from tests.oauth_browser import approve_device, sign_in
from tests.oidc_fixture import TTL, AuthServer, auth_server, exposed_text
from tests.servers.fixtures import free_port
from tests.slack_fake import FakeSlack
from tests.test_notify_slack import fake_slack

__all__ = ["auth_server"]
pytestmark = pytest.mark.timeout(240)


def _config(tmp: Path, server: AuthServer, fake: FakeSlack) -> Path:
    probe = {"interval": "400ms", "timeout": "2s", "failure_threshold": 1}
    person = (f'auth = {{ type = "oauth", grant = "device_code", scopes = ["mcp"], issuer = "{server.issuer}", '
              'refresh_lifetime = "1h", refresh_warn = "3590s" }')
    machine = (f'auth = {{ type = "oauth", grant = "private_key_jwt", client_id = "mcp-jwt", '
               f'private_key_file = "{server.key_file}", scopes = ["mcp"], issuer = "{server.issuer}" }}')
    path = tmp / "mcp-supervisor.toml"
    path.write_text(supervisor_table(tmp) + f"""
[notify]
group_wait = "200ms"
group_interval = "200ms"
pace = "0s"
[notify.slack]
webhook_url = "{fake.webhook_url}"
""" + http_server("notes", server.resource_port, person, **probe) + http_server("wiki", server.resource_port, machine,
                                                                               **probe))
    return path


def _login(config: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    """``supervisorctl-mcp login notes``, approved at the provider's pages as a person would."""
    proc = subprocess.Popen([str(BIN / "supervisorctl-mcp"), "--config", str(config), "login", "notes", "--wait", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shown = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        shown += line
        found = re.search(r"open (\S+) and enter the code (\S+)", line)
        if found:
            page = approve_device(found.group(1), found.group(2))
            assert "Sign-in Success" in page, page[-500:]
            break
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, shown + out, err), shown + out + err


def _notes_alerts(fake: FakeSlack, what: str) -> list[str]:
    return [t for t in fake.titles() if t.startswith("notes") and what in t]


async def test_device_login_rotation_across_processes_revocation_and_a_tampered_file(
        auth_server: AuthServer, tmp_path: Path) -> None:
    sock = tmp_path / "ctl.sock"
    async with fake_slack() as fake:
        config = _config(tmp_path, auth_server, fake)
        with daemon_process(config) as daemon:
            def status(name: str) -> dict[str, Any]:
                return server_status(sock, name)

            def settle(what: str, check: Any, timeout: float) -> Any:
                return asyncio.to_thread(wait_for, check, timeout, what,
                                         ignore=(OSError, KeyError, StopIteration, AssertionError))

            # no grant yet: needs a person, and says which command
            await settle("wiki healthy, notes needs_human", lambda: status("wiki")["state"] == "healthy"
                         and status("notes")["state"] == "needs_human", 40)
            before = status("notes")
            assert "supervisorctl-mcp login notes" in before["hint"] and before["auth"]["login_needed"], before
            await fake.wait_for(lambda f: _notes_alerts(f, "needs a person"), 20, "the login alert")

            # the one login: device grant, a registered client, approved on the provider's pages
            done, printed = await asyncio.to_thread(_login, config)
            assert done.returncode == 0, printed
            assert "registered OAuth client" in printed and "signed in" in done.stdout, printed
            await settle("notes healthy with the new grant", lambda: status("notes")["state"] == "healthy", 15)
            assert daemon.poll() is None and status("notes")["restarts"] in (0, None)
            await fake.wait_for(lambda f: _notes_alerts(f, "token expires soon"), 20, "the grant-end warning")

            # ~3 lifetimes: the daemon and a CLI renew the same rotating grant at once
            refreshes: list[subprocess.CompletedProcess[str]] = []
            stop_cli = threading.Event()

            def cli_refreshing() -> None:
                while not stop_cli.is_set():
                    refreshes.append(subprocess.run(
                        [str(BIN / "supervisorctl-mcp"), "--config", str(config), "login", "notes", "--refresh"],
                        capture_output=True, text=True, timeout=60))
                    stop_cli.wait(1.5)

            worker = threading.Thread(target=cli_refreshing)
            worker.start()
            answers: list[dict[str, Any]] = []
            try:
                start = time.monotonic()
                while time.monotonic() - start < 2.5 * TTL:
                    answers.append(await asyncio.to_thread(status, "notes"))
                    await asyncio.sleep(0.25)
            finally:
                stop_cli.set()
                await asyncio.to_thread(worker.join)
            assert {a["state"] for a in answers} == {"healthy"}, [a["message"] for a in answers]
            assert refreshes and all(r.returncode == 0 for r in refreshes), [r.stderr for r in refreshes]
            log = auth_server.log_text()
            assert "token refused" not in log, log[-2000:]  # a reused refresh token would say so (and revoke)
            facts = answers[-1]["auth"]
            # every CLI refresh rotated the grant, and the daemon renewed it too (how often depends on
            # how fresh the CLI kept the token: each of its refreshes moves the daemon's next one)
            assert log.count("refresh rotated") >= len(refreshes) + 1 and facts["renewals"] >= 1, (facts, len(refreshes))
            assert facts["refresh_expires_at"] > time.time() + 3000 and facts["grant"] == "device_code"

            # the token text: only encrypted under state_dir; never in the log, the API, the CLI or Slack
            tokens = auth_server.seen_tokens()
            _, everything = api(sock, "/v1/status")
            exposed = exposed_text(tmp_path / "state", tmp_path / "daemon.log") + json.dumps(
                [everything, answers, fake.texts(), printed, [r.stdout + r.stderr for r in refreshes],
                 cli(sock, "status").stdout]).encode()
            assert len(tokens) >= 4
            for token in tokens:
                assert token.split(".")[2].encode() not in exposed

            # the grant revoked at the provider: needs_human naming the login, one alert, no restart
            assert auth_server.revoke_grants() >= 1
            await settle("notes needs_human once its grant is revoked",
                         lambda: status("notes")["state"] == "needs_human", TTL + 15)
            dead = status("notes")
            assert "invalid_grant" in dead["hint"] and "supervisorctl-mcp login notes" in dead["hint"], dead
            assert dead["failure_class"] == "auth" and dead["restarts"] in (0, None)
            await fake.wait_for(lambda f: len(_notes_alerts(f, "needs a person")) == 2, 20, "the revoked-grant alert")

            # a tampered token file: set aside (kept), named, the fix said; nothing else affected
            token_file = tmp_path / "state" / "auth" / "notes.token"
            token_file.write_bytes(token_file.read_bytes()[:-1] + b"\\0")
            await settle("the tampered file named", lambda: "does not decrypt" in status("notes")["hint"], 10)
            assert list(token_file.parent.glob("notes.token.bad-*")) and "login notes" in status("notes")["hint"]
            assert status("wiki")["state"] == "healthy" and status("wiki")["auth"]["failures"] == 0
            assert len(_notes_alerts(fake, "needs a person")) == 2, fake.titles()  # still one per incident
            assert daemon.poll() is None


def test_authorization_code_login_with_pkce_through_the_loopback_redirect(auth_server: AuthServer,
                                                                           tmp_path: Path) -> None:
    """No device grant wanted: the login prints the authorization URL; the person's browser signs in
    and is redirected to the login's loopback listener; the grant then renews by refresh token."""
    port = free_port()
    refused = auth_server.log_text().count("token refused")  # an earlier test revoked its grant on purpose
    config = tmp_path / "c.toml"
    config.write_text(supervisor_table(tmp_path) + http_server(
        "docs", auth_server.resource_port, f'auth = {{ type = "oauth", grant = "authorization_code", scopes = ["mcp"], '
        f'issuer = "{auth_server.issuer}", redirect_port = {port} }}'))
    proc = subprocess.Popen([str(BIN / "supervisorctl-mcp"), "--config", str(config), "login", "docs", "--wait", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    page = ""
    for line in proc.stdout:
        if line.startswith(f"{auth_server.issuer}/"):
            assert "code_challenge_method=S256" in line and "resource=" in line, line
            page = sign_in(line.strip())
            break
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "signed in" in out, (out, err, page[-300:])
    assert "Signed in" in page
    again = subprocess.run([str(BIN / "supervisorctl-mcp"), "--config", str(config), "login", "docs", "--refresh",
                            "--json"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and json.loads(again.stdout)["refreshed"] is True, again
    assert auth_server.log_text().count("token refused") == refused
