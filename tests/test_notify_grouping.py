"""Grouping, inhibition and silences: the pure core, as tables of (input, time) -> messages."""

from __future__ import annotations

import pytest

from mcp_supervisor.notify.causes import DAEMON_STARTING, DOCKER_ENGINE, alert_labels, group_key, headline_cause
from mcp_supervisor.notify.grouping import Grouper, GroupSettings
from mcp_supervisor.notify.incidents import IncidentTracker, Notification
from mcp_supervisor.notify.render import fallback_text, slack_blocks, title
from mcp_supervisor.notify.silences import Silence, SilenceError, covering, in_maintenance, make

S = GroupSettings(group_by=("cause",), group_wait=10.0, group_interval=60.0, repeat_interval=3600.0)


def fail(g: Grouper, t: IncidentTracker, server: str, at: float, cls: str = "refused", reason: str = "",
         old: str = "healthy") -> None:
    for n in t.on_event("state", server, {"old": old, "new": "failed", "failure_class": cls,
                                          "reason": reason or f"{cls}: connection refused"}, at):
        assert g.add(n, alert_labels(server, n.data, n.severity), at) is None


def heal(g: Grouper, t: IncidentTracker, server: str, at: float) -> None:
    for n in t.on_event("state", server, {"old": "recovering", "new": "healthy", "reason": "probe ok"}, at):
        assert g.add(n, alert_labels(server, n.data, n.severity), at) is None


def roles(notes: list[Notification]) -> list[tuple[str, str]]:
    return [(n.kind, n.role) for n in notes]


def test_twelve_failures_within_group_wait_are_one_message_then_updates_then_one_resolution() -> None:
    g, t = Grouper(S), IncidentTracker()
    names = [f"srv{i:02d}" for i in range(12)]
    for i, name in enumerate(names):
        fail(g, t, name, 100.0 + i * 0.1)
    assert g.flush(109.9).notes == []  # group_wait not over
    first = g.flush(110.0)
    assert roles(first.notes) == [("group", "alert")] and first.grouped == 12
    data = first.notes[0].data
    assert data["firing"] == 12 and {m["server"] for m in data["members"]} == set(names)
    assert title(first.notes[0]) == "12 servers down: connection refused; srv00, srv01, srv02, ... (+9)"
    assert all(name in fallback_text(first.notes[0]) or name in str(slack_blocks(first.notes[0])) for name in names)
    for i, name in enumerate(names[:4]):
        heal(g, t, name, 120.0 + i)
    assert g.flush(150.0).notes == []  # group_interval after the first message: not yet
    update = g.flush(170.0).notes
    assert roles(update) == [("group", "followup")] and update[0].data["update"] is True
    assert update[0].data["back"] == 4 and title(update[0]).endswith("; 4 back")
    for i, name in enumerate(names[4:]):
        heal(g, t, name, 200.0 + i)
    assert g.flush(220.0).notes == []
    done = g.flush(230.0).notes
    assert roles(done) == [("group", "resolution")] and done[0].severity == "info"
    assert title(done[0]).startswith("12 servers back after ")
    assert g.groups == {} and g.next_due() is None


def test_one_server_keeps_todays_messages_and_a_blip_inside_group_wait_is_one_note() -> None:
    g, t = Grouper(S), IncidentTracker()
    fail(g, t, "jira", 0.0, "crashed")
    alert = g.flush(10.0).notes
    assert roles(alert) == [("down", "alert")] and title(alert[0]) == "jira is down"
    heal(g, t, "jira", 75.0)
    back = g.flush(75.0).notes
    assert roles(back) == [("recovered", "resolution")] and title(back[0]) == "jira recovered after 1m 15s"
    assert back[0].incident == alert[0].incident
    fail(g, t, "jira", 1000.0, "crashed")
    heal(g, t, "jira", 1002.0)
    blip = g.flush(1010.0).notes
    assert roles(blip) == [("recovered", "single")] and "recovered by itself" in blip[0].data["detail"]


