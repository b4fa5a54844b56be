"""A real `mcp-supervisor` process for the dashboard and status-page tests.

Two real MCP servers: one the daemon manages (killed by the tests, restarted by the daemon) and one
external, whose header carries a canary token that must never reach a screen or a page.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers.fixtures import RUN_AS
from tests.test_e2e import BIN, EXAMPLE, PY, api, free_port, start_http_server, stop, wait_for

CANARY = "canary-token-8c1f0b7e-do-not-show"


@dataclass
class LiveDaemon:
    directory: Path
    config: Path
    sock: Path
    web_port: int
    managed_port: int
    http: subprocess.Popen[bytes]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "MCP_TEST_CANARY": CANARY}
        env.pop("MCP_SUPERVISOR_SOCKET", None)
        with open(self.directory / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(self.config)], env=env,
                                         stderr=log)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def server(self, name: str) -> dict[str, object]:
        status, body = api(self.sock, "/v1/status")
        assert status == 200, body
        return next(s for s in body["servers"] if s["name"] == name)

    def states(self) -> dict[str, str]:
        if not self.sock.exists():
            return {}
        with contextlib.suppress(OSError):
            status, body = api(self.sock, "/v1/status")
            if status == 200:
                return {s["name"]: s["state"] for s in body["servers"]}
        return {}

    def wait_all_healthy(self, timeout: float = 60) -> None:
        try:
            wait_for(lambda: set(self.states().values()) == {"healthy"} and len(self.states()) == 2, timeout,
                     "both servers healthy")
        except AssertionError:
            print(self.states(), (self.directory / "daemon.log").read_text()[-4000:])
            raise

    def kill_managed(self) -> int:
        pid = self.server("managed")["pid"]
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGKILL)
        return pid


@contextlib.contextmanager
def live_daemon(title: str = "Acme MCP status") -> Iterator[LiveDaemon]:
    directory = Path(tempfile.mkdtemp(prefix="mcplive-", dir="/tmp"))
    http_port, managed_port, web_port = free_port(), free_port(), free_port()
    http = start_http_server(http_port)
    config = directory / "mcp-supervisor.toml"
    config.write_text(f"""
[supervisor]
socket = "{directory}/ctl.sock"
state_dir = "{directory}/state"
log_format = "json"
shutdown_timeout = "2s"

[web]
listen = "127.0.0.1:{web_port}"
title = "{title}"

[[servers]]
name = "managed"
transport = "http"
url = "http://127.0.0.1:{managed_port}/mcp"
managed = true
command = "{PY}"
args = ["{EXAMPLE}", "http", "{managed_port}"]
{RUN_AS}
probe = {{ interval = "300ms", timeout = "2s", failure_threshold = 2, start_period = "20s" }}
recovery = {{ backoff_initial = "100ms" }}

[[servers]]
name = "external"
transport = "http"
url = "http://127.0.0.1:{http_port}/mcp"
headers = {{ Authorization = "Bearer ${{MCP_TEST_CANARY}}" }}
probe = {{ interval = "500ms", timeout = "2s" }}
""")
    daemon = LiveDaemon(directory, config, directory / "ctl.sock", web_port, managed_port, http)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        stop(http)
        shutil.rmtree(directory, ignore_errors=True)
