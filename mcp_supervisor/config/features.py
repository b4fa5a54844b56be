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


class MetricsSettings(_Model):
    listen: str | None = None
    """``host:port`` for a TCP ``/metrics`` (e.g. ``127.0.0.1:9464``); off by default."""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not host:port; use e.g. \"127.0.0.1:9464\"")
        return value


class WebSettings(_Model):
    listen: str | None = None
    """Loopback ``HOST:PORT`` for the read-only status page, e.g. ``127.0.0.1:8089``; off when unset."""
    title: str = "MCP status"

    @field_validator("listen")
    @classmethod
    def _loopback_only(cls, value: str | None) -> str | None:
        if value is not None:
            from mcp_supervisor.config.listen import parse_listen

            parse_listen(value)
        return value
