"""A guarded run's timeline: incidents and unobserved gaps folded from the events it saw (pure).

Why apart from the report: what *happened* (an incident opens when a server leaves
healthy/degraded for a bad state and closes when it is healthy or degraded again; time the
guardian could not watch is a gap) is fact; what the report *says* about it (uptime, the health
word, advice) is judgement, in ``report.py``. The pre-check and the watcher use the state sets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GOOD_STATES = frozenset({"healthy", "degraded", "rate_limited"})
BAD_STATES = frozenset({"failed", "recovering", "backoff", "fallback", "needs_human"})
RECOVERABLE_STATES = frozenset({"failed", "backoff"})
"""States in which the guardian asks the daemon to recover a required server at once."""
NO_RESTART_CLASSES = frozenset({"auth", "config"})
"""A restart cannot fix these (a person must act); the guardian never asks for one."""

MAX_ACTIONS = 20
"""The recovery actions one incident lists (the newest): a server flapping through a long job
must not make the report too big for the record, the API (1 MB bodies) or Slack."""


@dataclass
class Incident:
    server: str
    started_at: float
    required: bool
    failure_class: str | None = None
    reason: str = ""
    states: list[str] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    recovered_at: float | None = None
    recover_requested_at: float | None = None
    open_at_start: bool = False

    def to_json(self) -> dict[str, Any]:
        ttr = None if self.recovered_at is None else round(max(0.0, self.recovered_at - self.started_at), 3)
        return {
            "server": self.server,
            "required": self.required,
            "failure_class": self.failure_class,
            "reason": self.reason,
            "states": list(self.states),
            "started_at": round(self.started_at, 3),
            "recovered_at": None if self.recovered_at is None else round(self.recovered_at, 3),
            "time_to_recovery_s": ttr,
            "resolved": self.recovered_at is not None,
            "open_at_start": self.open_at_start,
            "recover_requested_at": None if self.recover_requested_at is None else round(self.recover_requested_at, 3),
            "actions": list(self.actions),
        }


@dataclass
class Gap:
    """A stretch the guardian could not watch (the daemon was unreachable)."""

    lost_at: float
    back_at: float | None = None


@dataclass
class RunTimeline:
    """Incidents and unobserved gaps folded from the events seen during the run."""

    incidents: list[Incident]
    gaps: list[Gap]
    notes: list[str]
    lagged: int = 0


def fold_events(
    events: Iterable[Mapping[str, Any]],
    initial_states: Mapping[str, str],
    required: Iterable[str],
    started_at: float,
) -> RunTimeline:
    """Incidents from the daemon's events (``kind`` state/action/action_done/lagged/daemon) and the
    guardian's own (``kind`` "guardian": daemon_lost, daemon_back, recover_requested)."""
    needed = set(required)
    open_by_server: dict[str, Incident] = {}
    incidents: list[Incident] = []
    gaps: list[Gap] = []
    notes: list[str] = []
    lagged = 0
    for name, state in initial_states.items():
        if state in BAD_STATES:
            incident = Incident(name, started_at, name in needed, states=[state], open_at_start=True)
            open_by_server[name] = incident
            incidents.append(incident)
    for event in events:
        kind = event.get("kind")
        server = event.get("server")
        at = float(event.get("at") or started_at)
        if kind == "state" and isinstance(server, str):
            new = str(event.get("new", ""))
            current = open_by_server.get(server)
            if new in BAD_STATES:
                if current is None:
                    current = Incident(server, at, server in needed)
                    open_by_server[server] = current
                    incidents.append(current)
                if not current.states or current.states[-1] != new:
                    current.states.append(new)
                current.failure_class = event.get("failure_class") or current.failure_class
                current.reason = str(event.get("reason") or current.reason)
            elif new in GOOD_STATES and current is not None:
                current.recovered_at = at
                current.states.append(new)
                del open_by_server[server]
        elif kind in ("action", "action_done") and isinstance(server, str) and server in open_by_server:
            actions = open_by_server[server].actions
            if kind == "action":
                if len(actions) >= MAX_ACTIONS:
                    del actions[0]
                actions.append({"rung": event.get("rung"), "attempt": event.get("attempt"), "at": round(at, 3)})
            elif actions and "ok" not in actions[-1]:
                actions[-1]["ok"] = bool(event.get("ok"))
                actions[-1]["duration_s"] = event.get("duration")
        elif kind == "lagged":
            lagged += int(event.get("dropped") or 1)
        elif kind == "daemon" and event.get("event") == "stopping":
            notes.append("the supervisor was stopping during the run")
        elif kind == "guardian":
            what = event.get("event")
            if what == "daemon_lost":
                gaps.append(Gap(at))
            elif what == "daemon_back" and gaps and gaps[-1].back_at is None:
                gaps[-1].back_at = at
            elif what == "recover_requested" and isinstance(server, str) and server in open_by_server:
                open_by_server[server].recover_requested_at = at
    return RunTimeline(incidents, gaps, notes, lagged)
