"""The event bus: everything that happens is an event, fanned out to subscribers.

Why bounded queues: a slow subscriber (a stalled SSE client, a dashboard in a frozen terminal)
must never block the supervisor or grow memory without bound; it loses its oldest events and is
told so with a ``lagged`` event instead.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_sequence = itertools.count(1)


@dataclass(frozen=True)
class Event:
    kind: str
    """e.g. 'state', 'probe', 'action', 'action_done', 'config', 'backup', 'daemon'."""
    server: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    seq: int = field(default_factory=lambda: next(_sequence))

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "server": self.server, "at": self.at, **self.data}


class EventBus:
    def __init__(self, queue_size: int = 1000) -> None:
        self._subscribers: dict[asyncio.Queue[Event], frozenset[str] | None] = {}
        self._queue_size = queue_size

    def publish(self, event: Event) -> None:
        for queue, kinds in list(self._subscribers.items()):
            if kinds is not None and event.kind not in kinds:
                continue
            if queue.full():
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:  # pragma: no cover - single-threaded, cannot race
                    pass
                queue.put_nowait(Event(kind="lagged", data={"dropped": 1}))
                continue
            queue.put_nowait(event)

    @contextmanager
    def subscription(self, size: int | None = None, kinds: frozenset[str] | None = None) -> Any:
        """``size`` overrides the bound for a subscriber that drains in memory (e.g. the record);
        ``kinds``: only events of these kinds (and ``lagged``) are queued. Why: a probe event per
        check (20 a second at 200 servers) would otherwise wake every subscriber that ignores it."""
        queue: asyncio.Queue[Event] = asyncio.Queue(self._queue_size if size is None else size)
        self._subscribers[queue] = kinds
        try:
            yield queue
        finally:
            self._subscribers.pop(queue, None)

    async def stream(self) -> AsyncIterator[Event]:
        with self.subscription() as queue:
            while True:
                yield await queue.get()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
