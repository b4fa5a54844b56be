"""What each server looks like right now: immutable views the runners publish on every change.

Why a snapshot instead of asking the runners: ``/v1/ready``, ``/v1/status``, the systemd status
line and the metrics scrape are the questions asked most often and most urgently (during an
incident), so they must cost the same whatever else the daemon is doing. A runner publishes a new
``ServerView`` whenever something a reader can see changes (a probe result, a transition, an
action, a process exit); the ``Board`` keeps the latest view per server, the rendered status entry
and the set of servers that do not count as ready, so readiness is a lookup, not a scan, and the
readers never touch a runner or its machine. Nothing here imports the runner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_supervisor.health.model import ProbeResult, State

READY_STATES = frozenset({State.HEALTHY, State.DEGRADED, State.RATE_LIMITED})


@dataclass(frozen=True, slots=True)
class ServerView:
    """One server as readers see it; monotonic times are the event loop's clock."""

    name: str
    critical: bool
    transport: str
    kind: str
    fallback_allowed: bool
    state: State
    since: float
    reason: str
    attempt: int
    result: ProbeResult | None = None
    last_probe_wall: float | None = None
    tool_count: int | None = None
    pid: int | None = None
    started_at: float | None = None
    restarts: int = 0
    last_exit: str | None = None
    next_attempt_at: float | None = None
    maintenance: tuple[str, float, str] | None = None
    """(id, until, reason) of a maintenance window (runtime/maintenance.py): not required for ready."""
    standby: Mapping[str, Any] | None = None
    """The warm standby instance of a managed http/sse server (runtime/standby.py), if it has one."""

    @property
    def ready(self) -> bool:
        """Counts as ready for the job: healthy, degraded, in a fallback the config allows, or in maintenance."""
        if self.state in READY_STATES or self.maintenance is not None or self.on_standby:
            return True
        return self.state is State.FALLBACK and self.fallback_allowed


    @property
    def on_standby(self) -> bool:
        """The primary is not up but its standby is healthy: ready, with a note (readiness)."""
        return self.standby is not None and bool(self.standby.get("healthy")) and self.state not in READY_STATES


class Board:
    """The latest view of every server, kept in config order, with readiness kept incrementally.

    ``render`` turns a view into its status entry once, when it is first read after a change (a
    probe publishes a view: 20 a second at 200 servers; ``status`` is asked far less often);
    readers then copy prepared entries instead of building them per request.
    """

    def __init__(self, render: Callable[[ServerView], dict[str, Any]]) -> None:
        self._render = render
        self.views: dict[str, ServerView] = {}
        self._rendered: dict[str, dict[str, Any]] = {}
        self._stale: set[str] = set()
        self.not_ready: dict[str, ServerView] = {}
        """Servers that do not count as ready, in publication order (the oldest first)."""
        self.fallback: set[str] = set()
        self.limited: dict[str, str] = {}
        """Ready but rate limited (HTTP 429): name -> the reason ("rate limited until ...")."""
        self.standby: dict[str, str] = {}
        """Ready on its standby alone (runtime/standby.py): name -> the note readiness gives."""
        self.ready_version = 0
        """Bumped whenever what ``/v1/ready`` says may change: an answer made for one version is
        the answer until the next (in a storm, 200 failing servers re-publish the same state and
        reason on every probe; the answer is not rebuilt for that)."""

    def put(self, view: ServerView) -> None:
        name = view.name
        before = self.views.get(name)
        if before is None or _ready_facts(before) != _ready_facts(view):
            self.ready_version += 1
        self.views[name] = view
        self._rendered.setdefault(name, {})  # its place in the order; rendered when read
        self._stale.add(name)
        if view.ready:
            self.not_ready.pop(name, None)
        else:
            self.not_ready[name] = view
        if view.state is State.FALLBACK and view.fallback_allowed:
            self.fallback.add(name)
        else:
            self.fallback.discard(name)
        if view.state is State.RATE_LIMITED:
            self.limited[name] = view.reason
        else:
            self.limited.pop(name, None)
        if view.on_standby and view.standby is not None:
            self.standby[name] = (f"the primary is {view.state} ({view.reason}); the standby on port "
                                  f"{view.standby.get('port')} is healthy and serves")
        else:
            self.standby.pop(name, None)

    @property
    def rendered(self) -> dict[str, dict[str, Any]]:
        """Every server's status entry, in the views' order."""
        for name in self._stale:
            view = self.views.get(name)
            if view is not None:
                self._rendered[name] = self._render(view)
        self._stale.clear()
        return self._rendered

    def remove(self, name: str) -> None:
        self.ready_version += 1
        self.views.pop(name, None)
        self._rendered.pop(name, None)
        self._stale.discard(name)
        self.not_ready.pop(name, None)
        self.fallback.discard(name)
        self.limited.pop(name, None)
        self.standby.pop(name, None)

    def reorder(self, names: Iterable[str]) -> None:
        """Keep ``names``' order (the config's) for status output; views not named are dropped."""
        self.ready_version += 1
        order = [n for n in names if n in self.views]
        self.views = {n: self.views[n] for n in order}
        rendered = self.rendered
        self._rendered = {n: rendered[n] for n in order}
        for gone in [n for n in self.not_ready if n not in self.views]:
            del self.not_ready[gone]
        self.fallback &= set(order)
        self.limited = {n: r for n, r in self.limited.items() if n in self.views}
        self.standby = {n: r for n, r in self.standby.items() if n in self.views}

    @property
    def ready_count(self) -> int:
        return len(self.views) - len(self.not_ready)

    def __len__(self) -> int:
        return len(self.views)


def _ready_facts(view: ServerView) -> tuple[object, ...]:
    """What a readiness answer reads of a view (a change in anything else leaves it as it was)."""
    return (view.ready, view.critical, view.fallback_allowed, view.state,
            None if view.ready and view.state is not State.RATE_LIMITED and not view.on_standby else view.reason)
