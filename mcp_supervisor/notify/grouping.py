"""Per-server incident notes -> grouped messages, the way Alertmanager groups. Pure: time is passed in.

Why: when the Docker engine restarts or the network drops, 200 servers fail within a second, and
200 messages drown the one fact that matters. So a server's alert joins a *group* (its key comes
from ``group_by`` over the alert's labels, see ``causes.py``) and nothing is sent for
``group_wait``: whatever fails meanwhile is in the first message. After that, changes (more
servers, escalations, servers back) go out at most once per ``group_interval`` (with a bot token
as an in-place update of the same Slack message; with a webhook as one follow-up), an unchanged
firing group is repeated every ``repeat_interval``, and one resolution is sent when every member
is back. A group whose members all came back before its first message sends one short "was down,
recovered by itself" note instead of an alert and a resolution.

Silences are applied at each flush (a callable says whether a server is silenced now), so an
expired silence lets a still-firing alert through at the next flush, as in Alertmanager. A member
already announced stays visible (its resolution is never hidden).

The whole state is JSON, stored with the incident tracker's in the same transaction as the rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mcp_supervisor.notify.causes import group_key, is_known
from mcp_supervisor.notify.incidents import ESCALATIONS, Notification, severity_rank

Silenced = Callable[[str, float], str | None]
"""(server, now) -> the id of the silence covering it, or None."""


@dataclass(frozen=True)
class GroupSettings:
    group_by: tuple[str, ...] = ("cause",)
    group_wait: float = 10.0
    group_interval: float = 300.0
    repeat_interval: float = 4 * 3600.0


@dataclass
class Member:
    server: str
    incident: str
    kind: str
    severity: str
    opened_at: float
    data: dict[str, Any] = field(default_factory=dict)
    resolved_at: float | None = None
    resolution: dict[str, Any] = field(default_factory=dict)
    announced: bool = False
    escalated: bool = False
    silenced_by: str | None = None


@dataclass
class Group:
    id: str
    key: list[list[str]]
    created_at: float
    next_flush: float | None
    members: dict[str, Member] = field(default_factory=dict)
    """incident key -> member"""
    last_flush: float | None = None
    alerted: bool = False
    sent_hash: str = ""
    many: bool = False
    """Ever announced with more than one member: keep the group layout from then on."""

    @property
    def cause(self) -> str:
        for name, value in self.key:
            if name == "cause":
                return value
        causes = {str(m.data.get("cause") or "") for m in self.members.values()}
        return causes.pop() if len(causes) == 1 else ""


@dataclass
class FlushResult:
    notes: list[Notification] = field(default_factory=list)
    suppressed: list[tuple[str, str, str]] = field(default_factory=list)
    """(server, kind, silence id) of members first left out because of a silence."""
    grouped: int = 0
    """Alerts that went out inside a message naming other servers too."""
    inhibited: int = 0
    """Alerts that went out under a known shared cause instead of on their own."""


class Grouper:
    def __init__(self, settings: GroupSettings | None = None) -> None:
        self.settings = settings or GroupSettings()
        self.groups: dict[str, Group] = {}
        self.where: dict[str, str] = {}
        """per-server incident key -> group id"""

    # --- persistence ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"groups": {k: asdict(g) for k, g in self.groups.items()}}

    def load_json(self, raw: dict[str, Any]) -> None:
        self.groups, self.where = {}, {}
        for gid, item in (raw.get("groups") or {}).items():
            try:
                members = {k: Member(**m) for k, m in (item.get("members") or {}).items()}
                group = Group(**{**item, "members": members})
            except TypeError:
                continue  # written by another version: drop that group rather than crash
            self.groups[str(gid)] = group
            for incident in members:
                self.where[incident] = group.id

    # --- inputs --------------------------------------------------------------------------------

    def add(self, note: Notification, labels: dict[str, str], now: float) -> Notification | None:
        """Take one server incident note; returns it back when it belongs to no group (send as is)."""
        gid = self.where.get(note.incident)
        if note.role == "alert":
            self._alert(note, labels, now)
            return None
        if gid is None or gid not in self.groups:
            return note  # an incident opened before grouping knew it (an older state file)
        group = self.groups[gid]
        member = group.members[note.incident]
        if note.role == "resolution":
            member.resolved_at = note.at
            member.resolution = dict(note.data)
        else:  # an escalation of the same incident
            member.kind, member.severity = note.kind, note.severity
            member.data = {**member.data, **note.data}
            member.escalated = note.kind in ESCALATIONS
        self._changed(group, now)
        return None

    def _alert(self, note: Notification, labels: dict[str, str], now: float) -> None:
        key = [list(pair) for pair in group_key(labels, self.settings.group_by)]
        data = {**note.data, "cause": labels.get("cause", "")}
        self._join(key, Member(note.server or "", note.incident, note.kind, note.severity,
                               float(note.data.get("opened_at") or note.at), data), now)

    def _join(self, key: list[list[str]], member: Member, now: float) -> None:
        group = next((g for g in self.groups.values() if g.key == key), None)
        if group is None:
            gid = "group:" + ",".join(f"{k}={v}" for k, v in key) + f"@{now:.3f}"
            group = self.groups[gid] = Group(gid, key, now, now + self.settings.group_wait)
        group.members[member.incident] = member
        self.where[member.incident] = group.id
        self._changed(group, now)

    def reveal(self, server: str, cause: str, now: float) -> bool:
        """A shared cause learned after the alert (a later state says the Docker engine does not
        answer): the server's member, not yet announced, moves under that cause (inhibition)."""
        for group in list(self.groups.values()):
            for incident, member in list(group.members.items()):
                if member.server != server or member.announced or member.resolved_at is not None or group.cause == cause:
                    continue
                del group.members[incident]
                if not group.members:
                    self.groups.pop(group.id, None)
                member.data = {**member.data, "cause": cause}
                self._join([["cause", cause]], member, now)
                return True
        return False

    def _changed(self, group: Group, now: float) -> None:
        if not group.alerted:
            return  # the first message goes out at created_at + group_wait and will include it
        soonest = max(now, (group.last_flush or now) + self.settings.group_interval)
        if group.next_flush is None or group.next_flush > soonest:
            group.next_flush = soonest

    def silence_changed(self, now: float) -> None:
        """A silence ended or was removed: look at every group at once (alerts flow again)."""
        for group in self.groups.values():
            if any(m.silenced_by for m in group.members.values()):
                group.next_flush = now

    def forget_servers(self, names: set[str]) -> None:
        """Servers removed by a reload: they cannot recover, drop them from their groups."""
        for group in list(self.groups.values()):
            for incident, member in list(group.members.items()):
                if member.server in names:
                    del group.members[incident]
                    self.where.pop(incident, None)
            if not group.members:
                del self.groups[group.id]

    # --- output --------------------------------------------------------------------------------

    def next_due(self) -> float | None:
        return min((g.next_flush for g in self.groups.values() if g.next_flush is not None), default=None)

    def flush(self, now: float, silenced: Silenced | None = None) -> FlushResult:
        out = FlushResult()
        for group in sorted(self.groups.values(), key=lambda g: g.created_at):
            if group.next_flush is not None and group.next_flush <= now:
                self._flush(group, now, silenced or (lambda s, t: None), out)
        return out

    def _flush(self, group: Group, now: float, silenced: Silenced, out: FlushResult) -> None:
        visible = []
        for member in group.members.values():
            silence = None if member.announced else silenced(member.server, now)
            if silence and member.silenced_by != silence:
                out.suppressed.append((member.server, member.kind, silence))
            member.silenced_by = silence
            if silence is None:
                visible.append(member)
        firing = [m for m in visible if m.resolved_at is None]
        group.next_flush = None
        if not visible:
            if all(m.resolved_at is not None for m in group.members.values()):
                self._drop(group)
            return
        if not group.alerted:
            if firing:
                self._emit(group, visible, "alert", now, out)
                group.alerted = True
            else:
                self._emit(group, visible, "single", now, out)  # down and back before the first message
                self._drop(group)
                return
        elif not firing:
            self._emit(group, visible, "resolution", now, out)
            self._drop(group)
            return
        else:
            changed = _digest(visible) != group.sent_hash
            self._emit(group, visible, "followup", now, out, update=changed)
        for member in firing:
            member.announced = True
            member.escalated = False
        group.sent_hash = _digest(visible)
        group.last_flush = now
        group.next_flush = now + self.settings.repeat_interval

    def _drop(self, group: Group) -> None:
        for incident in group.members:
            self.where.pop(incident, None)
        self.groups.pop(group.id, None)

    def _emit(self, group: Group, visible: list[Member], role: str, now: float, out: FlushResult,
              update: bool = True) -> None:
        group.many = group.many or len(visible) > 1
        new = [m for m in visible if not m.announced]
        if group.many:
            out.grouped += len(new)
        if is_known(group.cause):
            out.inhibited += len(new)
        out.notes.append(group_note(group, visible, role, now, update=update,
                                    reply=any(m.escalated for m in visible)))


