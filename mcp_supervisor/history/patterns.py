"""Failure patterns and the plain-language advice derived from them: pure functions.

Why advice and not only numbers: the person reading a morning report wants to know what to do
("renew the jira token: it expires in 3 days"), not to interpret a table. Each rule is small,
names the server and the evidence, and gets a priority so the report can lead with the most
urgent one.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from mcp_supervisor.history.metrics import Attempt, Incident, Notice, Window

RECURRING_MIN = 3
"""The same server failing with the same class this many times in a window is a pattern."""
FLAP_COUNT = 3
FLAP_SPAN = 3600.0
"""This many incidents of one server starting within FLAP_SPAN seconds is flapping."""
SLOW_MTTR = 120.0
"""A server whose healed incidents took longer than this on average is slow to come back."""
HOUR_SHARE = 0.6
HOUR_MIN = 3
"""At least HOUR_MIN incidents on two or more days, HOUR_SHARE of them in one hour of the day."""
OOM_RE = re.compile(r"\boom(?:killed)?\b|out of memory", re.I)
_EXPIRY_RE = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}) UTC")


@dataclass(frozen=True)
class Pattern:
    kind: str  # 'recurring' | 'flapping' | 'slow' | 'hour' | 'oom'
    server: str
    count: int
    detail: str


@dataclass(frozen=True)
class Advice:
    priority: int  # lower first
    text: str
    server: str | None = None
    """Set on the judgement's "X is down at the end" items: a more precise item may stand for it."""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def span_words(window: Window) -> str:
    days = window.length / 86400.0
    if days <= 1.01:
        return "in the last 24 h"
    if 6.9 <= days <= 7.1:
        return "this week"
    return f"in the last {round(days)} days" if days >= 2 else "in this window"


def human_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def find_patterns(found: Sequence[Incident], attempts: Sequence[Attempt], notices: Sequence[Notice],
                  window: Window, tz: tzinfo = UTC) -> list[Pattern]:
    inside = [i for i in found if window.start <= i.start < window.end]
    by_server: dict[str, list[Incident]] = defaultdict(list)
    for inc in inside:
        by_server[inc.server].append(inc)
    patterns: list[Pattern] = []
    for server, incs in sorted(by_server.items()):
        classes = Counter(i.failure_class or "unknown" for i in incs)
        for cls, n in classes.most_common():
            if n >= RECURRING_MIN:
                patterns.append(Pattern("recurring", server, n, cls))
        starts = sorted(i.start for i in incs)
        most = max((sum(1 for t in starts[k:] if t - s <= FLAP_SPAN) for k, s in enumerate(starts)), default=0)
        if most >= FLAP_COUNT:
            patterns.append(Pattern("flapping", server, most, f"{most} incidents within an hour"))
        healed = [i.duration(window.end) for i in incs if i.outcome == "healed"]
        if healed and sum(healed) / len(healed) > SLOW_MTTR:
            mean = sum(healed) / len(healed)
            patterns.append(Pattern("slow", server, len(healed), human_seconds(mean)))
        local = [datetime.fromtimestamp(t, tz) for t in starts]
        if len(local) >= HOUR_MIN and len({d.date() for d in local}) >= 2:
            hour, n = Counter(d.hour for d in local).most_common(1)[0]
            if n / len(local) >= HOUR_SHARE:
                patterns.append(Pattern("hour", server, n, f"{hour:02d}:00"))
    oom_servers: Counter[str] = Counter()
    for notice in notices:
        if notice.server and window.start <= notice.at < window.end and (
            notice.kind == "oom" or OOM_RE.search(notice.detail or "")
        ):
            oom_servers[notice.server] += 1
    for attempt in attempts:
        if window.start <= attempt.started < window.end and OOM_RE.search(attempt.detail or ""):
            oom_servers[attempt.server] += 1
    for server, n in sorted(oom_servers.items()):
        restarts = sum(1 for a in attempts if a.server == server and window.start <= a.started < window.end)
        patterns.append(Pattern("oom", server, max(restarts, n), "out of memory"))
    return patterns


def token_expiry(notice: Notice) -> datetime | None:
    """When the token of a ``token_expiry`` notice expires: ``expires_at`` if given, else from the text."""
    raw = notice.data.get("expires_at")
    if isinstance(raw, int | float) and math.isfinite(raw):
        return datetime.fromtimestamp(raw, UTC)
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    match = _EXPIRY_RE.search(notice.detail or "")
    if match:
        return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    return None


