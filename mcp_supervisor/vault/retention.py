"""Which snapshots to keep: ``restic forget --keep-last/--keep-daily/--keep-weekly/--keep-monthly``.

Pure (times in, ids out) so it can be property-tested. Each rule keeps the newest snapshot of each
of its most recent N buckets (day, ISO week, month); a snapshot kept by any rule stays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime


def select_keep(
    snapshots: Iterable[tuple[str, datetime]],
    *,
    keep_last: int,
    keep_daily: int = 0,
    keep_weekly: int = 0,
    keep_monthly: int = 0,
) -> set[str]:
    ordered = sorted(snapshots, key=lambda item: (item[1], item[0]), reverse=True)
    keep: set[str] = {sid for sid, _ in ordered[: max(keep_last, 0)]}

    def by_bucket(count: int, bucket: Callable[[datetime], object]) -> None:
        seen: set[object] = set()
        for sid, when in ordered:
            if len(seen) >= count:
                return
            key = bucket(when)
            if key not in seen:
                seen.add(key)
                keep.add(sid)

    by_bucket(keep_daily, lambda t: t.date())
    by_bucket(keep_weekly, lambda t: t.isocalendar()[:2])
    by_bucket(keep_monthly, lambda t: (t.year, t.month))
    return keep
