"""``supervisorctl-mcp run -- CMD``: the guarded run, end to end.

The real ``mcp-supervisor`` binary supervises an external HTTP MCP server the test runs (and stops,
so the daemon cannot heal it) and a managed one the daemon runs (and restarts when the test kills
it). The guardian is the installed console script; the jobs are small Python scripts
(tests/jobs/guarded_job.py). Every wait has a deadline and waits on something observable: a line
the job prints, a state the daemon reports, a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.api.client import SupervisorClient
from tests.live_daemon import CLI, PY, free_port, notes_pair, start_daemon, stop, wait_for
from tests.servers.fixtures import descendants_of, start_http_server, wait_gone

JOB = Path(__file__).parent / "jobs" / "guarded_job.py"

pytestmark = pytest.mark.timeout(150)


@dataclass
class Setup:
    dir: Path
    config: Path
    sock: Path
    http_port: int
    managed_port: int
    http: Any
    daemon: subprocess.Popen[bytes]

    def client(self) -> SupervisorClient:
        return SupervisorClient(self.sock, timeout=10)

    def server(self, name: str) -> dict[str, Any]:
        return next(s for s in self.client().status()["servers"] if s["name"] == name)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_SUPERVISOR_")}
        env.update({"HOME": str(self.dir / "home"), "XDG_STATE_HOME": str(self.dir / "xdg"), "NO_COLOR": "1",
                    "COLUMNS": "200"})
        return env

    def argv(self, *guardian: str, job: tuple[str, ...]) -> list[str]:
        return [str(CLI), "--socket", str(self.sock), "--config", str(self.config), "run", *guardian, "--",
                PY, str(JOB), *job]

    def run(self, *guardian: str, job: tuple[str, ...], timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*guardian, job=job), env=self.env(), capture_output=True, text=True,
                              timeout=timeout)

    def ensure_http_up(self) -> None:
        if self.http.proc.poll() is not None:
            self.http = start_http_server(port=self.http_port)
        wait_for(lambda: self.server("notes-http")["state"] == "healthy", 30, "notes-http healthy")
        wait_for(lambda: self.server("notes-managed")["state"] == "healthy", 30, "notes-managed healthy")

    @contextlib.contextmanager
    def started(self, *guardian: str, job: tuple[str, ...]) -> Iterator[subprocess.Popen[str]]:
        """The guardian running ``job``, its output piped; killed (by pid) if a test leaves it running."""
        proc = subprocess.Popen(self.argv(*guardian, job=job), env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def runs(self) -> list[Path]:
        return sorted((self.dir / "state" / "runs").glob("*.json"))


VAULT = """
[backup]
key_file = "{dir}/vault.key"
locations = ["{dir}/backups"]

