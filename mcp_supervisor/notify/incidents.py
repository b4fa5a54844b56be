"""Events -> notifications, grouped into incidents. Pure: no I/O, no clock reads.

Why a tracker of its own and not one message per ``notify`` event: the health machine only
emits ``Notify`` when a person must act (or nothing can recover the server), so a kill that the
ladder heals in two seconds would otherwise go unannounced, and the user wants to know at once
that an MCP failed and that it healed itself. So an incident opens on the first transition into
``failed`` and closes on the way back to ``healthy``/``degraded``: one alert, one resolution (with
the time to recovery), whatever happens in between. Escalations of the same incident (a person
must act, fallback engaged) are follow-ups: threaded replies with a bot token. A server that keeps
failing and coming back is *flapping*: one alert and one resolution once it has stayed up.

The whole state is JSON (``to_json``/``from_json``) so the service stores it in the outbox
database in the same transaction as the messages it produced: a restart neither repeats an alert
for a server that is still down nor forgets to resolve one that came back meanwhile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["alert", "followup", "resolution", "single"]
UP_STATES = frozenset({"healthy", "degraded", "rate_limited"})
ESCALATIONS = frozenset({"needs_human", "fallback"})
_HUMAN_CLASSES = frozenset({"auth", "config"})
_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def severity_rank(severity: str) -> int:
    return _SEVERITY_RANK.get(severity, 1)


@dataclass(frozen=True)
class Notification:
    """One message to deliver. ``incident`` groups an alert with its follow-ups and resolution."""

    kind: str
    severity: str
    incident: str
    role: Role
    at: float
    server: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Notification:
        return cls(
            kind=str(raw.get("kind", "info")),
            severity=str(raw.get("severity", "warning")),
            incident=str(raw.get("incident", "")),
            role=raw.get("role", "single"),
            at=float(raw.get("at", 0.0)),
            server=raw.get("server"),
            data=dict(raw.get("data") or {}),
        )


@dataclass
class Incident:
    key: str
    server: str
    opened_at: float
    alerted: bool = False
    critical: bool = False
    failure_class: str | None = None
    reason: str = ""
    flapping: bool = False
    up_since: float | None = None
    failures: int = 1
    after: str = ""
    """The state the server left (``starting``: it never came up since the daemon started)."""


class IncidentTracker:
    def __init__(self, flap_count: int = 3, flap_window: float = 600.0) -> None:
        self.flap_count = flap_count
        self.flap_window = flap_window
        self.open: dict[str, Incident] = {}
        self.recent: dict[str, list[float]] = {}
        """Per server, when its recent incidents opened (for flap detection)."""

    # --- persistence -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"open": {k: asdict(v) for k, v in self.open.items()}, "recent": self.recent}

    def load_json(self, raw: dict[str, Any]) -> None:
        self.open = {}
        for name, item in (raw.get("open") or {}).items():
            try:
                self.open[str(name)] = Incident(**item)
            except TypeError:
                continue  # a field from another version: forget that incident rather than crash
        self.recent = {str(k): [float(t) for t in v] for k, v in (raw.get("recent") or {}).items()}

    def fingerprint(self) -> tuple[object, ...]:
        """Cheap: changes whenever ``to_json`` would (the service stores the state only then)."""
        return (tuple((k, i.key, i.alerted, i.flapping, i.up_since, i.failures) for k, i in self.open.items()),
                tuple((k, len(v), v[-1] if v else None) for k, v in self.recent.items()))

    # --- inputs ------------------------------------------------------------------------------

    def on_event(self, kind: str, server: str | None, data: dict[str, Any], at: float) -> list[Notification]:
        if kind == "state" and server:
            return self._on_state(server, data, at)
        if kind == "notify" and server:
            return self._on_notify(server, data, at)
        if kind == "config" and data.get("event") == "reloaded":
            for name in data.get("removed") or []:
                self.open.pop(str(name), None)  # a server that is gone cannot recover
                self.recent.pop(str(name), None)
            return []
        return _single_for(kind, server, data, at)

    def tick(self, now: float) -> list[Notification]:
        """Close flapping incidents whose server has stayed up for ``flap_window``."""
        out = []
        for name, incident in list(self.open.items()):
            if incident.flapping and incident.up_since is not None and now - incident.up_since >= self.flap_window:
                del self.open[name]
                self.recent.pop(name, None)
                out.append(
                    self._note(incident, "recovered", "info", "resolution", now, stable_s=now - incident.up_since,
                               detail=f"stable for {now - incident.up_since:.0f}s after flapping "
                               f"({incident.failures} failure(s))")
                )
        return out

    # --- state transitions -------------------------------------------------------------------

    def _on_state(self, server: str, data: dict[str, Any], at: float) -> list[Notification]:
        new = str(data.get("new", ""))
        incident = self.open.get(server)
        if new == "failed":
            if incident is not None:
                if incident.flapping:
                    incident.failures += 1
                    incident.up_since = None
                return []
            return self._open(server, data, at)
        if new in UP_STATES and incident is not None:
            if incident.flapping:
                if incident.up_since is None:
                    incident.up_since = at
                return []
            return self._resolve(incident, at, data)
        return []

    def _open(self, server: str, data: dict[str, Any], at: float) -> list[Notification]:
        times = [t for t in self.recent.get(server, []) if at - t < self.flap_window] + [at]
        self.recent[server] = times[-self.flap_count :]
        failure_class = data.get("failure_class")
        incident = Incident(
            key=f"{server}@{at:.3f}",
            server=server,
            opened_at=at,
            critical=bool(data.get("critical", False)),
            failure_class=str(failure_class) if failure_class else None,
            reason=str(data.get("reason") or ""),
            after=str(data.get("old") or ""),
        )
        self.open[server] = incident
        severity = "critical" if incident.critical else "warning"
        if len(times) >= self.flap_count:
            incident.flapping = True
            incident.failures = len(times)
            incident.alerted = True
            detail = f"{len(times)} failures within {self.flap_window:.0f}s; last: {incident.reason}"
            return [self._note(incident, "flapping", severity, "alert", at, detail=detail)]
        if incident.failure_class in _HUMAN_CLASSES:
            return []  # the machine's needs_human notify follows at once and carries the fix
        incident.alerted = True
        return [self._note(incident, "down", severity, "alert", at, detail=incident.reason)]

    def _resolve(self, incident: Incident, at: float, data: dict[str, Any]) -> list[Notification]:
        del self.open[incident.server]
        if not incident.alerted:
            return []
        return [
            self._note(incident, "recovered", "info", "resolution", at, ttr_s=round(at - incident.opened_at, 3),
                       attempts=data.get("attempt"), detail=str(data.get("reason") or ""))
        ]

    # --- the machine's own notifications ------------------------------------------------------

    def _on_notify(self, server: str, data: dict[str, Any], at: float) -> list[Notification]:
        what = str(data.get("notify") or "info")
        severity = str(data.get("severity") or "warning")
        detail = str(data.get("detail") or "")
        incident = self.open.get(server)
        if what == "recovered":
            if incident is not None and not incident.flapping:
                return self._resolve(incident, at, {"reason": detail})
            return []  # the state transition already resolved it
        if what == "down" or what in ESCALATIONS:
            if incident is None:
                incident = Incident(key=f"{server}@{at:.3f}", server=server, opened_at=at, reason=detail)
                self.open[server] = incident
            if not incident.alerted:
                incident.alerted = True
                return [self._note(incident, what, severity, "alert", at, detail=detail)]
            if what == "down":
                return []  # the same outage the state transition announced
            return [self._note(incident, what, severity, "followup", at, detail=detail)]
        return _single_for("notify", server, data, at)

    @staticmethod
    def _note(incident: Incident, kind: str, severity: str, role: Role, at: float, **data: Any) -> Notification:
        payload = {"failure_class": incident.failure_class, "opened_at": incident.opened_at,
                   "critical": incident.critical, "after": incident.after, **data}
        return Notification(kind=kind, severity=severity, incident=incident.key, role=role, at=at,
                            server=incident.server, data=payload)


def _single_for(kind: str, server: str | None, data: dict[str, Any], at: float) -> list[Notification]:
    """Messages that are not part of a server's outage: backups, restores, tokens, reports."""
    key = f"{kind}:{server or '-'}:{at:.6f}"
    if kind == "notify":
        what = str(data.get("notify") or "info")
        extra = {k: v for k, v in data.items() if k not in ("notify", "severity")}
        if what == "token_expiry":
            key = f"token_expiry:{server}:{data.get('level', '')}:{at:.0f}"
        return [Notification(what, str(data.get("severity") or "warning"), key, "single", at, server, extra)]
    if kind == "backup":
        failed = data.get("failed_locations") or {}
        if data.get("safe", True) and not failed:
            return []
        return [Notification("backup_failed", "critical" if not data.get("safe", True) else "warning", key,
                             "single", at, server, dict(data))]
    if kind in ("backup_failed", "restore_failed"):
        return [Notification(kind, "critical", key, "single", at, server, dict(data))]
    if kind == "restore":
        return [Notification("config_restored", "warning", key, "single", at, server, dict(data))]
    if kind == "report":
        return [Notification("report", "info", key, "single", at, server, dict(data))]
    return []
