"""The notifier's pure parts: incidents from events, Block Kit, advice, quiet hours, check-config warnings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from mcp_supervisor.config import parse_config
from mcp_supervisor.notify.advice import instruction_for
from mcp_supervisor.notify.checks import inline_secret_warnings
from mcp_supervisor.notify.incidents import IncidentTracker, Notification
from mcp_supervisor.notify.policy import quiet_until, retry_delay
from mcp_supervisor.notify.render import escape, fallback_text, plain, slack_blocks


def state(tracker: IncidentTracker, new: str, at: float, old: str = "healthy", **data: object) -> list[Notification]:
    return tracker.on_event("state", "jira", {"old": old, "new": new, "reason": f"to {new}", **data}, at)


def notify(tracker: IncidentTracker, what: str, at: float, severity: str = "critical", detail: str = "x") -> list[Notification]:
    return tracker.on_event("notify", "jira", {"notify": what, "severity": severity, "detail": detail}, at)


def test_a_kill_healed_by_a_restart_is_one_alert_and_one_resolution_with_the_time_to_recovery() -> None:
    t = IncidentTracker()
    down = state(t, "failed", 100.0, failure_class="crashed", critical=True)
    assert [(n.kind, n.role, n.severity) for n in down] == [("down", "alert", "critical")]
    assert state(t, "recovering", 100.1, old="failed") == []
    up = state(t, "healthy", 103.5, old="recovering", attempt=1)
    assert [(n.kind, n.role) for n in up] == [("recovered", "resolution")]
    assert up[0].incident == down[0].incident
    assert up[0].data["ttr_s"] == 3.5
    assert notify(t, "recovered", 103.5, "info") == []  # the machine's own "recovered" is the same resolution


def test_a_crash_loop_is_one_alert_and_an_escalation_not_one_message_per_attempt() -> None:
    t = IncidentTracker()
    out = state(t, "failed", 10.0, failure_class="crashed")
    for i in range(5):
        out += state(t, "recovering", 11.0 + i, old="backoff")
        out += state(t, "backoff", 11.5 + i, old="recovering")
    out += notify(t, "needs_human", 20.0, detail="5 recovery attempt(s) in 600s did not help")
    assert [(n.kind, n.role) for n in out] == [("down", "alert"), ("needs_human", "followup")]
    assert len({n.incident for n in out}) == 1


def test_auth_failure_alerts_once_as_needs_human_and_the_machines_down_notify_is_not_repeated() -> None:
    t = IncidentTracker()
    out = state(t, "failed", 1.0, failure_class="auth")
    out += state(t, "needs_human", 1.0, old="failed", failure_class="auth")
    out += notify(t, "needs_human", 1.0, detail="401; set JIRA_TOKEN")
    out += notify(t, "down", 2.0)
    assert [(n.kind, n.role) for n in out] == [("needs_human", "alert")]
    assert out[0].data["failure_class"] == "auth"


def test_a_server_that_keeps_coming_back_and_dying_is_flapping_once_then_resolved_when_stable() -> None:
    t = IncidentTracker(flap_count=3, flap_window=600.0)
    out = []
    for i in range(6):
        out += state(t, "failed", 100.0 + i * 20)
        out += state(t, "healthy", 105.0 + i * 20, old="recovering")
    kinds = [(n.kind, n.role) for n in out]
    assert kinds == [("down", "alert"), ("recovered", "resolution"), ("down", "alert"), ("recovered", "resolution"),
                     ("flapping", "alert")]
    assert t.tick(205.0 + 599) == []
    resolved = t.tick(205.0 + 601)
    assert [(n.kind, n.role) for n in resolved] == [("recovered", "resolution")]
    assert resolved[0].incident == out[-1].incident


def test_tracker_state_survives_a_restart_no_second_alert_and_the_resolution_still_comes() -> None:
    t = IncidentTracker()
    alert = state(t, "failed", 50.0)
    saved = json.loads(json.dumps(t.to_json()))
    again = IncidentTracker()
    again.load_json(saved)
    assert state(again, "failed", 80.0, old="starting") == []  # still down after the restart: same incident
    up = state(again, "healthy", 90.0, old="failed")
    assert [n.kind for n in up] == ["recovered"] and up[0].incident == alert[0].incident
    assert up[0].data["ttr_s"] == 40.0


def test_vault_and_report_events_become_single_messages() -> None:
    t = IncidentTracker()
    assert t.on_event("backup", None, {"safe": True, "failed_locations": {}}, 1.0) == []
    unsafe = t.on_event("backup", None, {"safe": False, "copies": ["/a"], "failed_locations": {"/b": "ENOSPC"}}, 2.0)
    restored = t.on_event("restore", None, {"config": "cursor", "path": "/h/.cursor/mcp.json", "reason": "watch"}, 3.0)
    report = t.on_event("report", None, {"period": "day", "report": {"health": "GOOD"}}, 4.0)
    assert [n.kind for n in unsafe + restored + report] == ["backup_failed", "config_restored", "report"]
    assert unsafe[0].severity == "critical"


def _blocks_valid(blocks: list[dict[str, object]]) -> None:
    assert blocks and blocks[0]["type"] == "header"
    assert len(json.dumps(blocks)) < 40000
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150  # type: ignore[index]
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= 3000  # type: ignore[index]


def test_every_kind_renders_valid_block_kit_and_text_from_servers_is_escaped() -> None:
    kinds = ["down", "recovered", "needs_human", "fallback", "flapping", "token_expiry", "backup_failed",
             "restore_failed", "config_restored", "report", "test", "something_new"]
    for kind in kinds:
        n = Notification(kind, "warning", "k", "alert", 1_700_000_000.0, "jira",
                         {"detail": "<!channel> boom & <http://evil|x>", "ttr_s": 75.0, "report": {}})
        blocks = slack_blocks(n)
        _blocks_valid(blocks)
        dumped = json.dumps(blocks)
        assert "<!channel>" not in dumped and "<http" not in dumped
        if kind not in ("config_restored", "report", "test"):
            assert "&lt;!channel&gt;" in dumped  # shown, but as text
        assert plain(n)[0]
    recovered = Notification("recovered", "info", "k", "resolution", 0.0, "jira", {"ttr_s": 75.0, "attempts": 1})
    assert "jira recovered after 1m 15s" in fallback_text(recovered)
    assert "Time to recovery" in json.dumps(slack_blocks(recovered))
    assert escape("a<b>&c") == "a&lt;b&gt;&amp;c"


def test_reports_render_whatever_keys_they_carry() -> None:
    full = {"period": "week", "report": {
        "health": "DEGRADED", "servers_total": 4, "servers_healthy": 3, "uptime_pct": 99.2, "recovery_rate": 0.9,
        "mttr_s": 42.0, "recoveries": 9, "failed_servers": ["jira"], "recommendations": ["renew JIRA_TOKEN"],
        "since": 1_700_000_000, "until": 1_700_604_800}}
    n = Notification("report", "info", "r", "single", 1_700_604_800.0, None, full)
    text = json.dumps(slack_blocks(n))
    for expected in ("Weekly MCP reliability report: DEGRADED", "3 of 4", "99.20%", "90%", "42.0s", "jira",
                     "renew JIRA_TOKEN"):
        assert expected in text, expected
    run = Notification("report", "info", "r", "single", 0.0, None,
                       {"period": "run", "report": {"run": {"command": "make nightly", "exit_code": 0}}})
    assert "Guarded run report" in json.dumps(slack_blocks(run)) and "make nightly" in json.dumps(slack_blocks(run))
    empty = Notification("report", "info", "r", "single", 0.0, None, {"period": "day"})
    _blocks_valid(slack_blocks(empty))


def test_needs_human_says_which_token_which_variable_and_which_command(tmp_path: Path) -> None:
    config = parse_config(
        f"""