def test_an_escalation_updates_in_place_and_asks_for_a_reply_an_unchanged_group_repeats() -> None:
    g, t = Grouper(S), IncidentTracker()
    fail(g, t, "crashy", 0.0, "crashed")
    g.flush(10.0)
    for n in t.on_event("notify", "crashy", {"notify": "needs_human", "severity": "critical", "detail": "5 tries"}, 20.0):
        g.add(n, {}, 20.0)
    esc = g.flush(70.0).notes
    assert roles(esc) == [("needs_human", "followup")] and esc[0].data["reply"] is True
    repeat = g.flush(70.0 + 3600.0).notes
    assert roles(repeat) == [("needs_human", "followup")] and repeat[0].data["repeat"] is True


@pytest.mark.parametrize(
    ("group_by", "keys"),
    [
        (("cause",), 2),  # refused and timeout
        (("group",), 1),  # every server has the same (empty) group label
        (("server",), 4),
        (("...",), 4),
    ],
)
def test_group_by_decides_which_failures_share_a_message(group_by: tuple[str, ...], keys: int) -> None:
    g, t = Grouper(GroupSettings(group_by=group_by, group_wait=5.0)), IncidentTracker()
    for i, cls in enumerate(["refused", "refused", "timeout", "timeout"]):
        fail(g, t, f"s{i}", 1.0, cls)
    assert len(g.flush(6.0).notes) == keys


def test_a_known_cause_inhibits_whatever_group_by_says_and_leads_the_message() -> None:
    from mcp_supervisor.actuators.container import ContainerState, container_probe_result

    g, t = Grouper(GroupSettings(group_by=("server",), group_wait=5.0)), IncidentTracker()
    for i in range(3):  # the reason the runtime gives when the engine does not answer
        engine = container_probe_result(ContainerState(name=f"c{i}", exists=False, engine_error="ConnectionRefused"))
        fail(g, t, f"box{i}", 1.0, "refused", reason=f"restart (attempt 1) after refused: {engine.message}")
    fail(g, t, "local", 1.0, "crashed", old="starting")
    out = g.flush(6.0)
    assert len(out.notes) == 2 and out.inhibited == 4
    docker = next(n for n in out.notes if n.kind == "group")
    assert title(docker).startswith("3 servers down: Docker engine not answering")
    assert group_key({"cause": DOCKER_ENGINE}, ("server",)) == (("cause", DOCKER_ENGINE),)
    assert g.groups and {k[0][1] for k in (gr.key for gr in g.groups.values())} == {DOCKER_ENGINE, DAEMON_STARTING}


def test_every_http_server_refused_is_the_network() -> None:
    assert headline_cause("refused", {"a", "b", "c"}, frozenset({"a", "b"})) == "network"
    assert headline_cause("refused", {"a"}, frozenset({"a", "b"})) == "refused"
    assert headline_cause("crashed", {"a", "b"}, frozenset({"a", "b"})) == "crashed"


def test_a_silenced_server_is_left_out_recorded_once_and_flows_again_when_the_silence_ends() -> None:
    g, t = Grouper(S), IncidentTracker()
    fail(g, t, "jira", 0.0)
    fail(g, t, "gitlab", 0.0)
    quiet = {"jira": "s1"}
    out = g.flush(10.0, lambda server, now: quiet.get(server) if now < 100.0 else None)
    assert roles(out.notes) == [("down", "alert")] and out.notes[0].server == "gitlab"
    assert out.suppressed == [("jira", "down", "s1")]
    assert g.flush(50.0, lambda s, n: quiet.get(s)).suppressed == []  # not recorded twice
    g.silence_changed(100.0)
    later = g.flush(100.0, lambda s, n: None).notes
    assert roles(later) == [("group", "followup")] and later[0].data["firing"] == 2


def test_a_group_whose_only_member_is_silenced_sends_nothing_even_its_resolution() -> None:
    g, t = Grouper(S), IncidentTracker()
    fail(g, t, "jira", 0.0)
    assert g.flush(10.0, lambda s, n: "s1").notes == []
    heal(g, t, "jira", 20.0)
    g.silence_changed(20.0)
    assert g.flush(20.0, lambda s, n: "s1").notes == [] and g.groups == {}


