"""End to end: the real `mcp-supervisor` binary on a temp config, driven the way a user would.

The daemon supervises an HTTP MCP server the test runs (and kills), a managed HTTP server the
daemon runs itself, and a stdio server. The test listens on a real sd_notify socket, talks to the
control socket with the CLI (and plain HTTP over the Unix socket), sends SIGHUP and SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.live_daemon import (
    EXAMPLE,
    PY,
    RUN_AS,
    api,
    cli,
    daemon_env,
    daemon_process,
    free_port,
    notes_http,
    notes_pair,
    server_status,
    stop,
    wait_for,
)
from tests.servers.fixtures import descendants_of, pid_alive

pytestmark = pytest.mark.timeout(120)


# --- helpers -----------------------------------------------------------------------------------


def has_cli() -> bool:
    try:
        import mcp_supervisor.cli.main  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    dir: Path
    config: Path
    sock: Path
    notify: socket.socket
    http_port: int
    managed_port: int
    http_server: subprocess.Popen[bytes]
    notes: list[str] = field(default_factory=list)
    closing: threading.Event = field(default_factory=threading.Event)

    def notifications(self) -> list[str]:
        """Every sd_notify datagram received so far (a reader thread drains the socket, since a
        full datagram queue would make the daemon's sends fail)."""
        return list(self.notes)

    def read_notifications(self) -> None:
        self.notify.settimeout(0.1)
        while not self.closing.is_set():
            with contextlib.suppress(TimeoutError):
                self.notes.append(self.notify.recv(4096).decode())

    def server(self, name: str) -> dict[str, Any]:
        return server_status(self.sock, name)

    def log(self) -> str:
        return (self.dir / "daemon.log").read_text(errors="replace")


def write_config(directory: Path, http_port: int, managed_port: int, *, broken: bool = False) -> Path:
    text = notes_pair(directory, http_port, managed_port) + f"""
[[servers]]
name = "notes-stdio"
transport = "stdio"
{RUN_AS}
command = "{PY}"
args = ["{EXAMPLE}", "stdio"]
probe = {{ interval = "1s", timeout = "8s", expected_tools = ["add_note"] }}
"""
    if broken:
        text += '\n[[servers]]\nname = "oops"\ntransport = "carrier-pigeon"\n'
    path = directory / "mcp-supervisor.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    directory = Path(tempfile.mkdtemp(prefix="mcpe2e-", dir="/tmp"))
    http_port, managed_port = free_port(), free_port()
    external = notes_http(http_port)
    config = write_config(directory, http_port, managed_port)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(directory / "notify.sock"))
    env = daemon_env(NOTIFY_SOCKET=str(directory / "notify.sock"), WATCHDOG_USEC="1000000")
    closing = threading.Event()
    reader: threading.Thread | None = None
    try:
        with daemon_process(config, env=env) as proc:
            d = Daemon(proc, directory, config, directory / "ctl.sock", notify, http_port, managed_port, external,
                       closing=closing)
            reader = threading.Thread(target=d.read_notifications, daemon=True)
            reader.start()
            try:
                yield d
            finally:
                external = d.http_server  # a test may have replaced it
    finally:
        stop(external)
        closing.set()
        if reader is not None:
            reader.join(timeout=5)
        notify.close()
        shutil.rmtree(directory, ignore_errors=True)


# --- the story, in order -----------------------------------------------------------------------


def test_daemon_reports_ready_to_systemd_and_answers_on_its_socket(daemon: Daemon) -> None:
    wait_for(lambda: any("READY=1" in n for n in daemon.notifications()), 30, "READY=1 on NOTIFY_SOCKET")
    assert daemon.sock.exists()
    assert oct(daemon.sock.stat().st_mode & 0o777) == oct(0o660)
    status, body = api(daemon.sock, "/v1/ready?wait=30", timeout=40)
    assert status == 200, body
    assert body["ready"] is True
    # the event loop pings the watchdog (WATCHDOG_USEC=1s -> every 0.5 s)
    wait_for(lambda: any("WATCHDOG=1" in n for n in daemon.notifications()), 5, "WATCHDOG=1 pings")
    wait_for(lambda: any("STATUS=3/3 ready" in n for n in daemon.notifications()), 10, "STATUS=3/3 ready")
    stdio = daemon.server("notes-stdio")
    assert stdio["state"] == "healthy"