def _digest(members: list[Member]) -> str:
    state = sorted((m.incident, m.kind, m.resolved_at is not None) for m in members)
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]


def group_note(group: Group, visible: list[Member], role: str, now: float, *, update: bool, reply: bool) -> Notification:
    """The message for a group. One member (never more): that server's own message, as before grouping."""
    firing = [m for m in visible if m.resolved_at is None]
    severity = "info" if role in ("resolution", "single") else max(
        (m.severity for m in firing), key=severity_rank, default="warning")
    flags = {"group": group.id, "update": update and role == "followup", "reply": reply,
             "repeat": role == "followup" and not update}
    if not group.many:
        member = visible[0]
        if role in ("resolution", "single"):
            ttr = (member.resolved_at or now) - member.opened_at
            detail = str(member.resolution.get("detail") or "")
            if role == "single":
                detail = f"was down for {ttr:.1f}s and recovered by itself before the alert went out"
            data = {**member.data, **member.resolution, "ttr_s": round(ttr, 3), "detail": detail, **flags}
            return Notification("recovered", "info", group.id, role, now, member.server, data)  # type: ignore[arg-type]
        return Notification(member.kind, severity, group.id, role, now, member.server,  # type: ignore[arg-type]
                            {**member.data, **flags})
    opened = min(m.opened_at for m in visible)
    members = [
        {"server": m.server, "kind": m.kind, "severity": m.severity, "failure_class": m.data.get("failure_class"),
         "detail": str(m.data.get("detail") or ""), "instruction": str(m.data.get("instruction") or ""),
         "opened_at": m.opened_at, "resolved_at": m.resolved_at}
        for m in sorted(visible, key=lambda m: (m.resolved_at is not None, m.server))
    ]
    data = {"cause": group.cause, "members": members, "firing": len(firing), "back": len(visible) - len(firing),
            "opened_at": opened, "ttr_s": round(max(m.resolved_at or now for m in visible) - opened, 3) if not firing else None,
            "critical": any(m.data.get("critical") for m in visible), **flags}
    return Notification("group", severity, group.id, role, now, None, data)  # type: ignore[arg-type]