[supervisor]
state_dir = "{tmp_path}/state"
[[servers]]
name = "jira"
transport = "http"
url = "http://127.0.0.1:9/mcp"
token_env = "JIRA_TOKEN"
[[servers]]
name = "gh"
transport = "http"
url = "${{GH_URL}}"
""",
        tmp_path / "c.toml",
        environ={},
    )
    auth = Notification("needs_human", "critical", "k", "alert", 0.0, "jira", {"failure_class": "auth"})
    text = instruction_for(auth, config)
    assert "JIRA_TOKEN" in text and "supervisorctl-mcp recover jira" in text and "supervisorctl-mcp reload" in text
    missing = Notification("needs_human", "critical", "k", "alert", 0.0, "gh", {"failure_class": "config"})
    assert "GH_URL" in instruction_for(missing, config)
    exhausted = Notification("needs_human", "critical", "k", "alert", 0.0, "jira", {"failure_class": "crashed"})
    assert "jira.log" in instruction_for(exhausted, config)


def test_quiet_hours_hold_low_severity_until_the_end_and_let_critical_through() -> None:
    config = parse_config('[notify]\nquiet_hours = { start = "22:00", end = "07:00", timezone = "UTC" }\n')
    quiet = config.notify.quiet_hours
    night = datetime(2026, 11, 25, 23, 30, tzinfo=UTC).timestamp()
    day = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()
    assert quiet_until(quiet, "warning", night) == datetime(2026, 11, 26, 7, 0, tzinfo=UTC).timestamp()
    assert quiet_until(quiet, "critical", night) == night
    assert quiet_until(quiet, "info", day) == day


def test_retry_delay_doubles_and_is_capped() -> None:
    delays = [retry_delay(n, 1.0, 10.0) for n in range(1, 8)]
    assert 0.8 <= delays[0] <= 1.0 and 1.6 <= delays[1] <= 2.0 and all(d <= 10.0 for d in delays)
    assert delays[-1] >= 8.0


def test_check_config_warns_about_inline_secrets_and_not_about_references() -> None:
    inline = {"notify": {"slack": {"webhook_url": "https://hooks.slack.com/services/T1/B2/abc"},
                         "apprise": {"urls": ["mailto://me:hunter22@example.com", "ntfy://ntfy.sh/topic"]}},
              "slack": {"token": "xoxb-1-2-3"}}
    warnings = inline_secret_warnings(inline)
    assert any("notify.slack.webhook_url" in w and "${SLACK_WEBHOOK_URL}" in w for w in warnings)
    assert any("notify.apprise.urls[0]" in w for w in warnings)
    assert any(w.startswith("slack.token") for w in warnings)
    assert not any("urls[1]" in w for w in warnings)
    assert inline_secret_warnings({"notify": {"slack": {"token": "${SLACK_BOT_TOKEN}", "channel": "#a"}}}) == []
    assert all("hooks.slack.com" not in w and "hunter22" not in w for w in warnings)


def test_config_rejects_half_configured_slack_with_the_fix() -> None:
    import pytest

    from mcp_supervisor.config import ConfigError

    with pytest.raises(ConfigError, match="bot token needs a channel"):
        parse_config('[notify.slack]\ntoken = "${T}"\n', environ={"T": "xoxb-1"})
    with pytest.raises(ConfigError, match="either webhook_url"):
        parse_config("[notify.slack]\nmin_severity = \"warning\"\n")
    with pytest.raises(ConfigError, match="host:port"):
        parse_config('[metrics]\nlisten = "9464"\n')


def test_outbox_orders_per_incident_and_a_due_escalation_releases_its_held_alert(tmp_path: Path) -> None:
    from mcp_supervisor.notify.outbox import Outbox

    box = Outbox(tmp_path / "outbox.sqlite3")
    try:
        now = 1000.0
        alert = Notification("down", "warning", "a@1", "alert", now, "a")
        other = Notification("down", "critical", "b@1", "alert", now, "b")
        box.enqueue([("slack", alert, now + 3600)], None, now)  # held by quiet hours
        box.enqueue([("slack", other, now)], None, now)
        assert [r.incident for r in box.due(now, {"slack"})] == ["b@1"]  # the held one does not block others
        follow = Notification("needs_human", "critical", "a@1", "followup", now, "a")
        box.enqueue([("slack", follow, now)], None, now)
        due = box.due(now, {"slack"})
        assert [(r.incident, r.role) for r in due] == [("a@1", "alert"), ("b@1", "alert")]  # alert first
        box.mark_sent(due[0].id, now, "C1", "1.1")
        assert [(r.incident, r.role) for r in box.due(now, {"slack"})] == [("b@1", "alert"), ("a@1", "followup")]
        assert box.thread_root("slack", "a@1") == ("C1", "1.1")
        assert box.counts() == {"pending": 2, "sent": 1, "dead": 0}
    finally:
        box.close()


def test_outbox_refuses_a_symlink(tmp_path: Path) -> None:
    import pytest

    from mcp_supervisor.notify.outbox import Outbox

    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "outbox.sqlite3").symlink_to(target)
    with pytest.raises(OSError):
        Outbox(tmp_path / "outbox.sqlite3")