@pytest.mark.skipif(not has_cli(), reason="the CLI (supervisorctl-mcp) is not built yet")
def test_cli_status_and_ready_over_the_socket(daemon: Daemon) -> None:
    ready = cli(daemon.sock, "ready", "--json")
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert json.loads(ready.stdout)["ready"] is True
    status = cli(daemon.sock, "status", "--json")
    assert status.returncode == 0
    names = {s["name"]: s["state"] for s in json.loads(status.stdout)["servers"]}
    assert names == {"notes-http": "healthy", "notes-managed": "healthy", "notes-stdio": "healthy"}


def test_killed_server_goes_failed_and_ready_says_503_then_recovers(daemon: Daemon) -> None:
    stop(daemon.http_server, signal.SIGKILL)
    wait_for(lambda: daemon.server("notes-http")["state"] == "failed", 15, "notes-http failed")
    status, body = api(daemon.sock, "/v1/ready")
    assert status == 503
    assert [s["name"] for s in body["not_ready"]] == ["notes-http"]
    assert body["not_ready"][0]["reason"]
    if has_cli():
        not_ready = cli(daemon.sock, "ready")
        assert not_ready.returncode == 1
        assert "notes-http" in not_ready.stdout + not_ready.stderr
    daemon.http_server = notes_http(daemon.http_port)
    wait_for(lambda: daemon.server("notes-http")["state"] == "healthy", 15, "notes-http healthy again")
    status, body = api(daemon.sock, "/v1/ready?wait=10", timeout=20)
    assert status == 200, body


def test_managed_server_killed_with_sigkill_is_restarted(daemon: Daemon) -> None:
    before = daemon.server("notes-managed")
    pid = before["pid"]
    assert before["state"] == "healthy" and pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: (s := daemon.server("notes-managed"))["pid"] not in (None, pid) and s["state"] == "healthy",
             20, "notes-managed restarted with a new pid and healthy")
    events = daemon.log()
    assert '"rung": "restart"' in events or '"rung":"restart"' in events


def test_sighup_with_an_invalid_config_keeps_the_old_one_running(daemon: Daemon) -> None:
    good = daemon.config.read_text()
    write_config(daemon.dir, daemon.http_port, daemon.managed_port, broken=True)
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload rejected" in daemon.log(), 10, "the reload-rejected log line")
    line = next(json.loads(x) for x in daemon.log().splitlines() if "reload rejected" in x)
    assert "carrier-pigeon" in line["error"] and str(daemon.config) in line["error"]
    assert daemon.proc.poll() is None
    status, body = api(daemon.sock, "/v1/status")
    assert status == 200 and len(body["servers"]) == 3
    # a valid reload that drops a server: only that runner goes
    managed_pid = daemon.server("notes-managed")["pid"]
    daemon.config.write_text(good.split("[[servers]]\nname = \"notes-stdio\"")[0])
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(api(daemon.sock, "/v1/status")[1]["servers"]) == 2, 10, "notes-stdio removed")
    assert daemon.server("notes-managed")["pid"] == managed_pid  # unchanged servers keep running
    daemon.config.write_text(good)


def test_sigterm_stops_quickly_and_leaves_nothing_behind(daemon: Daemon) -> None:
    descendants = set(descendants_of(daemon.proc.pid))
    assert descendants, "expected the managed server (and the warm stdio instance) as children"
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    returncode = daemon.proc.wait(timeout=10)
    elapsed = time.monotonic() - started
    assert returncode == 0
    assert elapsed < 4.0, f"shutdown took {elapsed:.2f}s (budget 2 s + interpreter exit)"

    def gone() -> bool:
        return not any(pid_alive(pid) for pid in descendants)

    wait_for(gone, 5, f"daemon children {descendants} to exit")
    assert not daemon.sock.exists()
    wait_for(lambda: any("STOPPING=1" in n for n in daemon.notifications()), 2, "STOPPING=1")
