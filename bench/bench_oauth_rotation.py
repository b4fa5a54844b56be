"""The OAuth rotation soak: a person's grant renewed with rotating refresh tokens for two minutes
(a dozen 10 s token lifetimes) by the daemon and, at the same time, by a CLI process
(``login NAME --refresh`` in a loop), against npm ``oidc-provider`` with reuse detection on (a
refresh token sent twice revokes the whole grant).

Run: .venv/bin/python bench/bench_oauth_rotation.py [SECONDS]   (default 120; needs node + npm)
Prints: rotations done by each side, reuse detections (target 0), looks at ``status`` that were
not healthy (target 0), whether the grant is still alive, and token text found in the state
directory, the log or the API (target 0). Figures only: nothing here passes or fails the suite.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live_daemon import BIN, api, daemon_process, http_server, server_status, supervisor_table, wait_for  # noqa: E402
from tests.oauth_browser import approve_device  # noqa: E402
from tests.oidc_fixture import TTL, exposed_text, install_provider, provider  # noqa: E402


def _login(config: Path) -> int:
    proc = subprocess.Popen([str(BIN / "supervisorctl-mcp"), "--config", str(config), "login", "notes", "--wait", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"open (\S+) and enter the code (\S+)", line)
        if found:
            approve_device(found.group(1), found.group(2))
            break
    proc.communicate(timeout=60)
    return proc.returncode


def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-oauth-") as tmp:
        work = Path(tmp)
        (work / "oidc").mkdir()
        why = install_provider(work / "oidc")
        if why is not None:
            print(f"skipped: {why}")
            return
        with provider(work / "oidc") as server:
            config = work / "mcp-supervisor.toml"
            auth = (f'auth = {{ type = "oauth", grant = "device_code", client_id = "mcp-device", scopes = ["mcp"], '
                    f'issuer = "{server.issuer}" }}')
            config.write_text(supervisor_table(work) + http_server("notes", server.resource_port, auth,
                                                                   interval="500ms", timeout="2s", failure_threshold=1))
            sock = work / "ctl.sock"
            with daemon_process(config):
                wait_for(lambda: server_status(sock, "notes")["state"] == "needs_human", 60, "waiting for a login",
                         ignore=(OSError, KeyError, StopIteration, AssertionError))
                assert _login(config) == 0, "login failed"
                wait_for(lambda: server_status(sock, "notes")["state"] == "healthy", 30, "healthy after the login")
                cli_runs: list[float] = []
                cli_failures = 0
                done = threading.Event()

                def refreshing() -> None:
                    nonlocal cli_failures
                    while not done.is_set():
                        started = time.monotonic()
                        ran = subprocess.run([str(BIN / "supervisorctl-mcp"), "--config", str(config), "login", "notes",
                                              "--refresh"], capture_output=True, text=True, timeout=60)
                        cli_runs.append(time.monotonic() - started)
                        cli_failures += ran.returncode != 0
                        done.wait(1.0)

                worker = threading.Thread(target=refreshing)
                worker.start()
                looks, unhealthy = 0, 0
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    looks += 1
                    unhealthy += server_status(sock, "notes")["state"] != "healthy"
                    time.sleep(0.5)
                done.set()
                worker.join()
                facts = server_status(sock, "notes")["auth"]
                _, everything = api(sock, "/v1/status")
                log = server.log_text()
                leaks = sum(token.split(".")[2].encode() in exposed_text(work / "state", work / "daemon.log")
                            + json.dumps(everything).encode() for token in server.seen_tokens())
            cli_runs.sort()
            print(f"soak: {seconds:.0f} s = {seconds / TTL:.0f} token lifetimes of {TTL} s")
            print(f"rotations at the provider: {log.count('refresh rotated')} "
                  f"(daemon renewals {facts['renewals']}, CLI refreshes {len(cli_runs)}, CLI failures {cli_failures})")
            if cli_runs:
                print(f"CLI refresh wall time: p50 {cli_runs[len(cli_runs) // 2]:.2f} s, max {cli_runs[-1]:.2f} s")
            print(f"reuse detections (grant revoked): {log.count('refresh token already used')}  (target 0)")
            print(f"refused token requests: {log.count('token refused')}  (target 0)")
            print(f"status looks not healthy: {unhealthy} of {looks}  (target 0)")
            print(f"grant alive at the end: {facts['problem'] is None and not facts['login_needed']}")
            print(f"token texts found in state_dir/log/API: {leaks} of {len(server.seen_tokens())}  (target 0)")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 120.0)
