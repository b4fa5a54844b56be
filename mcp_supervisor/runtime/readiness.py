"""Readiness and the one-line summary, answered from the ``Board`` (pure: no runner, no I/O).

Why from the board: ``/v1/ready`` is the hot path a job polls, and it is asked hardest during an
incident. The board already holds which servers do not count as ready, so the answer costs the
number of servers that are *not* ready (usually none), not the number configured, and never waits
for a runner, a record write or an alert.

Why the daemon's own ``phase`` (starting, running, reloading, stopping) is part of readiness:
"ready" must be true or it must be "no". While the daemon starts, nothing has been checked; while
it stops, the servers are going away; while a reload replaces a server, the old runner is gone and
the new one has not probed yet. In each case the affected servers answer not ready and say why,
and an empty set of runners is never read as "all ready".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mcp_supervisor.health.model import UnknownServer
from mcp_supervisor.runtime.snapshot import Board

Phase = Literal["starting", "running", "reloading", "stopping"]
PHASE_REASON = {"starting": "daemon starting", "reloading": "reloading", "stopping": "daemon stopping"}


@dataclass(frozen=True)
class Roster:
    """The configured servers, prepared once per config: their order and which are critical."""

    order: dict[str, int] = field(default_factory=dict)
    critical: tuple[str, ...] = ()

    @classmethod
    def of(cls, servers: list[tuple[str, bool]]) -> Roster:
        return cls({name: i for i, (name, _) in enumerate(servers)}, tuple(n for n, crit in servers if crit))


def readiness(
    board: Board,
    roster: Roster,
    *,
    phase: Phase,
    started: bool,
    replacing: Mapping[str, bool],
    servers: list[str] | None = None,
) -> dict[str, Any]:
    """The ``/v1/ready`` answer (``api/control.py``); raises UnknownServer for a name not configured."""
    if servers:
        unknown = [n for n in servers if n not in roster.order and n not in replacing and n not in board.views]
        if unknown:
            raise UnknownServer(unknown[0])
    if phase in ("starting", "stopping") or not started:
        state = "stopping" if phase == "stopping" else "starting"
        reason = PHASE_REASON[state]
        names = servers or [*roster.critical, *(n for n, crit in replacing.items() if crit and n not in roster.order)]
        items = [{"name": n, "state": state, "reason": reason} for n in names]
        return {"ready": False, "daemon": phase, "not_ready": items or [{"name": "*", "state": state,
                "reason": reason}], "fallback": []}
    if servers:
        not_ready = [_not_ready_item(board, replacing, n) for n in servers]
        items = [item for item in not_ready if item is not None]
        fallback = [n for n in servers if n in board.fallback and n not in replacing]
    else:
        items, fallback = _critical_not_ready(board, roster, replacing)
    if not board.views and roster.order and not items:
        items.append({"name": "*", "state": "starting", "reason": "no server is running"})
    limited = [{"name": n, "reason": board.limited[n]} for n in (servers or board.limited) if n in board.limited]
    answer = {"ready": not items, "daemon": phase, "not_ready": items, "fallback": fallback, "rate_limited": limited}
    on_standby = [{"name": n, "reason": board.standby[n]} for n in (servers or board.standby) if n in board.standby]
    if on_standby:  # ready on a standby alone: said only when it is so (runtime/standby.py)
        answer["standby"] = on_standby
    return answer


def _not_ready_item(board: Board, replacing: Mapping[str, bool], name: str) -> dict[str, str] | None:
    if name in replacing:
        return {"name": name, "state": "reloading", "reason": PHASE_REASON["reloading"]}
    view = board.views.get(name)
    if view is None:
        return {"name": name, "state": "starting", "reason": "no runner for this server"}
    if view.ready:
        return None
    return {"name": name, "state": str(view.state), "reason": view.reason}


def _critical_not_ready(
    board: Board, roster: Roster, replacing: Mapping[str, bool]
) -> tuple[list[dict[str, str]], list[str]]:
    """The critical servers that are not ready, in config order: O(not ready), not O(configured)."""
    names = {n for n, view in board.not_ready.items() if view.critical}
    names.update(n for n, crit in replacing.items() if crit)
    expected = len(roster.order) - sum(1 for n in replacing if n in roster.order)
    if len(board.views) < expected:  # a runner not created yet: rare, so a scan is fine
        names.update(n for n in roster.critical if n not in board.views)
    last = len(roster.order)
    ordered = sorted(names, key=lambda n: roster.order.get(n, last))
    items = [item for item in (_not_ready_item(board, replacing, n) for n in ordered) if item is not None]
    fallback = sorted((n for n in board.fallback if n not in replacing and board.views[n].critical),
                      key=lambda n: roster.order.get(n, last))
    return items, fallback


def summary(board: Board) -> str:
    """One line for systemd's STATUS=: '3/3 ready' or '2/3 ready; jira failed'."""
    line = f"{board.ready_count}/{len(board)} ready"
    bad = [f"{view.name} {view.state}" for _, view in zip(range(6), board.not_ready.values(), strict=False)]
    if bad:
        line += "; " + ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
    return line