def _token_advice(server: str, expires: datetime, now: float) -> Advice | None:
    left = expires.timestamp() - now
    if left <= 0:
        return Advice(0, f"renew the {server} token: it expired on {expires:%Y-%m-%d %H:%M} UTC")
    days = math.ceil(left / 86400)
    if days > 7:
        return None
    when = "within a day" if days <= 1 else f"in {days} days"
    return Advice(1 if days <= 1 else 2, f"renew the {server} token: it expires {when}")


def recommendations(patterns: Iterable[Pattern], notices: Sequence[Notice], found: Sequence[Incident],
                    window: Window, now: float, unknown_s: float = 0.0,
                    down_at_end: Iterable[str] = (), live_tokens: dict[str, float] | None = None,
                    verdict: Iterable[Advice] = ()) -> list[str]:
    """Plain-language advice, most urgent first; each names the server and the evidence.

    ``verdict``: the reasons behind the report's health word (``report.judge``); they lead, so the
    word and the top recommendation are one answer. A server's "down at the end" reason gives way
    to its "needs a person" notice, which says the same more precisely.

    ``live_tokens`` ({server: expiry as a Unix time}, read from the running config when the window
    ends now) wins over past ``token_expiry`` notices: a token renewed since is not nagged about.
    """
    advice: list[Advice] = []
    span = span_words(window)
    latest_token: dict[str, Notice] = {}
    latest_human: dict[str, Notice] = {}
    for notice in sorted(notices, key=lambda n: n.at):
        if notice.server is None or notice.at >= window.end:
            continue
        if notice.kind == "token_expiry":
            latest_token[notice.server] = notice
        elif notice.kind == "needs_human" and notice.at >= window.start:
            latest_human[notice.server] = notice
    down = set(down_at_end)
    told = {server for server in latest_human if server in down}
    advice.extend(a for a in verdict if a.server is None or a.server not in told)  # first among equals
    if live_tokens is not None:
        latest_token = {}
        for server, expiry in sorted(live_tokens.items()):
            item = _token_advice(server, datetime.fromtimestamp(expiry, UTC), now)
            if item is not None:
                advice.append(item)
    for server, notice in sorted(latest_token.items()):
        expires = token_expiry(notice)
        if expires is None:
            advice.append(Advice(1, f"renew the {server} token: {notice.detail}"))
            continue
        item = _token_advice(server, expires, now)
        if item is not None:
            advice.append(item)
    for server, notice in sorted(latest_human.items()):
        if server in told:
            advice.append(Advice(0, f"{server} needs a person: {notice.detail}" if notice.detail
                                 else f"{server} needs a person (auth or config); see `supervisorctl-mcp status`"))
    for p in patterns:
        if p.kind == "oom":
            advice.append(Advice(1, f"{p.server} restarted {_plural(p.count, 'time')} {span} after OOM: "
                                    "raise its memory limit"))
        elif p.kind == "flapping":
            advice.append(Advice(2, f"{p.server} is flapping ({p.detail}): look at its log for why it keeps dying "
                                    "soon after a restart"))
        elif p.kind == "recurring":
            fix = {
                "timeout": "it answers too slowly; check its load or raise probe.timeout",
                "refused": "nothing listens on its port at times; check what stops it",
                "crashed": "its process keeps exiting; read its log",
                "oom": "the kernel kills it for memory; raise limits.memory or find what makes it grow",
                "auth": "its credentials are rejected; renew the token",
                "config": "its command or environment is wrong; run `supervisorctl-mcp check-config`",
                "protocol": "it answers with malformed MCP; check its version",
            }.get(p.detail, "look at its log")
            advice.append(Advice(3, f"{p.server} failed {_plural(p.count, 'time')} {span} with {p.detail}: {fix}"))
        elif p.kind == "slow":
            advice.append(Advice(3, f"{p.server} takes {p.detail} on average to come back: check its start-up "
                                    "(dependencies, cold caches) or give it a faster recovery rung"))
        elif p.kind == "hour":
            advice.append(Advice(4, f"{p.server} fails mostly around {p.detail}: look for a job at that hour "
                                    "(backups, cron, token refresh)"))
    if unknown_s >= max(600.0, 0.05 * window.length):
        advice.append(Advice(3, f"the supervisor was not watching for {human_seconds(unknown_s)} {span}: check why "
                                "it stopped (journalctl -u mcp-supervisor)"))
    advice.sort(key=lambda a: a.priority)
    seen: set[str] = set()
    ordered = []
    for item in advice:
        if item.text not in seen:
            seen.add(item.text)
            ordered.append(item.text)
    return ordered