[[configs]]
name = "client"
path = "{dir}/client.json"
format = "mcp-client-json"
"""


def make_setup(directory: Path, *, vault: bool = True) -> Setup:
    http_port, managed_port = free_port(), free_port()
    (directory / "home").mkdir()
    config = directory / "mcp-supervisor.toml"
    text = notes_pair(directory, http_port, managed_port)
    if vault:
        (directory / "client.json").write_text(json.dumps({"mcpServers": {"notes": {"command": PY}}}))
        text += VAULT.format(dir=directory)
    config.write_text(text)
    http = start_http_server(port=http_port)
    daemon = start_daemon(config)
    setup = Setup(directory, config, directory / "ctl.sock", http_port, managed_port, http, daemon)
    try:
        wait_for(lambda: setup.sock.exists(), 30, "the control socket")
        assert setup.client().ready_within(60)["ready"], "the daemon never became ready"
    except BaseException:
        stop(daemon, timeout=10)
        http.stop()
        raise
    return setup


def teardown(setup: Setup) -> None:
    stop(setup.daemon, timeout=10)
    setup.http.stop()
    shutil.rmtree(setup.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def env() -> Iterator[Setup]:
    setup = make_setup(Path(tempfile.mkdtemp(prefix="mcpg-", dir="/tmp")))
    try:
        yield setup
    finally:
        teardown(setup)


@pytest.fixture
def ready(env: Setup) -> Setup:
    env.ensure_http_up()
    return env


def job_started(proc: subprocess.Popen[str]) -> None:
    """Wait (on its own words, not a sleep) until the job under the guardian has begun."""
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "job started"


def last_json(stdout: str) -> dict[str, Any]:
    report = json.loads(stdout.strip().splitlines()[-1])
    assert isinstance(report, dict)
    return report


# --- the tests ---------------------------------------------------------------------------------


def test_healthy_run_passes_output_and_exit_code_through_and_saves_a_private_report(ready: Setup) -> None:
    before = set(ready.runs())
    done = ready.run(job=("exit", "0"))
    assert done.returncode == 0, done.stderr
    assert "hello from the job" in done.stdout
    assert "fallback=[]" in done.stdout  # told explicitly: nothing is in fallback
    assert "succeeded, exit 0" in done.stderr and "MCP health: EXCELLENT" in done.stderr
    new = set(ready.runs()) - before
    assert len(new) == 1
    path = new.pop()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    report = json.loads(path.read_text())
    run = report["run"]
    assert report["period"] == "run" and report["health"] == "EXCELLENT"
    assert run["exit_code"] == 0 and run["outcome"] == "succeeded" and run["started"] is True
    assert f"run_id={run['run_id']}" in done.stdout
    assert run["precheck"]["outcome"] == "ready"
    assert run["precheck"]["probed"] == {"notes-http": True, "notes-managed": True}
    backup = run["precheck"]["backup"]
    assert backup["taken"] is True and backup["safe"] is True, backup  # a fresh snapshot before the job
    assert backup["snapshot"] in [s["id"] for s in ready.client().request("GET", "/v1/backups")[1]["snapshots"]]
    assert run["servers_before"] == run["servers_after"] == {"notes-http": "healthy", "notes-managed": "healthy"}
    assert run["incidents"] == [] and report["servers_healthy"] == 2 == report["servers_total"]
    assert run["daemon"]["runs_api"] in ("unsupported", "stored")  # today's daemon has no /v1/runs: kept locally
    assert run["duration_s"] >= 0 and run["finished_at"] >= run["started_at"]


def test_quiet_run_prints_nothing_of_its_own_unless_something_went_wrong(ready: Setup) -> None:
    quiet = ready.run("-q", job=("exit", "0"))
    assert quiet.returncode == 0 and quiet.stderr == "" and "hello from the job" in quiet.stdout
    failed = ready.run("-q", job=("exit", "4"))
    assert failed.returncode == 4 and "failed, exit 4" in failed.stderr


def test_failing_job_exits_with_its_code_and_the_report_says_so(ready: Setup) -> None:
    done = ready.run("--json", job=("exit", "7"))
    assert done.returncode == 7, done.stderr
    assert done.stdout.startswith("hello from the job")  # the job's output first, then the report
    report = last_json(done.stdout)
    assert report["run"]["exit_code"] == 7 and report["run"]["outcome"] == "failed"
    assert report["run"]["guardian_exit"] == 7


def test_secret_in_the_command_line_is_masked_in_the_report(ready: Setup) -> None:
    done = subprocess.run(
        [str(CLI), "--socket", str(ready.sock), "--config", str(ready.config), "run", "--json", "--",
         PY, str(JOB), "exit", "0", "--api-key=sk-live-123456", "--token", "hunter2hunter2"],
        env=ready.env(), capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stderr
    report = last_json(done.stdout)
    saved = Path(report["run"]["report_path"]).read_text()
    for text in (json.dumps(report), saved, done.stderr):
        assert "sk-live-123456" not in text and "hunter2hunter2" not in text
    assert "--api-key=***" in report["run"]["command"] and "--token '***'" in report["run"]["command"]


def test_down_server_healed_during_the_precheck_then_the_job_runs(ready: Setup) -> None:
    ready.http.stop()
    wait_for(lambda: ready.server("notes-http")["state"] == "failed", 30, "notes-http failed")
    marker = ready.dir / "healed-ran"
    with ready.started("--wait", "60", job=("touch", str(marker))) as proc:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the guardian says it waits: the job has not started
        assert "waiting up to" in line and "notes-http" in line, line
        assert not marker.exists()
        ready.http = start_http_server(port=ready.http_port)  # the server comes back
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert marker.read_text() == "ran" and "fallback=[]" in out
    report = json.loads(sorted(ready.runs(), key=lambda p: p.stat().st_mtime)[-1].read_text())
    assert report["run"]["precheck"]["outcome"] == "ready"
    assert report["run"]["precheck"]["recover_requested"] == ["notes-http"]
    assert report["run"]["precheck"]["probed"]["notes-http"] is False


def test_managed_server_killed_during_the_run_is_recorded_with_its_recovery(ready: Setup) -> None:
    go = ready.dir / "go-kill"
    with ready.started("--json", job=("wait-file", str(go))) as proc:
        job_started(proc)
        old_pid = ready.server("notes-managed")["pid"]
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: (s := ready.server("notes-managed"))["state"] == "healthy" and s["pid"] != old_pid,
                 60, "notes-managed restarted and healthy")
        go.write_text("go")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    report = last_json(out)
    incidents = [i for i in report["run"]["incidents"] if i["server"] == "notes-managed"]
    assert len(incidents) == 1, report["run"]["incidents"]
    incident = incidents[0]
    assert incident["resolved"] is True and incident["required"] is True
    assert 0 < incident["time_to_recovery_s"] < 60
    assert report["run"]["started_at"] <= incident["started_at"] <= incident["recovered_at"]
    assert any(a.get("rung") == "restart" for a in incident["actions"]), incident
    assert report["recoveries"] == 1 and report["recovery_rate"] == 1.0
    assert report["mttr_s"] == incident["time_to_recovery_s"]
    assert report["health"] == "GOOD"
    assert report["servers"]["notes-managed"]["uptime_pct"] < 100.0


def test_required_server_failing_mid_run_is_recovered_at_once_and_recorded(ready: Setup) -> None:
    go = ready.dir / "go-external"
    with ready.started("--json", job=("wait-file", str(go))) as proc:
        job_started(proc)
        ready.http.stop()
        wait_for(lambda: ready.server("notes-http")["state"] == "failed", 30, "notes-http failed")
        ready.http = start_http_server(port=ready.http_port)
        wait_for(lambda: ready.server("notes-http")["state"] == "healthy", 30, "notes-http healthy again")
        go.write_text("go")
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    [incident] = [i for i in last_json(out)["run"]["incidents"] if i["server"] == "notes-http"]
    assert incident["resolved"] and incident["failure_class"]
    assert incident["recover_requested_at"] is not None  # the guardian asked the daemon to act at once
    assert incident["started_at"] <= incident["recover_requested_at"]


def test_unhealable_server_blocks_the_job_with_exit_75_unless_fallback_is_allowed(ready: Setup) -> None:
    ready.http.stop()
    marker = ready.dir / "blocked-ran"
    try:
        done = ready.run("--wait", "2", job=("touch", str(marker)))
        assert done.returncode == 75, done.stderr
        assert not marker.exists()
        assert "NOT started" in done.stderr and "notes-http" in done.stderr
        assert "--allow-fallback" in done.stderr  # what to do
        report = json.loads(sorted(ready.runs(), key=lambda p: p.stat().st_mtime)[-1].read_text())
        assert report["run"]["started"] is False and report["run"]["exit_code"] is None
        assert report["run"]["guardian_exit"] == 75 and report["health"] == "CRITICAL"
        assert [e["name"] for e in report["run"]["precheck"]["not_ready"]] == ["notes-http"]
        assert report["run"]["precheck"]["not_ready"][0]["reason"]

        allowed = ready.run("--wait", "1", "--allow-fallback", job=("touch", str(marker)))
        assert allowed.returncode == 0, allowed.stderr
        assert marker.exists() and "fallback=[notes-http]" in allowed.stdout
        assert "fallback" in allowed.stderr
    finally:
        ready.ensure_http_up()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_to_the_guardian_reach_the_job(ready: Setup, sig: signal.Signals) -> None:
    marker = ready.dir / f"got-{sig.name}"
    with ready.started("--json", job=("term", str(marker))) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "job ready"
        job_pids = list(descendants_of(proc.pid))
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 42, err
    assert marker.read_text() == f"got {sig.name}"
    report = last_json(out)
    assert report["run"]["signals_forwarded"] == [sig.name] and report["run"]["exit_code"] == 42
    assert wait_gone(job_pids) == []


def test_processes_the_job_leaves_behind_are_stopped(ready: Setup) -> None:
    pid_file = ready.dir / "left.pid"
    done = ready.run("--json", job=("leave", str(pid_file)))
    assert done.returncode == 0, done.stderr
    left = int(pid_file.read_text())
    assert wait_gone([left]) == [], "the job's leftover child is still running"
    assert last_json(done.stdout)["run"]["leftover_processes_killed"] == 1


def test_no_daemon_exit_3_and_the_job_does_not_run(ready: Setup, short_tmp: Path) -> None:
    marker = ready.dir / "nodaemon-ran"
    done = subprocess.run(
        [str(CLI), "--socket", str(short_tmp / "none.sock"), "--config", str(ready.config), "run", "--",
         PY, str(JOB), "touch", str(marker)],
        env=ready.env(), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert not marker.exists()
    assert "NOT started" in done.stderr and "--standalone" in done.stderr


def test_no_daemon_standalone_checks_the_servers_itself_and_runs(ready: Setup, short_tmp: Path) -> None:
    marker = ready.dir / "standalone-ran"
    done = subprocess.run(
        [str(CLI), "--socket", str(short_tmp / "none.sock"), "--config", str(ready.config), "run", "--standalone",
         "--require", "notes-http", "--json", "--", PY, str(JOB), "touch", str(marker)],
        env=ready.env(), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert marker.exists()
    report = last_json(done.stdout)
    assert report["run"]["precheck"]["mode"] == "standalone"
    assert report["run"]["precheck"]["probed"] == {"notes-http": True}
    assert report["run"]["daemon"]["runs_api"] == "standalone"


def test_usage_errors_exit_2(ready: Setup) -> None:
    for argv in (["run"], ["run", "--"], ["run", "--require", "nope", "--", PY, "-c", "pass"]):
        done = subprocess.run([str(CLI), "--socket", str(ready.sock), *argv], env=ready.env(), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.strip()
    not_found = subprocess.run([str(CLI), "--socket", str(ready.sock), "run", "--", "/nonexistent/job"],
                               env=ready.env(), capture_output=True, text=True, timeout=60)
    assert not_found.returncode == 127 and "NOT started" in not_found.stderr


def test_daemon_gone_during_the_run_the_job_keeps_running_and_the_report_says_so() -> None:
    setup = make_setup(Path(tempfile.mkdtemp(prefix="mcpg-", dir="/tmp")), vault=False)
    try:
        go = setup.dir / "go-gone"
        with setup.started("--json", job=("wait-file", str(go))) as proc:
            job_started(proc)
            stop(setup.daemon, timeout=10)
            wait_for(lambda: not setup.sock.exists(), 10, "the daemon's socket to go")
            go.write_text("go")
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        report = last_json(out)
        run = report["run"]
        assert run["precheck"]["backup"] == {"taken": False, "reason": "no vault configured"}
        assert len(run["unobserved"]) == 1 and run["unobserved"][0]["back_at"] is None
        assert run["servers_after"] is None and run["daemon"]["reachable_at_end"] is False
        assert report["health"] == "DEGRADED"
        assert any("unreachable" in r for r in report["recommendations"])
    finally:
        teardown(setup)


# --- guarded_run: the same guardian around a block of a Python job -----------------------------


def test_guarded_run_block_is_reported_like_a_job(ready: Setup) -> None:
    from mcp_supervisor.guard import guarded_run

    with guarded_run(socket=ready.sock, config=ready.config, wait=30) as run:
        assert run.fallback == []
        assert run.environment()["MCP_SUPERVISOR_SOCKET"] == str(ready.sock)
    assert run.report is not None and run.report_path is not None
    saved = json.loads(run.report_path.read_text())
    assert saved["run"]["outcome"] == "succeeded" and saved["run"]["exit_code"] == 0
    assert saved["run"]["required"] == ["notes-http", "notes-managed"]

    with pytest.raises(RuntimeError, match="the analysis broke"):
        with guarded_run(require=["notes-managed"], socket=ready.sock, config=ready.config) as failing:
            raise RuntimeError("the analysis broke")
    assert failing.report is not None
    assert failing.report["run"]["outcome"] == "failed" and failing.report["run"]["exit_code"] == 1


def test_guarded_run_does_not_enter_the_block_when_a_required_server_is_down(ready: Setup) -> None:
    from mcp_supervisor.guard import NotReady, guarded_run

    ready.http.stop()
    entered = False
    try:
        with pytest.raises(NotReady) as caught:
            with guarded_run(require=["notes-http"], socket=ready.sock, config=ready.config, wait=1):
                entered = True
        assert not entered
        assert caught.value.exit_code == 75
        assert [e["name"] for e in caught.value.not_ready] == ["notes-http"]
        assert "notes-http" in str(caught.value)
        with guarded_run(require=["notes-http"], socket=ready.sock, config=ready.config, wait=1,
                         allow_fallback=True) as run:
            assert run.fallback == ["notes-http"]
    finally:
        ready.ensure_http_up()
