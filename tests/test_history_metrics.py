"""Metrics on hand-built records with known answers (to the second): uptime with paused, starting and
unknown time excluded, windows that cut through intervals, daemon restarts, MTTR, recovery rate,
failure patterns, advice, the health word and the report schedule. Pure: no database, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mcp_supervisor.health.tokens import expiry_message
from mcp_supervisor.history.metrics import (
    Attempt,
    DaemonRun,
    Interval,
    Notice,
    Window,
    incidents,
    recovery_stats,
    state_seconds,
    unknown_seconds,
    uptime,
)
from mcp_supervisor.history.patterns import find_patterns, recommendations
from mcp_supervisor.history.report import Record, build_report, cli_json, due_reports, health_word


def iv(server: str, state: str, start: float, end: float | None, cls: str | None = None) -> Interval:
    return Interval(server, state, start, end, cls)


# one day of a small fleet: a recovers from a timeout in 30 s, b is paused for 300 s
FLEET = [
    iv("a", "healthy", 0, 400), iv("a", "failed", 400, 410, "timeout"), iv("a", "recovering", 410, 430, "timeout"),
    iv("a", "healthy", 430, None),
    iv("b", "healthy", 0, 200), iv("b", "paused", 200, 500), iv("b", "starting", 500, 510), iv("b", "healthy", 510, None),
]
# a daemon that crashed at 300 (intervals closed at its last heartbeat) and came back at 400
CRASHED = [
    iv("a", "healthy", 0, 100), iv("a", "failed", 100, 300, "crashed"),
    iv("a", "starting", 400, 405), iv("a", "healthy", 405, None),
]
# windows cut through: failure 200..260
CUT = [iv("a", "healthy", 0, 200), iv("a", "failed", 200, 260, "refused"), iv("a", "healthy", 260, None)]


@pytest.mark.parametrize(
    ("intervals", "runs", "window", "now", "server", "pct", "paused", "starting", "unknown"),
    [
        (FLEET, [DaemonRun(0, None)], (0, 1000), 1000, "a", 97.0, 0, 0, 0),
        (FLEET, [DaemonRun(0, None)], (0, 1000), 1000, "b", 100.0, 300, 10, 0),
        (CRASHED, [DaemonRun(0, 300), DaemonRun(400, None)], (0, 1000), 1000, "a", 695 / 895 * 100, 0, 5, 100),
        (CUT, [DaemonRun(0, None)], (150, 350), 1000, "a", 70.0, 0, 0, 0),
        (CUT, [DaemonRun(0, None)], (230, 250), 1000, "a", 0.0, 0, 0, 0),
        # a window reaching into the future: open intervals end at now, the future is not unknown
        (CUT, [DaemonRun(0, None)], (0, 2000), 1000, "a", 940 / 1000 * 100, 0, 0, 0),
        # nothing observed: uptime unknown, not 100 %
        ([iv("a", "paused", 0, None)], [DaemonRun(0, None)], (0, 100), 100, "a", None, 100, 0, 0),
    ],
)
def test_uptime_excludes_paused_starting_and_unknown_time(
    intervals: list[Interval], runs: list[DaemonRun], window: tuple[float, float], now: float, server: str,
    pct: float | None, paused: float, starting: float, unknown: float,
) -> None:
    w = Window(*window)
    up = uptime(state_seconds(intervals, w, now)[server])
    assert up.pct == (pytest.approx(pct, abs=1e-3) if pct is not None else None)
    assert (up.paused_s, up.starting_s) == (paused, starting)
    assert unknown_seconds(runs, w, now) == unknown


def test_overall_uptime_is_time_weighted_and_unknown_is_shown() -> None:
    report = build_report(Record(FLEET, [DaemonRun(0, 300), DaemonRun(400, None)]), Window(0, 1000), 1000)
    assert report["uptime_pct"] == pytest.approx(1660 / 1690 * 100, abs=1e-3)
    assert (report["unknown_s"], report["paused_s"]) == (100, 300)
    assert report["servers"]["b"]["paused_s"] == 300 and report["servers"]["b"]["starting_s"] == 10


@pytest.mark.parametrize(
    ("intervals", "window", "now", "healed", "unhealed", "rate", "mttr"),
    [
        (FLEET, (0, 1000), 1000, 1, 0, 1.0, 30.0),
        (CRASHED, (0, 1000), 1000, 0, 0, None, None),  # interrupted by the daemon's absence: no verdict
        (CUT, (150, 350), 1000, 1, 0, 1.0, 60.0),
        (CUT, (250, 400), 1000, 1, 0, 1.0, 60.0),  # began before the window: its real duration
        (CUT, (230, 250), 1000, 0, 1, 0.0, None),  # still down at the window's end
        (CUT, (0, 150), 1000, 0, 0, None, None),
        # two healed (10 s, 50 s) and one still down now
        ([iv("a", "healthy", 0, 10), iv("a", "failed", 10, 20, "crashed"), iv("a", "healthy", 20, 30),
          iv("a", "backoff", 30, 80, "timeout"), iv("a", "degraded", 80, 90),
          iv("a", "needs_human", 90, None, "auth")], (0, 200), 200, 2, 1, 0.6667, 30.0),
        # a pause in the middle of an incident ends it without a verdict
        ([iv("a", "failed", 0, 50), iv("a", "paused", 50, 60), iv("a", "starting", 60, 61),
          iv("a", "healthy", 61, None)], (0, 100), 100, 0, 0, None, None),
    ],
)
def test_recovery_rate_and_mttr(intervals: list[Interval], window: tuple[float, float], now: float, healed: int,
                                unhealed: int, rate: float | None, mttr: float | None) -> None:
    stats = recovery_stats(incidents(intervals), Window(*window), now)
    assert (stats.healed, stats.unhealed, stats.rate, stats.mttr_s) == (healed, unhealed, rate, mttr)


def test_failures_by_class_come_from_the_incidents_in_the_window() -> None:
    report = build_report(Record(FLEET + CUT[:0]), Window(0, 1000), 1000)
    assert report["servers"]["a"]["failures"] == {"timeout": 1} and report["servers"]["b"]["failures"] == {}
    assert report["incidents"] == 1 and report["recoveries"] == 1 and report["mttr_s"] == 30.0


@pytest.mark.parametrize(
    ("uptime_pct", "all_up", "critical_up", "word"),
    [
        (99.95, True, True, "EXCELLENT"),
        (99.9, True, True, "EXCELLENT"),
        (99.5, True, True, "GOOD"),
        (99.95, False, True, "DEGRADED"),  # a non-critical server is down now
        (97.0, True, True, "DEGRADED"),
        (94.9, True, True, "CRITICAL"),
        (100.0, False, False, "CRITICAL"),  # a critical server is down now
        (None, True, True, "GOOD"),  # nothing observed proves nothing
    ],
)
def test_health_word_thresholds(uptime_pct: float | None, all_up: bool, critical_up: bool, word: str) -> None:
    assert health_word(uptime_pct, all_up, critical_up) == word


def test_report_lists_healthy_and_failed_servers_at_the_end_and_uses_criticality() -> None:
    intervals = [iv("jira", "healthy", 0, 500), iv("jira", "needs_human", 500, None, "auth"),
                 iv("time", "healthy", 0, None)]
    runs = [DaemonRun(0, None)]
    critical = build_report(Record(intervals, runs), Window(0, 1000), 1000, "day", critical={"jira"})
    assert (critical["healthy_servers"], critical["failed_servers"]) == (["time"], ["jira"])
    assert (critical["servers_healthy"], critical["servers_total"], critical["health"]) == (1, 2, "CRITICAL")
    relaxed = build_report(Record(intervals, runs), Window(0, 1000), 1000, "day", critical={"time"})
    assert relaxed["health"] == "CRITICAL"  # 75 % uptime is critical on its own
    assert cli_json(relaxed)["overall"]["servers_total"] == 2
    assert [s["name"] for s in cli_json(relaxed)["servers"]] == ["jira", "time"]


# --- patterns and advice ---------------------------------------------------------------------------

DAY = 86400.0
T0 = datetime(2026, 11, 20, tzinfo=UTC).timestamp()


def incident_at(server: str, start: float, seconds: float, cls: str) -> list[Interval]:
    return [iv(server, "failed", start, start + seconds, cls), iv(server, "healthy", start + seconds, start + seconds + 1)]


def test_recurring_flapping_slow_and_hour_of_day_patterns() -> None:
    rows: list[Interval] = []
    for k in range(3):  # flapping: three crashes within 20 minutes, each back in 5 s
        rows += incident_at("notes", T0 + 3600 + k * 600, 5, "crashed")
    for day in range(3):  # every morning around 09:05, slow to come back (5 minutes)
        rows += incident_at("gitlab", T0 + day * DAY + 9 * 3600 + 300, 300, "timeout")
    window = Window(T0, T0 + 7 * DAY)
    found = {(p.kind, p.server): p for p in find_patterns(incidents(rows), [], [], window, UTC)}
    assert found[("recurring", "notes")].count == 3 and found[("recurring", "notes")].detail == "crashed"
    assert found[("flapping", "notes")].count == 3
    assert found[("slow", "gitlab")].detail == "5m"
    assert found[("hour", "gitlab")].detail == "09:00"
    assert ("hour", "notes") not in found  # all on one day: that is flapping, not a daily habit
    assert ("slow", "notes") not in found
    advice = recommendations(find_patterns(incidents(rows), [], [], window, UTC), [], incidents(rows), window,
                             window.end)
    assert any(a.startswith("notes is flapping (3 incidents within an hour)") for a in advice)
    assert "gitlab fails mostly around 09:00: look for a job at that hour (backups, cron, token refresh)" in advice
    assert any(a.startswith("gitlab takes 5m on average to come back") for a in advice)


def test_advice_for_an_oom_loop_and_an_expiring_token() -> None:
    now = T0 + DAY
    window = Window(T0, now)
    attempts = [Attempt("gitlab", "restart", k + 1, T0 + 3600 * (k + 1), T0 + 3600 * (k + 1) + 2, "ok",
                        "container exited (OOMKilled)") for k in range(4)]
    expires = datetime.fromtimestamp(now, UTC) + timedelta(days=2, hours=20)
    token = Notice(T0 - 4 * DAY, "jira", "token_expiry",
                   expiry_message("jira", "JIRA_TOKEN", expires, "7d"), {"level": "7d"})
    advice = recommendations(find_patterns([], attempts, [token], window, UTC), [token], [], window, now)
    assert advice[:2] == [
        "gitlab restarted 4 times in the last 24 h after OOM: raise its memory limit",
        "renew the jira token: it expires in 3 days",
    ]
    expired = recommendations([], [token], [], window, expires.timestamp() + 60)
    assert expired == [f"renew the jira token: it expired on {expires:%Y-%m-%d %H:%M} UTC"]


def test_advice_when_the_supervisor_itself_was_not_watching() -> None:
    window = Window(0, DAY)
    record = Record([iv("a", "healthy", 0, 3600), iv("a", "healthy", 10800, None)],
                    [DaemonRun(0, 3600), DaemonRun(10800, None)], began=0)
    report = build_report(record, window, DAY)
    assert report["unknown_s"] == 7200 and report["uptime_pct"] == 100.0
    assert report["recommendations"] == [
        "the supervisor was not watching for 2.0h in the last 24 h: check why it stopped (journalctl -u mcp-supervisor)"
    ]
    fresh = build_report(Record(record.intervals, record.runs, began=10800), Window(0, DAY), DAY)
    assert fresh["unknown_s"] == 0  # before the record began nobody was meant to watch


# --- the schedule ---------------------------------------------------------------------------------

TZ = UTC


@pytest.mark.parametrize(
    ("now", "last", "expected"),
    [
        (datetime(2026, 11, 23, 9, 29, tzinfo=TZ), {}, []),  # a Monday, before 09:30
        (datetime(2026, 11, 23, 9, 30, tzinfo=TZ), {}, [("day", "2026-11-23"), ("week", "2026-W48")]),
        (datetime(2026, 11, 23, 9, 31, tzinfo=TZ), {"day": "2026-11-23", "week": "2026-W48"}, []),
        (datetime(2026, 11, 24, 14, 0, tzinfo=TZ), {"day": "2026-11-23", "week": "2026-W48"},
         [("day", "2026-11-24")]),  # missed while down this morning: sent once on return
        (datetime(2026, 11, 25, 9, 30, tzinfo=TZ), {"day": "2026-11-24", "week": "2026-W47"},
         [("day", "2026-11-25"), ("week", "2026-W48")]),  # Monday's weekly missed: sent that week
    ],
)
def test_due_reports(now: datetime, last: dict[str, str], expected: list[tuple[str, str]]) -> None:
    due = due_reports(now, "09:30", "monday", last)
    assert [(d.period, d.key) for d in due] == expected
    for d in due:
        assert d.until == now.timestamp() and d.until - d.since == (DAY if d.period == "day" else 7 * DAY)


def test_due_reports_off() -> None:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=TZ)
    assert due_reports(now, None, "monday", {}) == []
    assert [d.period for d in due_reports(now, "09:30", None, {})] == ["day"]


def test_live_token_expiry_wins_over_old_notices() -> None:
    now = T0 + DAY
    window = Window(T0, now)
    warned = datetime.fromtimestamp(now, UTC) + timedelta(days=3)
    notice = Notice(T0, "jira", "token_expiry", expiry_message("jira", "JIRA_TOKEN", warned, "7d"))
    renewed = {"jira": now + 60 * DAY}
    assert recommendations([], [notice], [], window, now, live_tokens=renewed) == []
    soon = {"jira": now + 60 * DAY, "gitlab": now + 1.5 * DAY}
    assert recommendations([], [notice], [], window, now, live_tokens=soon) == [
        "renew the gitlab token: it expires in 2 days"]
    assert recommendations([], [], [], window, now, live_tokens={"gitlab": now + 3600}) == [
        "renew the gitlab token: it expires within a day"]


def test_a_maintenance_window_is_neither_up_nor_down_and_ends_an_incident_without_a_verdict() -> None:
    rows = [Interval("gitlab", "healthy", 0, 100), Interval("gitlab", "failed", 100, 150),
            Interval("gitlab", "paused", 150, 151), Interval("gitlab", "maintenance", 151, 751),
            Interval("gitlab", "starting", 751, 752), Interval("gitlab", "healthy", 752, None)]
    report = build_report(Record(rows, [DaemonRun(0, None)]), Window(0, 1000), 1000)
    server = report["servers"]["gitlab"]
    assert server["maintenance_s"] == 600 and server["down_s"] == 50 and report["maintenance_s"] == 600
    assert server["uptime_pct"] == pytest.approx(348 / 398 * 100, abs=1e-3)
    assert [i.outcome for i in incidents(rows)] == ["interrupted"]
    assert cli_json(report)["overall"]["maintenance_s"] == 600


def test_proxy_counts_fold_onto_the_incident_they_happened_in() -> None:
    from mcp_supervisor.history.proxy_counts import Episode, add_to

    intervals = [iv("pay", "healthy", 0, 100), iv("pay", "failed", 100, 101, "crashed"),
                 iv("pay", "recovering", 101, 102), iv("pay", "healthy", 102, None)]
    episodes = [Episode("pay", 99.5, 102.5, held=3, retried=3, failed=0, max_held_s=0.6),  # just before the probe saw it
                Episode("pay", 100.5, 101.8, held=1, retried=0, failed=1, max_held_s=1.2),
                Episode("pay", 150.0, 152.0, held=2, retried=2, failed=0, max_held_s=2.0)]  # a rate limit: no incident
    report: dict[str, object] = {"servers": {"pay": {"uptime_pct": 99.0}}}
    add_to(report, intervals, episodes, Window(0, 200))
    proxy = report["servers"]["pay"]["proxy"]  # type: ignore[index]
    assert (proxy["held"], proxy["retried"], proxy["failed"]) == (6, 5, 1)
    during, outside = proxy["incidents"]
    assert during["incident"] == {"start": 100, "end": 102, "failure_class": "crashed"}
    assert (during["held"], during["failed"], during["max_held_s"]) == (4, 1, 1.2)
    assert outside["incident"] is None and outside["held"] == 2
