"""The run report's pure core (``guard/report.py``, ``timeline.py``, ``masking.py``, ``summary.py``): incidents, times to recovery, unobserved time,
the health word, advice and the masking of secrets, with known answers."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.guard.masking import redact_argv
from mcp_supervisor.guard.report import RunFacts, build_run_report, exit_code_of
from mcp_supervisor.guard.store import runs_dir, save_report
from mcp_supervisor.guard.summary import summary_lines
from mcp_supervisor.guard.timeline import fold_events

T0 = 1_800_000_000.0


def state(server: str, new: str, at: float, **extra: Any) -> dict[str, Any]:
    return {"kind": "state", "server": server, "new": new, "at": T0 + at, **extra}


def facts(**overrides: Any) -> RunFacts:
    base: dict[str, Any] = dict(
        run_id="r1", argv=["job.py"], started_at=T0, finished_at=T0 + 100, required=["jira"],
        precheck={"outcome": "ready", "waited_s": 0.2}, servers_before={"jira": {"state": "healthy"},
                                                                          "gitlab": {"state": "healthy"}},
        servers_after={"jira": {"state": "healthy"}, "gitlab": {"state": "healthy"}}, returncode=0,
    )
    base.update(overrides)
    return RunFacts(**base)


def test_an_incident_opens_on_failure_and_closes_on_healthy_with_its_time_to_recovery() -> None:
    events = [
        state("jira", "failed", 10, failure_class="refused", reason="connection refused"),
        {"kind": "action", "server": "jira", "rung": "restart", "attempt": 1, "at": T0 + 10.5},
        {"kind": "action_done", "server": "jira", "ok": True, "duration": 0.8, "at": T0 + 11.3},
        state("jira", "recovering", 10.5),
        state("jira", "healthy", 14),
    ]
    timeline = fold_events(events, {"jira": "healthy"}, ["jira"], T0)
    [incident] = timeline.incidents
    assert incident.to_json()["time_to_recovery_s"] == 4.0
    assert incident.states == ["failed", "recovering", "healthy"]
    assert incident.actions == [{"rung": "restart", "attempt": 1, "at": T0 + 10.5, "ok": True, "duration_s": 0.8}]
    assert incident.failure_class == "refused" and incident.required


def test_report_metrics_over_the_run_window() -> None:
    events = [state("jira", "failed", 10), state("jira", "healthy", 14), state("jira", "failed", 50),
              state("jira", "healthy", 56), state("gitlab", "backoff", 90)]
    report = build_run_report(facts(events=events, servers_after={"jira": {"state": "healthy"},
                                                                   "gitlab": {"state": "backoff"}}))
    assert report["servers"]["jira"]["uptime_pct"] == 90.0  # 10 s down of 100
    assert report["servers"]["jira"]["mttr_s"] == 5.0 and report["servers"]["jira"]["recoveries"] == 2
    assert report["servers"]["gitlab"]["uptime_pct"] == 90.0  # down from 90 s to the end
    assert report["recoveries"] == 2 and report["recovery_rate"] == round(2 / 3, 3) and report["mttr_s"] == 5.0
    assert report["failed_servers"] == ["gitlab"] and report["healthy_servers"] == ["jira"]
    assert report["health"] == "DEGRADED"  # an optional server stayed down; every required one is fine
    assert any("gitlab (optional) was still backoff" in r for r in report["recommendations"])
    assert any("jira failed 2 times" in r for r in report["recommendations"])


def test_time_the_daemon_was_gone_is_unobserved_not_healthy() -> None:
    events = [state("jira", "failed", 10), {"kind": "guardian", "event": "daemon_lost", "at": T0 + 20},
              {"kind": "guardian", "event": "daemon_back", "at": T0 + 60}, state("jira", "healthy", 70)]
    report = build_run_report(facts(events=events))
    # observed 60 s of 100; jira was seen down 10-20 and 60-70: 20 s of 60
    assert report["servers"]["jira"]["uptime_pct"] == round(100 * (1 - 20 / 60), 3)
    assert report["run"]["unobserved"] == [{"lost_at": T0 + 20, "back_at": T0 + 60}]
    assert report["health"] == "DEGRADED"


def test_health_words() -> None:
    assert build_run_report(facts())["health"] == "EXCELLENT"
    healed = [state("jira", "failed", 1), state("jira", "healthy", 2)]
    assert build_run_report(facts(events=healed))["health"] == "GOOD"
    down = facts(events=[state("jira", "failed", 1)], servers_after={"jira": {"state": "failed"}})
    assert build_run_report(down)["health"] == "CRITICAL"
    not_started = facts(started=False, returncode=None, precheck={"not_ready": [
        {"name": "jira", "state": "needs_human", "reason": "401 Unauthorized", "failure_class": "auth"}]})
    report = build_run_report(not_started)
    assert report["health"] == "CRITICAL" and report["run"]["outcome"] == "not_started"
    assert report["recommendations"][0].startswith("jira is needs_human (401 Unauthorized): renew its credentials")
    assert report["uptime_pct"] is None


def test_a_server_already_in_fallback_at_the_start_is_an_open_incident() -> None:
    report = build_run_report(facts(servers_before={"jira": {"state": "fallback"}}, fallback=["jira"],
                                    servers_after={"jira": {"state": "fallback"}}))
    [incident] = report["run"]["incidents"]
    assert incident["open_at_start"] and not incident["resolved"]
    assert report["health"] == "DEGRADED"  # fallback was allowed: the job ran, degraded


def test_secrets_are_masked_in_the_command_and_the_reasons() -> None:
    argv = ["job.py", "--token", "abcd1234", "--password=pw-secret", "API_KEY=xyz789", "https://bob:pa55@host/x",
            "--from-config", "cfg-secret-value"]
    assert redact_argv(argv, ["cfg-secret-value"]) == [
        "job.py", "--token", "***", "--password=***", "API_KEY=***", "https://***@host/x", "--from-config", "***"]
    events = [state("jira", "failed", 1, reason="401 for token cfg-secret-value")]
    report = build_run_report(facts(argv=argv, events=events, secrets=["cfg-secret-value"]))
    text = repr(report)
    assert "cfg-secret-value" not in text and "abcd1234" not in text and "pa55" not in text
    assert report["run"]["incidents"][0]["reason"] == "401 for token ***"


def test_exit_codes_and_the_summary_keep_server_text_literal() -> None:
    assert exit_code_of(0) == 0 and exit_code_of(7) == 7 and exit_code_of(-15) == 143
    killed = build_run_report(facts(returncode=-9))
    assert killed["run"]["signal"] == "SIGKILL" and killed["run"]["exit_code"] == 137
    assert killed["run"]["outcome"] == "killed"
    events = [state("jira", "failed", 1, reason="[bold red]boom[/] from the server"), state("jira", "healthy", 3)]
    lines = [text for _, text in summary_lines(build_run_report(facts(events=events)))]
    assert any("[bold red]boom[/] from the server" in line and "(2.0 s)" in line for line in lines)


def test_a_flapping_server_does_not_make_the_report_unbounded() -> None:
    events: list[dict[str, Any]] = []
    for n in range(300):
        events.append(state("jira", "failed", n * 0.3))
        events += [{"kind": "action", "server": "jira", "rung": "restart", "attempt": k, "at": T0 + n * 0.3}
                   for k in range(30)]
        events.append(state("jira", "healthy", n * 0.3 + 0.1))
    report = build_run_report(facts(events=events))
    assert report["run"]["incidents_total"] == 300 and len(report["run"]["incidents"]) == 200
    assert report["recoveries"] == 300  # the metrics still count every incident
    assert all(len(i["actions"]) == 20 for i in report["run"]["incidents"])
    assert report["servers"]["jira"]["uptime_pct"] == round(100 * (1 - 300 * 0.1 / 100), 3)
    lines = summary_lines(report)
    assert len(lines) < 25 and any("and 290 more" in text for _, text in lines)


# --- the report file ------------------------------------------------------------------------------


def test_report_file_is_private_atomic_and_never_written_through_a_symlink(tmp_path: Path) -> None:
    report = build_run_report(facts())
    runs = tmp_path / "state" / "runs"
    path = save_report(report, runs)
    assert path == runs / "r1.json" and json.loads(path.read_text())["run"]["run_id"] == "r1"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in runs.iterdir()] == ["r1.json"]  # no temp file left
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "linked-runs"
    link.symlink_to(elsewhere)
    with pytest.raises(OSError):
        save_report(report, link)
    assert list(elsewhere.iterdir()) == []


def test_runs_dir_is_the_state_dir_unless_it_is_not_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp_supervisor.config import load_config

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    config_file = tmp_path / "c.toml"
    config_file.write_text(f'[supervisor]\nstate_dir = "{tmp_path}/state"\n')
    assert runs_dir(load_config(config_file)) == tmp_path / "state" / "runs"
    (tmp_path / "state" / "runs").rmdir()
    (tmp_path / "state" / "runs").symlink_to(tmp_path)  # someone replaced it with a link
    assert runs_dir(load_config(config_file)) == tmp_path / "xdg" / "mcp-supervisor" / "runs"
    assert runs_dir(None) == tmp_path / "xdg" / "mcp-supervisor" / "runs"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_root_never_writes_a_report_into_a_directory_another_user_owns(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o777)
    os.chown(theirs, 12345, 12345)
    with pytest.raises(PermissionError, match="belongs to uid 12345"):
        save_report(build_run_report(facts()), theirs)
    assert list(theirs.iterdir()) == []
