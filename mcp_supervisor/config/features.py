"""The config's optional features: notifications, metrics, the record and reports, the status page.

Why apart from the core models (``models.py``): each of these is off or defaulted and owned
by one subsystem (notify/, metrics.py, history/, web/); the servers and the vault are the core.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mcp_supervisor.config.base import Duration, _Model
from mcp_supervisor.config.fleet import MetricsSettings as MetricsSettings


class SlackSettings(_Model):
    token: str | None = None
    channel: str | None = None
    base_url: str | None = None


_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class HistorySettings(_Model):
    """The record (SQLite in WAL mode): what happened, kept ``retention`` long."""

    enabled: bool = True
    path: Path | None = None
    """Default: ``<state_dir>/history.sqlite3``."""
    retention: Duration = 90 * 86400.0
    probe_detail: Duration = 2 * 86400.0
    """Per-minute probe rollups are kept this long, then folded into per-hour rows."""


class ReportSettings(_Model):
    """Scheduled summaries published as ``report`` events (the notifier sends them on)."""

    daily_at: str | None = "09:30"
    """Local time ``HH:MM``; ``"off"`` disables the daily report."""
    weekly_on: str | None = "monday"
    """A weekday name (sent at ``daily_at``); ``"off"`` disables the weekly report."""

    @field_validator("daily_at")
    @classmethod
    def _valid_time(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in ("off", ""):
            return None
        match = re.fullmatch(r"\s*([01]?\d|2[0-3]):([0-5]\d)\s*", value)
        if not match:
            raise ValueError(f"{value!r} is not a time of day; use 24-hour 'HH:MM' such as '09:30', or 'off'")
        return f"{int(match.group(1)):02d}:{match.group(2)}"

    @field_validator("weekly_on")
    @classmethod
    def _valid_weekday(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in ("off", ""):
            return None
        if value.strip().lower() not in _WEEKDAYS:
            raise ValueError(f"{value!r} is not a weekday; use one of {', '.join(_WEEKDAYS)}, or 'off'")
        return value.strip().lower()
Severity = Literal["info", "warning", "critical"]
_CLOCK_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class SlackNotifySettings(_Model):
    """``[notify.slack]``: an incoming webhook, or a bot token + channel (then incidents thread)."""

    webhook_url: str | None = None
    token: str | None = None
    channel: str | None = None
    base_url: str | None = None
    """Slack Web API base (default ``https://slack.com/api/``); tests point it at a local server."""
    min_severity: Severity = "info"
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _one_way_in(self) -> SlackNotifySettings:
        for key in ("webhook_url", "token"):
            if getattr(self, key) == "":
                raise ValueError(f"{key} is empty (is the variable it references set to an empty value?)")
        if bool(self.webhook_url) == bool(self.token):
            raise ValueError('set either webhook_url (normally "${SLACK_WEBHOOK_URL}") or token + channel')
        if self.token and not self.channel:
            raise ValueError('a bot token needs a channel, e.g. channel = "#mcp-alerts" or a channel ID')
        return self


class AppriseNotifySettings(_Model):
    """``[notify.apprise]``: other channels (e-mail, Teams, Discord, ntfy, ...) through apprise URLs."""

    urls: list[str] = Field(default_factory=list)
    min_severity: Severity = "info"


class QuietHours(_Model):
    """Messages below ``min_severity`` wait (they are not dropped) until the quiet hours end."""

    start: str
    end: str
    timezone: str = "UTC"
    min_severity: Severity = "critical"

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK_RE.match(value):
            raise ValueError(f"{value!r} is not a time of day; use HH:MM, e.g. \"22:00\"")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name like \"Europe/Berlin\" or \"UTC\"") from None
        return value


class NotifySettings(_Model):
    mode: Literal["direct", "alertmanager"] = "direct"
    """``alertmanager``: incidents are left to Prometheus + Alertmanager (no double page); reports still go."""
    slack: SlackNotifySettings | None = None
    apprise: AppriseNotifySettings | None = None
    quiet_hours: QuietHours | None = None
    retry_initial: Duration = 2.0
    retry_max: Duration = 300.0
    flap_count: int = Field(default=3, ge=2, le=100)
    """This many incidents of one server within ``flap_window`` make it 'flapping' (one alert)."""
    flap_window: Duration = 600.0
    keep_sent: Duration = 604800.0
    """Delivered messages are kept this long in the outbox (what was sent, when), then deleted."""
    group_by: list[str] = Field(default_factory=lambda: ["cause"])
    """Alerts with the same values of these labels become one message (Alertmanager's group_by):
    cause, failure_class, group (a server's alert_group), transport, server, severity, or "..." (all)."""
    group_wait: Duration = 10.0
    """How long a new group waits for more failures before its first message."""
    group_interval: Duration = 300.0
    """At most one update of a group's message (or one webhook follow-up) per this interval."""
    repeat_interval: Duration = 4 * 3600.0
    """A group still firing and unchanged is sent again after this long."""
    pace: Duration = 1.0
    """At least this long between two messages on one channel (Slack allows about one per second)."""

    @field_validator("group_by")
    @classmethod
    def _known_labels(cls, value: list[str]) -> list[str]:
        known = ("cause", "failure_class", "group", "transport", "server", "severity", "...")
        wrong = [v for v in value if v not in known]
        if wrong:
            raise ValueError(f"unknown label(s) {', '.join(map(repr, wrong))}; use any of {', '.join(known)}")
        return value


class WebSettings(_Model):
    listen: str | None = None
    """Loopback ``HOST:PORT`` for the read-only status page, e.g. ``127.0.0.1:8089``; off when unset."""
    title: str = "MCP status"
    max_event_streams: int = Field(default=256, ge=1, le=100_000)
    """Live-update streams (``/api/events``) open at once; past it a 503, counted in ``/metrics``."""

    @field_validator("listen")
    @classmethod
    def _loopback_only(cls, value: str | None) -> str | None:
        if value is not None:
            from mcp_supervisor.config.listen import parse_listen

            parse_listen(value)
        return value


class ProxySettings(_Model):
    """``[proxy]``: the daemon's own MCP endpoint per server (proxy/); off unless ``listen`` is set.

    Why loopback and a token: any local user can reach loopback TCP, and the proxy calls tools with
    the team's credentials, so every request must carry the token only the job's user can read."""

    listen: str | None = None
    """Loopback ``HOST:PORT``, e.g. ``127.0.0.1:8766``; URLs are ``http://HOST:PORT/servers/<name>/mcp``."""
    token_file: Path | None = None
    """Default ``<state_dir>/proxy.token``: created at first start (0600), never logged."""
    hold: Duration = 30.0
    """How long a call waits for its restarting server before the client gets an error naming its state."""
    max_sessions: int = Field(default=1000, ge=1, le=100000)
    """Open client sessions at most; one more is refused with 503 (an idle one expires after ``session_idle``)."""
    session_idle: Duration = 3600.0
    max_body: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    """Largest request body in bytes; a bigger one is refused with 413."""

    @field_validator("listen")
    @classmethod
    def _loopback_only(cls, value: str | None) -> str | None:
        if value is not None:
            from mcp_supervisor.config.listen import parse_listen

            parse_listen(value, "proxy", "the proxy calls tools with your servers' credentials, so it is served")
        return value
