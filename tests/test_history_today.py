"""Today's uptime cells kept incrementally (``history.today.DayUptime`` behind the status page's
``HistoryRecordView``) equal the full recomputation from every interval of the day, at every step
of a day written into a real record (SQLite, the daemon's own ``HistoryDB`` and ``Recorder``)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from mcp_supervisor.events import Event
from mcp_supervisor.history.ingest import Recorder
from mcp_supervisor.history.store import HistoryDB
from mcp_supervisor.history.today import DayUptime
from mcp_supervisor.web.record import HistoryRecordView, daily_cells

DAY = 86400.0
MIDNIGHT = 1_800_000_000.0 - 1_800_000_000.0 % DAY


class Shim:
    """The two HistoryService reads the view uses, straight on the database (same thread)."""

    def __init__(self, db: HistoryDB) -> None:
        self.db = db

    async def interval_rows(self, since: float, after_id: int = 0, also: Any = ()) -> Any:
        return self.db.interval_rows(since, after_id, also)

    async def load_intervals(self, since: float, until: float) -> Any:
        return self.db.load_intervals(since, until)


def test_closed_intervals_fold_once_and_open_ones_are_measured_to_now() -> None:
    day = DayUptime(MIDNIGHT)
    day.fold([(1, "a", "healthy", MIDNIGHT - 500, MIDNIGHT + 100), (2, "a", "failed", MIDNIGHT + 100, None),
              (3, "b", "paused", MIDNIGHT, None)])
    assert day.cells(MIDNIGHT + 200) == {"a": 50.0, "b": None}
    day.fold([(2, "a", "failed", MIDNIGHT + 100, MIDNIGHT + 200), (4, "a", "healthy", MIDNIGHT + 200, None)])
    assert day.cells(MIDNIGHT + 400) == {"a": 75.0, "b": None} and day.last_id == 4 and set(day.open) == {3, 4}


async def test_the_view_matches_a_full_recount_through_a_flapping_day(tmp_path: Path) -> None:
    db = HistoryDB(tmp_path / "history.sqlite3")
    db.open()
    view = HistoryRecordView(Shim(db))
    recorder = Recorder()
    rng = random.Random(16)
    states = ["healthy", "failed", "recovering", "degraded", "paused", "starting"]
    now = MIDNIGHT - 3600.0  # yesterday's last hour too: an interval open across midnight
    try:
        for step in range(300):
            now += rng.uniform(1, 300)
            server = f"s{rng.randrange(5)}"
            recorder.on_event(Event(kind="state", server=server, at=now,
                                    data={"old": recorder.states.get(server), "new": rng.choice(states)}))
            db.apply(recorder.ops, now)
            recorder.ops.clear()
            if step % 7 == 0 and now > MIDNIGHT:
                asked = now + rng.uniform(0, 30)
                incremental = await view._today_cells(asked)
                full = daily_cells(db.load_intervals(MIDNIGHT, asked), 1, asked)
                assert incremental == {name: cells[0] for name, cells in full.items()}, step
    finally:
        db.close()
