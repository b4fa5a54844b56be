"""When to (re)try and when to hold a message: pure functions of settings and the time."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from mcp_supervisor.config import QuietHours
from mcp_supervisor.notify.incidents import severity_rank


def retry_delay(failures: int, initial: float, maximum: float, rng: random.Random | None = None) -> float:
    """Doubling delay per consecutive failure, capped, with a little jitter (never below 80 %)."""
    ceiling = min(maximum, initial * (2.0 ** max(0, failures - 1)))
    return ceiling * (rng or random).uniform(0.8, 1.0)


def quiet_until(quiet: QuietHours | None, severity: str, now: float) -> float:
    """``now`` if the message may go out now, else when the quiet hours end (wall-clock seconds)."""
    if quiet is None or severity_rank(severity) >= severity_rank(quiet.min_severity):
        return now
    zone = ZoneInfo(quiet.timezone)
    local = datetime.fromtimestamp(now, zone)
    start_h, start_m = (int(x) for x in quiet.start.split(":"))
    end_h, end_m = (int(x) for x in quiet.end.split(":"))
    minutes = local.hour * 60 + local.minute
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start == end:
        return now
    inside = start <= minutes < end if start < end else (minutes >= start or minutes < end)
    if not inside:
        return now
    release = local.replace(hour=end_h, minute=end_m, second=0, microsecond=0)
    if release <= local:
        release += timedelta(days=1)
    return release.timestamp()
