"""The daemon's silences and maintenance windows: kept in memory, stored in the record.

Why a book beside the notifier and not inside it: the notifier asks "is this server silenced
now?" on every flush (a list scan, no I/O), the control API adds and ends silences, and the
runtime pauses servers in maintenance; the book is the one place all three read, and every change
is written to the record (``silences`` table) before it is answered, so a daemon restart keeps it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from mcp_supervisor.notify import silences as rules
from mcp_supervisor.notify.outbox import Outbox
from mcp_supervisor.notify.silences import Silence, SilenceError


class SilenceBook:
    def __init__(self) -> None:
        self.items: list[Silence] = []
        self._active: set[str] = set()
        """Ids active at the last ``expired`` call (to notice the ones that ended by themselves)."""

    async def load(self, outbox: Outbox, now: float) -> None:
        self.loaded(await asyncio.to_thread(outbox.load_silences, now), now)

    def loaded(self, rows: list[dict[str, Any]], now: float) -> None:
        """Take the rows ``Outbox.load_silences`` read (in the notifier's one start-up hop)."""
        self.items = [rules.from_row(r) for r in rows]
        self._active = {s.id for s in self.items if s.active(now)}

    def covering(self, server: str | None, kind: str, now: float) -> Silence | None:
        return rules.covering(self.items, server, kind, now)

    def silenced_id(self, server: str, now: float) -> str | None:
        found = rules.covering(self.items, server, "down", now)
        return found.id if found else None

    def maintenance(self, now: float) -> dict[str, Silence]:
        return rules.in_maintenance(self.items, now)

    def listing(self, now: float, include_ended: bool = False) -> list[Silence]:
        return [s for s in self.items if include_ended or s.active(now)]

    async def add(self, outbox: Outbox, kind: str, server: str, seconds: float, now: float, reason: str = "",
                  created_by: str = "", known: Iterable[str] = ()) -> Silence:
        silence = rules.make(kind, server, seconds, now, reason, created_by, known)
        await asyncio.to_thread(outbox.save_silence, silence.to_json())
        self.items.append(silence)
        self._active.add(silence.id)
        return silence

    async def end(self, outbox: Outbox, silence_id: str, now: float) -> Silence:
        found = next((s for s in self.items if s.id == silence_id), None)
        if found is None or not found.active(now):
            raise SilenceError(f"no active silence with id {silence_id!r}; see supervisorctl-mcp silences")
        await asyncio.to_thread(outbox.end_silence, silence_id, now)
        ended = Silence(**{**found.to_json(), "ended_at": now})
        self.items = [ended if s.id == silence_id else s for s in self.items]
        self._active.discard(silence_id)
        return ended

    def expired(self, now: float) -> list[Silence]:
        """The silences that ended by themselves since the last call."""
        gone = [s for s in self.items if s.id in self._active and not s.active(now)]
        self._active -= {s.id for s in gone}
        return gone

    def next_change(self, now: float) -> float | None:
        return rules.next_change(self.items, now)
