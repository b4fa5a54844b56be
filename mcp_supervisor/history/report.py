"""The REPORT (CONTRACTS.md) from the record, the health word, and when scheduled reports are due.

Pure: the store loads the rows, this turns them into the numbers a person reads. The health word
thresholds (docs/operations.md) are:

- EXCELLENT: uptime >= 99.9 % and every server up at the end of the window;
- GOOD:      uptime >= 99 % and every server up at the end;
- DEGRADED:  uptime >= 95 % and every critical server up at the end;
- CRITICAL:  anything worse (uptime < 95 %, or a critical server down at the end).

With no observed time at all (uptime unknown) the best word is GOOD: nothing proves EXCELLENT.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from mcp_supervisor.history.metrics import (
    DOWN_STATES,
    UP_STATES,
    Attempt,
    DaemonRun,
    Incident,
    Interval,
    Notice,
    Window,
    attempts_in,
    failures_by_class,
    incidents,
    overall_uptime,
    recovery_stats,
    state_seconds,
    states_at,
    unknown_seconds,
    uptime,
)
from mcp_supervisor.history.patterns import Advice, find_patterns, human_seconds, recommendations, span_words

HEALTH_COLOURS = {"EXCELLENT": "green", "GOOD": "green", "DEGRADED": "yellow", "CRITICAL": "red"}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
PERIOD_SECONDS = {"day": 86400.0, "week": 7 * 86400.0}


@dataclass(frozen=True)
class Record:
    """The rows of the record that touch a window (the store loads them)."""

    intervals: list[Interval] = field(default_factory=list)
    runs: list[DaemonRun] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    probe_failures: dict[str, dict[str, int]] = field(default_factory=dict)
    probes: dict[str, int] = field(default_factory=dict)
    began: float | None = None
    """When the record began: time before it is not "unknown", nobody was meant to watch yet."""


@dataclass(frozen=True)
class Judgement:
    """The health word and the advice that explains it, decided together.

    Why one judgement: a report that says DEGRADED and, as its top recommendation, "none, all is
    well" gives two answers. Every reason that lowers the word below GOOD is also an item of
    advice, so the word never stands without its why.
    """

    word: str
    advice: list[Advice] = field(default_factory=list)


def judge(uptime_pct: float | None, down_at_end: dict[str, str], critical: frozenset[str] | set[str],
          down_s: dict[str, float] | None = None, span: str = "in this window") -> Judgement:
    """The word (thresholds above) and, for each reason it is below GOOD, what to do about it.

    ``down_at_end``: {server: state} of the servers down at the window's end; ``down_s``: seconds
    each server was down in the window (names the server that cost the uptime).
    """
    pct = 100.0 if uptime_pct is None else uptime_pct
    advice: list[Advice] = []
    for server, state in sorted(down_at_end.items()):
        role = " (critical)" if server in critical else ""
        advice.append(Advice(0 if role else 1, f"{server}{role} is {state} at the end of the window: see "
                             f"`supervisorctl-mcp status` and its log, then `supervisorctl-mcp recover {server}`",
                             server=server))
    if pct < 99.0:
        floor = "95 %" if pct < 95.0 else "99 %"
        worst = max((down_s or {}).items(), key=lambda item: (item[1], item[0]), default=None)
        cost = (f": most of it was {worst[0]} ({human_seconds(worst[1])} down); see "
                f"`supervisorctl-mcp history --server {worst[0]}`") if worst and worst[1] > 0 else ""
        advice.append(Advice(0 if pct < 95.0 else 1, f"uptime was {pct:.2f} % {span}, below {floor}{cost}"))
    if any(s in critical for s in down_at_end) or pct < 95.0:
        word = "CRITICAL"
    elif down_at_end or pct < 99.0:
        word = "DEGRADED"
    else:
        word = "GOOD" if pct < 99.9 or uptime_pct is None else "EXCELLENT"
    return Judgement(word, advice)


def health_word(uptime_pct: float | None, all_up: bool, critical_up: bool) -> str:
    """The word alone (``judge`` with a stand-in server for "one is down")."""
    down = {} if all_up else {"?": "down"}
    return judge(uptime_pct, down, set() if critical_up else {"?"}).word


def build_report(record: Record, window: Window, now: float, period: str = "custom",
                 critical: frozenset[str] | set[str] = frozenset(), tz: tzinfo = UTC,
                 live_tokens: dict[str, float] | None = None) -> dict[str, Any]:
    """The REPORT object of CONTRACTS.md for ``window`` (``live_tokens``: see ``recommendations``)."""
    seconds = state_seconds(record.intervals, window, now)
    per_uptime = {server: uptime(states) for server, states in seconds.items()}
    overall = overall_uptime(per_uptime)
    found = incidents(record.intervals)
    stats = recovery_stats(found, window, now)
    by_class = failures_by_class(found, window)
    attempts = attempts_in(record.attempts, window)
    edge = min(window.end, now)
    present = states_at(record.intervals, edge)
    healthy = sorted(s for s, st in present.items() if st in UP_STATES)
    failed = sorted(s for s, st in present.items() if st in DOWN_STATES)
    watched_from = Window(max(window.start, record.began), window.end) if record.began is not None else window
    unknown = unknown_seconds(record.runs, watched_from, now)
    patterns = find_patterns(found, record.attempts, record.notices, window, tz)
    down_s = {server: per_uptime[server].down_s for server in seconds}
    verdict = judge(overall.pct, {s: str(present.get(s)) for s in failed}, critical, down_s, span_words(window))
    advice = recommendations(patterns, record.notices, found, window, now, unknown, failed, live_tokens,
                             verdict.advice)
    servers: dict[str, Any] = {}
    incidents_of: dict[str, list[Incident]] = defaultdict(list)
    for inc in found:
        incidents_of[inc.server].append(inc)
    attempts_of: dict[str, list[Attempt]] = defaultdict(list)
    for att in attempts:
        attempts_of[att.server].append(att)
    for server in sorted(seconds):
        up = per_uptime[server]
        own = recovery_stats(incidents_of[server], window, now)
        tried = attempts_of[server]
        servers[server] = {
            "state": present.get(server),
            "uptime_pct": up.pct,
            "up_s": round(up.up_s, 3),
            "down_s": round(up.down_s, 3),
            "paused_s": round(up.paused_s, 3),
            "maintenance_s": round(up.maintenance_s, 3),
            "starting_s": round(up.starting_s, 3),
            "failures": by_class.get(server, {}),
            "probe_failures": record.probe_failures.get(server, {}),
            "probes": record.probes.get(server, 0),
            "recoveries": own.healed,
            "recovery_rate": own.rate,
            "mttr_s": own.mttr_s,
            "attempts": len(tried),
            "attempts_ok": sum(1 for a in tried if a.outcome == "ok"),
        }
    return {
        "period": period,
        "since": window.start,
        "until": window.end,
        "health": verdict.word,
        "servers_total": len(present),
        "servers_healthy": len(healthy),
        "uptime_pct": overall.pct,
        "recovery_rate": stats.rate,
        "mttr_s": stats.mttr_s,
        "recoveries": stats.healed,
        "incidents": stats.healed + stats.unhealed,
        "failed_servers": failed,
        "healthy_servers": healthy,
        "unknown_s": round(unknown, 3),
        "paused_s": round(overall.paused_s, 3),
        "maintenance_s": round(overall.maintenance_s, 3),
        "observed_s": round(overall.observed_s, 3),
        "attempts": len(attempts),
        "patterns": [{"kind": p.kind, "server": p.server, "count": p.count, "detail": p.detail} for p in patterns],
        "recommendations": advice,
        "servers": servers,
    }


def cli_json(report: dict[str, Any]) -> dict[str, Any]:
    """The ``report --json`` shape of issue 9: window / overall / servers (a list) / recommendations."""
    servers = report.get("servers") or {}
    return {
        "window": {"start": report.get("since"), "end": report.get("until")},
        "period": report.get("period"),
        "overall": {
            "health": report.get("health"),
            "uptime_pct": report.get("uptime_pct"),
            "recovery_rate": report.get("recovery_rate"),
            "mttr_s": report.get("mttr_s"),
            "servers_healthy": report.get("servers_healthy"),
            "servers_total": report.get("servers_total"),
            "recoveries": report.get("recoveries"),
            "incidents": report.get("incidents"),
            "unknown_s": report.get("unknown_s"),
            "paused_s": report.get("paused_s"),
            "maintenance_s": report.get("maintenance_s"),
        },
        "servers": [{"name": name, **(info if isinstance(info, dict) else {})} for name, info in servers.items()],
        "healthy_servers": report.get("healthy_servers", []),
        "failed_servers": report.get("failed_servers", []),
        "recommendations": report.get("recommendations", []),
    }


# --- scheduling ---------------------------------------------------------------------------------


def _at(day: date, hhmm: str, tz: tzinfo) -> datetime:
    hour, minute = (int(x) for x in hhmm.split(":"))
    return datetime.combine(day, time(hour, minute), tz)


@dataclass(frozen=True)
class DueReport:
    period: str  # 'day' | 'week'
    key: str  # remembered in the record so a restart does not send it twice
    since: float
    until: float


def due_reports(now: datetime, daily_at: str | None, weekly_on: str | None,
                last_sent: dict[str, str]) -> list[DueReport]:
    """The scheduled reports due at ``now`` (an aware local datetime) that were not sent yet.

    A report missed while the daemon was down is sent once when it comes back the same day
    (daily) or the same week (weekly); older ones are not sent late.
    """
    due: list[DueReport] = []
    if daily_at is None:
        return due
    tz = now.tzinfo or UTC
    today_at = _at(now.date(), daily_at, tz)
    if now >= today_at:
        key = today_at.date().isoformat()
        if last_sent.get("day") != key:
            until = now.timestamp()
            due.append(DueReport("day", key, until - PERIOD_SECONDS["day"], until))
    if weekly_on is not None:
        weekday = WEEKDAYS.index(weekly_on)
        day = now.date() - timedelta(days=(now.weekday() - weekday) % 7)
        scheduled = _at(day, daily_at, tz)
        if now >= scheduled:
            key = f"{day.isocalendar().year}-W{day.isocalendar().week:02d}"
            if last_sent.get("week") != key:
                until = now.timestamp()
                due.append(DueReport("week", key, until - PERIOD_SECONDS["week"], until))
    return due


def next_check(now: datetime, daily_at: str | None) -> float:
    """Seconds until the next moment a scheduled report could be due (at most an hour)."""
    if daily_at is None:
        return 3600.0
    tz = now.tzinfo or UTC
    target = _at(now.date(), daily_at, tz)
    if target <= now:
        target = _at(now.date() + timedelta(days=1), daily_at, tz)
    return max(1.0, min(3600.0, (target - now).total_seconds()))