def test_the_grouping_state_survives_a_restart_as_json() -> None:
    g, t = Grouper(S), IncidentTracker()
    fail(g, t, "a", 0.0)
    fail(g, t, "b", 1.0)
    g.flush(10.0)
    again = Grouper(S)
    again.load_json(g.to_json())
    heal(again, t, "a", 20.0)
    heal(again, t, "b", 21.0)
    assert roles(again.flush(70.0).notes) == [("group", "resolution")]


def test_silences_match_by_server_or_all_never_reports_and_end_by_themselves() -> None:
    one = make("silence", "jira", 3600.0, 100.0, "renewing the token", known=["jira", "gitlab"])
    every = make("silence", "*", 60.0, 100.0)
    assert covering([one], "jira", "down", 200.0) == one
    assert covering([one], "gitlab", "down", 200.0) is None
    assert covering([every], "gitlab", "token_expiry", 120.0) == every
    assert covering([every], None, "report", 120.0) is None
    assert covering([one, every], "jira", "down", 3800.0) is None  # both over
    ended = Silence(**{**one.to_json(), "ended_at": 150.0})
    assert covering([ended], "jira", "down", 200.0) is None
    window = make("maintenance", "jira", 7200.0, 0.0)
    assert set(in_maintenance([window, one], 10.0)) == {"jira"} and in_maintenance([window], 7200.0) == {}


@pytest.mark.parametrize(
    ("kind", "server", "seconds", "fix"),
    [
        ("silence", "nope", 60.0, "no server named 'nope'"),
        ("silence", "jira", 0.0, "--for 1h"),
        ("maintenance", "*", 60.0, "one server at a time"),
        ("mute", "jira", 60.0, "use 'silence' or 'maintenance'"),
    ],
)
def test_a_bad_silence_names_the_fix(kind: str, server: str, seconds: float, fix: str) -> None:
    with pytest.raises(SilenceError, match=fix):
        make(kind, server, seconds, 0.0, known=["jira"])


def test_servers_sharing_a_rejected_token_are_one_message_under_that_token() -> None:
    g, t = Grouper(GroupSettings(group_by=("server",), group_wait=5.0)), IncidentTracker()
    for name in ("jira", "confluence"):
        t.on_event("state", name, {"old": "healthy", "new": "failed", "failure_class": "auth", "reason": "401"}, 1.0)
        for n in t.on_event("notify", name, {"notify": "needs_human", "severity": "critical",
                                             "detail": "401; renew JIRA_TOKEN", "instruction": "renew JIRA_TOKEN"}, 1.0):
            g.add(n, alert_labels(name, n.data, n.severity, {"token": "JIRA_TOKEN", "config": ""}), 1.0)
    out = g.flush(6.0)
    assert len(out.notes) == 1 and out.inhibited == 2
    assert title(out.notes[0]) == "2 servers down: token JIRA_TOKEN rejected; confluence, jira"


def test_the_engine_learned_after_the_alert_moves_not_yet_announced_servers_under_it() -> None:
    g, t = Grouper(GroupSettings(group_by=("cause",), group_wait=5.0)), IncidentTracker()
    fail(g, t, "box1", 1.0, "refused")
    fail(g, t, "box2", 1.0, "refused")
    assert g.reveal("box1", DOCKER_ENGINE, 2.0) and g.reveal("box2", DOCKER_ENGINE, 2.0)
    assert not g.reveal("box2", DOCKER_ENGINE, 2.5)  # already there
    out = g.flush(7.0)
    assert len(out.notes) == 1 and title(out.notes[0]).startswith("2 servers down: Docker engine not answering")
    assert out.inhibited == 2


def test_a_container_restart_that_cannot_reach_the_engine_names_the_engine() -> None:
    reason = "restart failed: ClientConnectorError: Cannot connect to unix socket /run/docker.sock [Connection refused]"
    assert alert_labels("box", {"detail": reason}, "critical", {"container": "box"})["cause"] == DOCKER_ENGINE
    assert alert_labels("web", {"detail": reason, "failure_class": "refused"}, "critical", {})["cause"] == "refused"
