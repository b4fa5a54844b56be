"""The daemon's life as a job and an operator live it: the real `mcp-supervisor` binary, the real
`supervisorctl-mcp`, real servers, real signals.

* readiness is true or it is "no" while the daemon stops, reloads a server and restarts;
* a daemon killed with -9 leaves nothing unsupervised: the next one stops the orphan, runs one
  copy of the server and supervises it;
* a managed server whose port is taken says who holds it;
* startup and shutdown are bounded and clean: a failed start, a stuck shutdown, a second signal;
* server text is printed as is (no console markup).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
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
    CLI,
    EXAMPLE,
    PY,
    api,
    cli,
    free_port,
    http_server,
    notes_http,
    start_daemon,
    stop,
    supervisor_table,
    wait_for,
)
from tests.live_daemon import managed_notes as notes_table
from tests.servers.fixtures import RUN_AS, pid_alive

pytestmark = pytest.mark.timeout(180)


# A managed "server" that ignores SIGTERM: its stop takes the whole grace period.
STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    time.sleep(60)\n"


@dataclass
class Run:
    dir: Path
    config: Path
    sock: Path
    proc: subprocess.Popen[bytes] | None = None
    ports: list[int] = field(default_factory=list)

    def start(self) -> subprocess.Popen[bytes]:
        self.proc = start_daemon(self.config)
        return self.proc

    def log(self) -> str:
        return (self.dir / "daemon.log").read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        code, body = api(self.sock, "/v1/status")
        assert code == 200, body
        return body  # type: ignore[no-any-return]

    def server(self, name: str) -> dict[str, Any]:
        """The server's status entry; {} while the daemon is still starting its runners."""
        return next((s for s in self.status()["servers"] if s["name"] == name), {})

    def up(self) -> bool:
        try:
            return bool(self.status())
        except OSError:
            return False

    def job(self, *args: str) -> subprocess.Popen[str]:
        """``supervisorctl-mcp ARGS`` in the background, as a job's wrapper script runs it."""
        return subprocess.Popen([str(CLI), "--socket", str(self.sock), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(self.sock, *args, columns=300)

    def parked(self) -> bool:
        """A long-poll is waiting inside the daemon (status counts them)."""
        return bool(self.status()["daemon"].get("ready_waiters"))


@pytest.fixture
def run() -> Iterator[Run]:
    directory = Path(tempfile.mkdtemp(prefix="mcplife-", dir="/tmp"))
    r = Run(directory, directory / "mcp-supervisor.toml", directory / "ctl.sock")
    try:
        yield r
    finally:
        if r.proc is not None:
            stop(r.proc)
        # a test that failed half-way may leave an orphan of a daemon killed with -9
        for pid in processes_with(str(directory)) + [p for port in r.ports for p in processes_with(f"http {port}")]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)


def header(r: Run, shutdown_timeout: str = "2s") -> str:
    return supervisor_table(r.dir, shutdown_timeout=shutdown_timeout)


def watched(name: str, port: int, interval: str = "300ms", critical: bool = True) -> str:
    return http_server(name, port, f"critical = {str(critical).lower()}", interval=interval, timeout="1s",
                       failure_threshold=1)


def managed_notes(name: str, port: int, start_period: str | None = None, run: Run | None = None) -> str:
    if run is not None:
        run.ports.append(port)
    return notes_table(name, port, interval="300ms", timeout="2s", failure_threshold=2, start_period=start_period)


def stubborn(r: Run, name: str, tag: str = "a") -> str:
    script = r.dir / f"stubborn-{name}.py"
    script.write_text(STUBBORN)
    return f"""
[[servers]]
name = "{name}"
transport = "http"
url = "http://127.0.0.1:{free_port()}/mcp"
managed = true
{RUN_AS}
critical = false
command = "{PY}"
args = ["{script}", "{tag}"]
probe = {{ interval = "1s", timeout = "1s" }}
"""


def processes_with(*needles: str) -> list[int]:
    """Live pids whose command line contains every needle."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if all(n in cmdline for n in needles) and pid_alive(int(entry.name)):
                    found.append(int(entry.name))
    return found


def finish(job: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    out, err = job.communicate(timeout=timeout)
    return job.returncode, out + err


# --- readiness is true or it is "no" ------------------------------------------------------------


def test_a_waiting_job_never_hears_ready_while_the_daemon_stops_reloads_or_restarts(run: Run) -> None:
    down_port = free_port()
    run.config.write_text(header(run) + watched("db", down_port) + stubborn(run, "slow"))
    run.start()
    wait_for(lambda: run.up() and run.server("db").get("state") == "failed", 30, "db failed (nothing listens)")

    # 1. SIGTERM while a job waits: the job hears "no" at once, never 0
    job = run.job("ready", "--wait", "60")
    wait_for(run.parked, 15, "the job's long-poll parked in the daemon")
    assert run.proc is not None
    run.proc.send_signal(signal.SIGTERM)
    code, output = finish(job, 20)
    assert code in (1, 3), output
    if code == 1:
        assert "daemon stopping" in output
    assert run.proc.wait(timeout=10) == 0

    # 2. a job that starts while the daemon is down waits for the new one, which says "no"
    job = run.job("ready", "--wait", "60")
    time.sleep(0.3)  # the job is retrying the (absent) socket: what `systemctl restart` looks like
    run.start()
    wait_for(lambda: run.up() and run.server("db").get("state") == "failed", 30, "db failed after the restart")
    wait_for(run.parked, 15, "the job parked in the restarted daemon")
    assert job.poll() is None, finish(job, 5)

    # 3. SIGHUP with db (and the slow-to-stop server) changed: while the reload replaces them,
    # every answer is "no", and says "reloading"
    answers: list[tuple[int, dict[str, Any]]] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                answers.append(api(run.sock, "/v1/ready"))
            time.sleep(0.02)

    run.config.write_text(header(run) + watched("db", down_port, interval="400ms") + stubborn(run, "slow", "b"))
    poller = threading.Thread(target=poll)
    poller.start()
    try:
        run.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "config reloaded" in run.log(), 20, "the reload to finish")
    finally:
        done.set()
        poller.join()
    assert answers and all(code == 503 and not body["ready"] for code, body in answers), answers
    during = [body for _, body in answers if body.get("daemon") == "reloading"]
    assert during, "no answer was taken while the reload ran"
    assert all(item["state"] == "reloading" for body in during for item in body["not_ready"]
               if item["name"] == "db")
    not_ready = run.cli("ready")
    assert not_ready.returncode == 1 and "db is" in not_ready.stdout, not_ready
    assert job.poll() is None, finish(job, 5)

    # 4. the server comes up: now the waiting job hears "ready", exit 0
    server = notes_http(down_port)
    try:
        code, output = finish(job, 30)
        assert code == 0, output
    finally:
        stop(server)
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(timeout=10) == 0


# --- kill -9 of the daemon leaves nothing unsupervised ------------------------------------------


def test_after_kill_9_the_next_daemon_stops_the_orphan_and_supervises_one_copy(run: Run) -> None:
    port = free_port()
    run.config.write_text(header(run) + managed_notes("notes", port, run=run))
    run.start()
    wait_for(lambda: run.up() and run.server("notes").get("state") == "healthy", 40, "notes healthy")
    orphan = run.server("notes")["pid"]
    assert orphan and pid_alive(orphan)
    assert run.proc is not None
    run.proc.kill()
    run.proc.wait(timeout=10)
    assert pid_alive(orphan), "the managed server should outlive a daemon killed with -9"

    run.start()
    wait_for(lambda: run.up() and (s := run.server("notes")).get("state") == "healthy" and s["pid"] not in (None, orphan),
             40, "notes healthy again under the new daemon")
    wait_for(lambda: not pid_alive(orphan), 10, "the orphan stopped")
    assert "left by a previous daemon" in run.log()
    assert processes_with(str(EXAMPLE), "http", str(port)) == [run.server("notes")["pid"]]

    # supervised: killed, it comes back
    first = run.server("notes")["pid"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: (s := run.server("notes"))["pid"] not in (None, first) and s["state"] == "healthy", 40,
             "notes restarted after kill -9")
    assert all(pid_alive(s["pid"]) for s in run.status()["servers"] if s.get("pid"))

    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(timeout=10) == 0
    wait_for(lambda: not processes_with(str(EXAMPLE), "http", str(port)), 10, "no server process left")
    assert not list((run.dir / "state" / "processes").glob("*.json")), "records left after a clean stop"


def test_a_port_held_by_another_process_is_named_and_no_dead_pid_is_shown(run: Run) -> None:
    port = free_port()
    holder = notes_http(port)  # not the daemon's: e.g. started by hand
    try:
        run.config.write_text(header(run) + managed_notes("notes", port, run=run))
        run.start()
        wait_for(lambda: run.up() and f"pid {holder.pid}" in (run.server("notes").get("message") or ""), 60,
                 "the status naming the process that holds the port")
        assert f"cannot bind port {port}" in run.server("notes")["message"]
        # whatever moment one looks: no dead pid, and never "healthy" on the holder's answers alone
        for _ in range(30):
            entry = run.server("notes")
            assert entry["pid"] is None or pid_alive(entry["pid"]), entry
            assert entry["state"] != "healthy" or entry["pid"] is not None, entry
            time.sleep(0.1)
    finally:
        stop(holder)


# --- startup and shutdown are bounded and clean --------------------------------------------------


def test_a_failed_start_stops_the_managed_processes_already_started(run: Run) -> None:
    port = free_port()
    (run.dir / "state" / "logs" / "broken.log").mkdir(parents=True)  # its log cannot be opened
    run.config.write_text(header(run) + managed_notes("first", port, run=run) + stubborn(run, "broken"))
    proc = run.start()
    assert proc.wait(timeout=30) == 1
    assert '"server": "first"' in run.log() and "managed process started" in run.log()
    assert "cannot start the servers" in run.log()
    assert not processes_with(str(EXAMPLE), "http", str(port)), "the first server outlived the failed start"
    assert not run.sock.exists()


def _stuck_reload(run: Run) -> None:
    """SIGHUP with the config file replaced by a FIFO nobody writes: the reload's reader thread
    blocks for good, as a config on a hung network mount would."""
    text = run.config.read_text()
    run.config.unlink()
    os.mkfifo(run.config)
    assert run.proc is not None
    run.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload requested" in run.log(), 10, "the reload to start")
    (run.dir / "config.txt").write_text(text)


def test_shutdown_timeout_bounds_the_whole_shutdown_even_when_something_is_stuck(run: Run) -> None:
    run.config.write_text(header(run, "2s") + stubborn(run, "slow"))
    run.start()
    wait_for(lambda: run.up() and run.server("slow").get("pid"), 30, "the stubborn server running")
    child = run.server("slow")["pid"]
    _stuck_reload(run)
    assert run.proc is not None
    started = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    code = run.proc.wait(timeout=15)
    elapsed = time.monotonic() - started
    assert elapsed < 4.0, f"the shutdown took {elapsed:.1f}s with shutdown_timeout = 2s"
    assert code == 0, "the stop itself went right; only a reader thread was stuck"
    assert "did not exit within shutdown_timeout after a clean stop" in run.log()
    wait_for(lambda: not pid_alive(child), 5, "the stubborn server gone")


def test_a_second_signal_ends_a_stuck_shutdown_at_once_children_killed(run: Run) -> None:
    run.config.write_text(header(run, "60s") + stubborn(run, "slow"))
    run.start()
    wait_for(lambda: run.up() and run.server("slow").get("pid"), 30, "the stubborn server running")
    child = run.server("slow")["pid"]
    _stuck_reload(run)
    assert run.proc is not None
    run.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping" in run.log(), 10, "the shutdown to begin")
    assert run.proc.poll() is None
    started = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    code = run.proc.wait(timeout=10)
    assert time.monotonic() - started < 3.0
    assert code == 128 + signal.SIGTERM
    assert "second SIGTERM during shutdown" in run.log()
    wait_for(lambda: not pid_alive(child), 5, "the stubborn server killed")


# --- server text is printed as is ---------------------------------------------------------------


def test_status_and_ready_print_server_text_with_brackets_as_is(run: Run) -> None:
    script = run.dir / "noisy.py"
    script.write_text("import sys\nsys.stderr.write('[/INFO] [bold]x\\n')\nsys.exit(1)\n")
    run.config.write_text(header(run) + f"""
[[servers]]
name = "noisy"
transport = "stdio"
{RUN_AS}
command = "{PY}"
args = ["{script}"]
probe = {{ interval = "500ms", timeout = "5s", failure_threshold = 1 }}
""")
    run.start()
    wait_for(lambda: run.up() and "[/INFO]" in (run.server("noisy").get("message") or ""), 30,
             "the probe failure carrying the server's stderr")
    status = run.cli("status")
    assert status.returncode == 0, status.stderr
    assert "[crashed] server process exited" in status.stdout, status.stdout
    assert "[/INFO] [bold]x" in status.stdout, status.stdout
    assert "MarkupError" not in status.stderr
    ready = run.cli("ready")
    assert ready.returncode == 1, ready
    assert "noisy is" in ready.stdout
    ready_json = json.loads(run.cli("ready", "--json").stdout)
    assert ready_json["daemon"] == "running" and ready_json["ready"] is False
