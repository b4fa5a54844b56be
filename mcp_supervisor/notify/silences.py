"""Silences and maintenance windows: what they cover and when they end. Pure: time is passed in.

Why both in one shape: a *silence* ("I am renewing the Jira token, stop telling me for an hour")
only keeps messages from being sent; a *maintenance* window is a silence on one server that also
pauses its healing and readiness requirement (the runtime applies that part) and counts its time
as maintenance, not downtime. Both end by themselves at ``ends_at``, or earlier by ``unsilence``;
both are stored in the record so a daemon restart keeps them. A silenced message is not lost: it
is recorded (``alert`` event, shown by ``history``), only not sent.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

Kind = Literal["silence", "maintenance"]
ALL = "*"
MAX_DURATION = 30 * 86400.0
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")
_NOT_SILENCED = frozenset({"report", "test"})
"""Messages a silence never holds back: a report is asked for, a test is interactive."""


class SilenceError(ValueError):
    """A silence that cannot be made (``str()`` names the field and the fix)."""


@dataclass(frozen=True)
class Silence:
    id: str
    kind: str
    server: str
    """A server name, or ``*`` for every server (``--all``)."""
    starts_at: float
    ends_at: float
    reason: str = ""
    created_by: str = ""
    ended_at: float | None = None
    """Set by ``unsilence`` (ended early); expiry needs no write, ``ends_at`` says it."""

    def active(self, now: float) -> bool:
        return self.ended_at is None and self.starts_at <= now < self.ends_at

    def covers(self, server: str | None, kind: str, now: float) -> bool:
        if not self.active(now) or kind in _NOT_SILENCED:
            return False
        return self.server == ALL or (server is not None and server == self.server)

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        out = asdict(self)
        if now is not None:
            out["active"] = self.active(now)
            out["remaining_s"] = round(max(0.0, self.ends_at - now), 1) if self.active(now) else 0.0
        return out


def make(kind: str, server: str, seconds: float, now: float, reason: str = "", created_by: str = "",
         known: Iterable[str] = ()) -> Silence:
    """A new silence or maintenance window, validated; raises ``SilenceError`` naming the fix."""
    if kind not in ("silence", "maintenance"):
        raise SilenceError(f"kind {kind!r}: use 'silence' or 'maintenance'")
    if server != ALL and not _NAME_RE.match(server):
        raise SilenceError(f"server {server!r} is not a server name")
    names = set(known)
    if server != ALL and names and server not in names:
        raise SilenceError(f"no server named {server!r}; configured: {', '.join(sorted(names)) or 'none'}")
    if kind == "maintenance" and server == ALL:
        raise SilenceError("maintenance is for one server at a time; name it (maintenance NAME --for 2h)")
    if not (0 < seconds <= MAX_DURATION):
        raise SilenceError(f"for={seconds:g}s: give a duration between 1s and 30d, e.g. --for 1h")
    if len(reason) > 500:
        raise SilenceError("reason is longer than 500 characters")
    return Silence(id=secrets.token_hex(4), kind=kind, server=server, starts_at=now, ends_at=now + seconds,
                   reason=reason, created_by=created_by)


def covering(silences: Iterable[Silence], server: str | None, kind: str, now: float) -> Silence | None:
    """The silence that holds a message back now (the one ending last), or None."""
    found = [s for s in silences if s.covers(server, kind, now)]
    return max(found, key=lambda s: s.ends_at) if found else None


def in_maintenance(silences: Iterable[Silence], now: float) -> dict[str, Silence]:
    """server -> its active maintenance window."""
    out: dict[str, Silence] = {}
    for s in silences:
        if s.kind == "maintenance" and s.active(now) and (s.server not in out or s.ends_at > out[s.server].ends_at):
            out[s.server] = s
    return out


def next_change(silences: Iterable[Silence], now: float) -> float | None:
    """When the next active silence ends (the service wakes then)."""
    return min((s.ends_at for s in silences if s.active(now)), default=None)


def from_row(row: dict[str, Any]) -> Silence:
    return Silence(id=str(row["id"]), kind=str(row["kind"]), server=str(row["server"]),
                   starts_at=float(row["starts_at"]), ends_at=float(row["ends_at"]), reason=str(row.get("reason") or ""),
                   created_by=str(row.get("created_by") or ""),
                   ended_at=float(row["ended_at"]) if row.get("ended_at") is not None else None)
