"""A report never contradicts itself: the health word and the advice come from one judgement.

The daily/weekly REPORT (``history/report.py``) and the run report (``guard/report.py``) are both
checked over a grid of situations: whenever the word is below GOOD, the first recommendation says
why (and what to do); a person is never told DEGRADED beside "none, all is well"."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from mcp_supervisor.guard.report import RunFacts, build_run_report
from mcp_supervisor.history.metrics import DaemonRun, Interval, Notice, Window
from mcp_supervisor.history.report import Record, build_report

DAY = 86400.0
OK_WORDS = ("EXCELLENT", "GOOD")


def day_of(outage_s: float, down_at_end: str | None, server: str = "jira") -> list[Interval]:
    """``server`` fails once for ``outage_s`` and heals; ``down_at_end`` leaves it in that state."""
    rows = [Interval(server, "healthy", 0, 1000), Interval(server, "failed", 1000, 1000 + outage_s, "crashed")]
    if down_at_end:
        rows += [Interval(server, "healthy", 1000 + outage_s, DAY - 60), Interval(server, down_at_end, DAY - 60, None)]
    else:
        rows.append(Interval(server, "healthy", 1000 + outage_s, None))
    return [*rows, Interval("time", "healthy", 0, None)]


@pytest.mark.parametrize(("outage_s", "down_at_end", "critical"), list(itertools.product(
    (0.5, 600.0, 3000.0, 9000.0), (None, "failed", "needs_human"), (frozenset(), frozenset({"jira"})))))
def test_the_daily_report_word_and_its_top_advice_agree(outage_s: float, down_at_end: str | None,
                                                         critical: frozenset[str]) -> None:
    report = build_report(Record(day_of(outage_s, down_at_end), [DaemonRun(0, None)], began=0), Window(0, DAY),
                          DAY, "day", critical=critical)
    advice = report["recommendations"]
    if report["health"] not in OK_WORDS:  # (a GOOD day may still carry advice: a slow recovery, a token)
        assert advice, report["health"]
        top = advice[0]
        assert "jira" in top and ("uptime was" in top or (down_at_end is not None and down_at_end in top)), top


def test_a_degraded_day_says_which_server_cost_the_uptime() -> None:
    report = build_report(Record(day_of(3000.0, None), [DaemonRun(0, None)], began=0), Window(0, DAY), DAY, "day")
    assert report["health"] == "DEGRADED" and report["failed_servers"] == []
    assert report["recommendations"][0] == ("uptime was 98.26 % in the last 24 h, below 99 %: most of it was jira "
                                            "(50m down); see `supervisorctl-mcp history --server jira`")


def test_a_needs_a_person_notice_stands_for_the_down_at_the_end_reason() -> None:
    notice = Notice(DAY - 60, "jira", "needs_human", "401 Unauthorized: renew JIRA_TOKEN")
    report = build_report(Record(day_of(0.5, "needs_human"), [DaemonRun(0, None)], [], [notice], began=0),
                          Window(0, DAY), DAY, "day", critical={"jira"})
    assert report["health"] == "CRITICAL"
    assert report["recommendations"] == ["jira needs a person: 401 Unauthorized: renew JIRA_TOKEN"]


def run_facts(**overrides: Any) -> RunFacts:
    base: dict[str, Any] = dict(
        run_id="r1", argv=["job.py"], started_at=0.0, finished_at=100.0, required=["jira"],
        precheck={"outcome": "ready"}, servers_before={"jira": {"state": "healthy"}, "time": {"state": "healthy"}},
        servers_after={"jira": {"state": "healthy"}, "time": {"state": "healthy"}}, returncode=0)
    return RunFacts(**{**base, **overrides})


@pytest.mark.parametrize("facts", [
    run_facts(servers_after={"jira": {"state": "failed"}, "time": {"state": "healthy"}}),  # no event seen
    run_facts(daemon={"lost": True}),
    run_facts(fallback=["jira"], servers_after={"jira": {"state": "fallback"}, "time": {"state": "healthy"}}),
    run_facts(events=[{"kind": "state", "server": "time", "new": "failed", "at": 10.0}],
              servers_after={"jira": {"state": "healthy"}, "time": {"state": "failed"}}),
    run_facts(started=False, returncode=None, precheck={}),
])
def test_a_run_report_below_good_always_says_why(facts: RunFacts) -> None:
    report = build_run_report(facts)
    assert report["health"] in ("DEGRADED", "CRITICAL") and report["recommendations"], report["health"]


def test_a_required_server_down_without_an_event_is_critical_and_named() -> None:
    report = build_run_report(run_facts(servers_after={"jira": {"state": "failed"}, "time": {"state": "healthy"}}))
    assert report["health"] == "CRITICAL"
    assert report["recommendations"][0].startswith("jira (required) was failed when the job ended")
