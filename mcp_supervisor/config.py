"""Configuration: TOML file -> validated, immutable pydantic models.

Why this module is strict: the supervisor runs unattended, so a typo in the config must be caught
when the file is loaded (``mcp-supervisor --check``, ``supervisorctl-mcp check-config``, SIGHUP),
never discovered at 6 a.m. when the job runs. Every error names the file, the field path and what
would be valid.

Secrets: values may reference ``${NAME}``, ``${NAME:-default}`` (environment) or ``${file:PATH}``
(first line of a file), so the config never has to hold a token inline. In a server's ``command``,
``args``, ``env``, ``url`` and ``headers`` an unset variable is *not* a load error: it is recorded in
``ServerConfig.missing_env`` and the probe reports that server with failure class ``config``, so one
missing token does not take the whole supervisor down. Elsewhere (paths, socket) it is an error.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_PATHS = (
    Path("/etc/mcp-supervisor/mcp-supervisor.toml"),
    Path("~/.config/mcp-supervisor/mcp-supervisor.toml"),
)

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_REF_RE = re.compile(r"\$\{(file:[^}]+|[A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_FILE_VALUES: ContextVar[set[str] | None] = ContextVar("config_file_values", default=None)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(Exception):
    """A config file could not be used; ``str()`` is a complete, user-facing explanation."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = Path(path)
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid config {self.path}:\n{lines}")


def parse_duration(value: object) -> float:
    """Seconds from ``"30s"``, ``"5m"``, ``"250ms"``, ``"1h"``, ``"2d"`` or a plain number."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30s', '5m', '250ms' or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ValueError(
                f"{value!r} is not a duration; use a number with a unit: '250ms', '30s', '5m', '1h', '2d'"
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    else:
        raise ValueError("expected a duration like '30s', '5m', '250ms' or a number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def expand_refs(text: str, environ: Mapping[str, str], missing: list[str] | None = None) -> str:
    """Expand ``${NAME}``, ``${NAME:-default}`` and ``${file:PATH}`` in ``text``.

    Unresolvable references are appended to ``missing`` (when given) and left in place, else they
    raise ``ValueError``. The error names the variable, never a value.
    """

    def replace(match: re.Match[str]) -> str:
        ref, default = match.group(1), match.group(2)
        if ref.startswith("file:"):
            path = Path(os.path.expanduser(ref[5:]))
            try:
                secret = path.read_text(encoding="utf-8").splitlines()[0].strip()
                sink = _FILE_VALUES.get()
                if sink is not None:  # the redactor must know it, wherever in the config it lands
                    sink.add(secret)
                return secret
            except (OSError, IndexError, UnicodeDecodeError) as exc:
                problem = f"secret file {path} cannot be read ({type(exc).__name__})"
                if missing is None:
                    raise ValueError(problem) from None
                missing.append(ref)
                return match.group(0)
        value = environ.get(ref)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            if missing is None:
                raise ValueError(f"environment variable {ref} is not set (export it or use ${{{ref}:-default}})")
            missing.append(ref)
            return match.group(0)
        return value

    return _REF_RE.sub(replace, text)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


MANAGED_START_PERIOD = 60.0
"""Default ``probe.start_period`` (seconds) of managed servers: their startup allowance."""


class ProbeConfig(_Model):
    """Kubernetes-style probe settings: one failed probe is not an outage (thresholds)."""

    interval: Duration = 10.0
    timeout: Duration = 5.0
    failure_threshold: int = Field(default=3, ge=1, le=100)
    success_threshold: int = Field(default=1, ge=1, le=100)
    start_period: Duration = 0.0
    tools_interval: Duration = 300.0
    expected_tools: list[str] = Field(default_factory=list)
    cold_interval: Duration = 600.0
    """stdio only: how often a fresh instance is spawned (the MCP client's full path)."""

    @model_validator(mode="after")
    def _timeout_fits_interval(self) -> ProbeConfig:
        if self.interval <= 0:
            raise ValueError("interval must be greater than 0 (e.g. '10s')")
        if self.timeout <= 0:
            raise ValueError("timeout must be greater than 0 (e.g. '5s')")
        return self


Rung = Literal["restart", "restore_config", "recreate", "fallback"]
DEFAULT_LADDER: tuple[Rung, ...] = ("restart", "restore_config", "recreate", "fallback")


class RecoveryConfig(_Model):
    """The recovery ladder and its backoff (CrashLoopBackOff-like: 1 s, x2, cap 5 min)."""

    enabled: bool = True
    ladder: list[Rung] = Field(default_factory=lambda: list(DEFAULT_LADDER))
    max_attempts: int = Field(default=5, ge=1, le=1000)
    window: Duration = 600.0
    backoff_initial: Duration = 1.0
    backoff_factor: float = Field(default=2.0, ge=1.0, le=10.0)
    backoff_max: Duration = 300.0
    stable_after: Duration = 60.0


class FallbackConfig(_Model):
    """Emergency mode: the job talks to the service's API directly; this URL proves it answers."""

    url: str
    expect_status: int = Field(default=200, ge=100, le=599)
    timeout: Duration = 5.0
    headers: dict[str, str] = Field(default_factory=dict)
    allowed: bool = True
    """Whether a server in fallback counts as ready for the job."""


class ServerConfig(_Model):
    name: str
    transport: Literal["stdio", "http", "sse"]
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    critical: bool = True
    protocol: str = "auto"
    """``auto`` (discover, fall back to initialize), ``legacy`` (initialize) or a modern version."""
    managed: bool = False
    container: str | None = None
    config: str | None = None
    """Name of a ``[[configs]]`` entry this server's definition lives in (for the restore rung)."""
    token_env: str | None = None
    """Environment variable holding this server's bearer token (for expiry warnings and hints)."""
    token_expires: date | None = None
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    fallback: FallbackConfig | None = None
    # --- how a managed process runs (least privilege; see actuators/process_env.py) ---
    user: str | None = None
    """Account a managed process runs as; unset under a root daemon means ``nobody``."""
    group: str | None = None
    """Primary group (name or number); default: the user's own primary group."""
    inherit_env: list[str] = Field(default_factory=list)
    """Names of the daemon's environment variables passed to a managed process besides the base."""
    stop_signal: Literal["TERM", "INT", "QUIT", "HUP", "KILL", "USR1", "USR2"] = "TERM"
    stop_timeout: Duration | None = None
    """Seconds between ``stop_signal`` and SIGKILL; unset: derived from ``shutdown_timeout``."""
    secret_args: list[int] = Field(default_factory=list)
    """Indexes into ``args`` whose values are secrets (masked everywhere, like env values)."""
    missing_env: tuple[str, ...] = ()
    """Filled by the loader: references in this server's fields that could not be resolved."""
    config_problem: str | None = None
    """Filled by the loader for ``servers_from``: the client file could not be read (a config failure)."""

    @model_validator(mode="before")
    @classmethod
    def _startup_allowance(cls, data: Any) -> Any:
        """A managed server (process or container) gets ``start_period`` = 60 s unless set: it
        may take a while to bind its port, like a Kubernetes startup probe; its exit still
        counts at once."""
        if isinstance(data, dict) and (data.get("managed") is True or data.get("container")):
            probe = data.get("probe")
            if probe is None:
                data = {**data, "probe": {"start_period": MANAGED_START_PERIOD}}
            elif isinstance(probe, dict) and "start_period" not in probe:
                data = {**data, "probe": {**probe, "start_period": MANAGED_START_PERIOD}}
        return data

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"{value!r} is not a valid server name: use letters, digits, '.', '_' or '-' (max 64)"
            )
        return value

    @field_validator("protocol")
    @classmethod
    def _valid_protocol(cls, value: str) -> str:
        from mcp_types.version import MODERN_PROTOCOL_VERSIONS

        if value in ("auto", "legacy") or value in MODERN_PROTOCOL_VERSIONS:
            return value
        raise ValueError(
            f"protocol {value!r} is not supported; use 'auto', 'legacy' or one of "
            f"{', '.join(MODERN_PROTOCOL_VERSIONS)}"
        )

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is not None and "${" not in value and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL (e.g. 'http://127.0.0.1:8000/mcp')")
        return value

    @model_validator(mode="after")
    def _transport_fields(self) -> ServerConfig:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError("a stdio server needs 'command' (the program an MCP client would spawn)")
            if self.url:
                raise ValueError("a stdio server takes 'command', not 'url'; use transport = 'http' for a URL")
            if self.managed:
                raise ValueError(
                    "'managed = true' is for http/sse servers the supervisor keeps running; "
                    "a stdio server is spawned fresh by every client"
                )
        else:
            if not self.url:
                raise ValueError(f"a {self.transport} server needs 'url' (e.g. 'http://127.0.0.1:8000/mcp')")
            if self.managed and not self.command:
                raise ValueError("'managed = true' needs 'command' (the program the supervisor runs)")
            if self.managed and self.container:
                raise ValueError("use either 'managed = true' (a process) or 'container', not both")
        return self

    @model_validator(mode="after")
    def _process_fields(self) -> ServerConfig:
        for index in self.secret_args:
            if not 0 <= index < len(self.args):
                raise ValueError(
                    f"secret_args: {index} is not an index into args (0..{len(self.args) - 1}); "
                    "count args from 0"
                )
        if not self.managed:
            for key in ("user", "group", "stop_timeout"):
                if getattr(self, key) is not None:
                    raise ValueError(f"'{key}' applies to managed servers only (managed = true); remove it here")
            if self.inherit_env or self.stop_signal != "TERM":
                raise ValueError("'inherit_env' and 'stop_signal' apply to managed servers only (managed = true)")
        return self

    @property
    def kind(self) -> str:
        """What the supervisor can act on: 'process', 'container' or 'external'."""
        if self.container:
            return "container"
        return "process" if self.managed else "external"


class SupervisorSettings(_Model):
    socket: Path | None = None
    state_dir: Path = Path("~/.local/state/mcp-supervisor")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    allowed_uids: list[int] = Field(default_factory=list)
    """Peers (SO_PEERCRED) allowed on the socket besides root and the daemon's own uid."""
    allowed_gids: list[int] = Field(default_factory=list)
    shutdown_timeout: Duration = 2.0
    max_concurrent_cold_probes: int = Field(default=2, ge=1, le=64)


class DockerSettings(_Model):
    host: str | None = None
    """Docker endpoint, e.g. ``unix:///var/run/docker.sock``; ``DOCKER_HOST`` wins when set."""


class BackupSettings(_Model):
    key_file: Path = Path("~/.config/mcp-supervisor/vault.key")
    locations: list[Path] = Field(default_factory=list)
    min_copies: int = Field(default=1, ge=1)
    keep_last: int = Field(default=10, ge=1)
    keep_daily: int = Field(default=7, ge=0)
    keep_weekly: int = Field(default=4, ge=0)
    keep_monthly: int = Field(default=6, ge=0)
    verify_interval: Duration = 86400.0
    full_backup_interval: Duration = 604800.0

    @model_validator(mode="after")
    def _copies_fit(self) -> BackupSettings:
        if self.locations and self.min_copies > len(self.locations):
            raise ValueError(
                f"min_copies = {self.min_copies} but only {len(self.locations)} location(s) are listed"
            )
        return self


class WatchedConfig(_Model):
    name: str
    path: Path
    format: Literal["mcp-client-json", "dotenv", "json", "toml"]
    required_keys: list[str] = Field(default_factory=list)
    secret_keys: list[str] | None = None
    """dotenv keys whose values are secrets; None means every value is treated as secret."""
    check_interval: Duration = 60.0
    on_server_loss: Literal["restore", "alert", "ignore"] | None = None
    """mcp-client-json: what a shrunken server map means; None judges (wiped map: restore; a few gone: alert)."""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"{value!r} is not a valid config name: use letters, digits, '.', '_' or '-'")
        return value


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
            from mcp_supervisor.web.listen import parse_listen

            parse_listen(value)
        return value


class Config(_Model):
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)
    docker: DockerSettings = Field(default_factory=DockerSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    reports: ReportSettings = Field(default_factory=ReportSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    servers: list[ServerConfig] = Field(default_factory=list)
    configs: list[WatchedConfig] = Field(default_factory=list)
    servers_from: list[str] = Field(default_factory=list)
    """[[configs]] names whose MCP client file supplies servers (followed on reload and on change)."""
    source: Path | None = None
    file_secrets: frozenset[str] = Field(default=frozenset(), repr=False, exclude=True)
    """Filled by the loader: every ``${file:...}`` value, for the redactor."""

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        for kind, names in (("servers", [s.name for s in self.servers]), ("configs", [c.name for c in self.configs])):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"{kind}: the name {name!r} is used twice; names must be unique")
                seen.add(name)
        config_names = {c.name for c in self.configs}
        for name in self.servers_from:
            entry = next((c for c in self.configs if c.name == name), None)
            if entry is None:
                raise ValueError(
                    f"servers_from names {name!r}, which is not a [[configs]] entry (known: "
                    f"{sorted(config_names) or 'none'}); add a [[configs]] entry with that name and its path"
                )
            if entry.format != "mcp-client-json":
                raise ValueError(f"servers_from names {name!r}, whose format is {entry.format!r}; only "
                                 "'mcp-client-json' files describe servers")
        for server in self.servers:
            if server.config is not None and server.config not in config_names:
                raise ValueError(
                    f"server {server.name!r} refers to config {server.config!r}, which is not a [[configs]] "
                    f"entry (known: {sorted(config_names) or 'none'})"
                )
        return self

    def server(self, name: str) -> ServerConfig:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    @property
    def state_dir(self) -> Path:
        return self.supervisor.state_dir


# ---------------------------------------------------------------------------------------------
# Loading


_SERVER_SECRET_FIELDS = ("command", "args", "env", "url", "headers", "user", "group", "inherit_env")
_PATH_FIELDS: dict[str, tuple[str, ...]] = {
    "supervisor": ("socket", "state_dir"),
    "backup": ("key_file",),
    "history": ("path",),
}


def _walk_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_walk_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _walk_strings(v, fn) for k, v in value.items()}
    return value


def _expand_path(raw: str, environ: Mapping[str, str], base: Path) -> str:
    expanded = os.path.expanduser(expand_refs(raw, environ))
    path = Path(expanded)
    return os.path.normpath(path if path.is_absolute() else base / path)


_LOADER_MARK = object()
"""Marks server entries the loader made from a client file (no TOML value can be this object)."""


def _prepare(raw: dict[str, Any], environ: Mapping[str, str], base: Path) -> dict[str, Any]:
    """Expand references and ``~`` before validation, collecting per-server missing variables."""
    data = dict(raw)
    for table, fields in _PATH_FIELDS.items():
        section = data.get(table)
        if isinstance(section, dict):
            section = dict(section)
            for key in fields:
                if isinstance(section.get(key), str):
                    try:
                        section[key] = _expand_path(section[key], environ, base)
                    except ValueError as exc:
                        raise _FieldProblem((table, key), str(exc)) from None
            data[table] = section
    backup = data.get("backup")
    if isinstance(backup, dict) and isinstance(backup.get("locations"), list):
        locations = []
        for index, loc in enumerate(backup["locations"]):
            if isinstance(loc, str):
                try:
                    loc = _expand_path(loc, environ, base)
                except ValueError as exc:
                    raise _FieldProblem(("backup", "locations", index), str(exc)) from None
            locations.append(loc)
        data["backup"] = {**backup, "locations": locations}
    slack = data.get("slack")
    if isinstance(slack, dict):
        data["slack"] = _walk_strings(slack, lambda s: expand_refs(s, environ, []))
    notify = data.get("notify")
    if isinstance(notify, dict):  # an unset ${VAR} stays as written: that channel waits, the rest runs
        data["notify"] = _walk_strings(notify, lambda s: expand_refs(s, environ, []))
    configs = data.get("configs")
    if isinstance(configs, list):
        prepared_configs = []
        for index, entry in enumerate(configs):
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                try:
                    entry = {**entry, "path": _expand_path(entry["path"], environ, base)}
                except ValueError as exc:
                    raise _FieldProblem(("configs", index, "path"), str(exc)) from None
            prepared_configs.append(entry)
        data["configs"] = prepared_configs
    if isinstance(data.get("servers_from"), str):
        data["servers_from"] = [data["servers_from"]]
    servers = data.get("servers")
    if isinstance(data.get("servers_from"), list) and isinstance(data.get("configs", []), list):
        from mcp_supervisor.importer.follow import servers_from_clients

        explicit = servers if isinstance(servers, list) else []
        imported = servers_from_clients(data["servers_from"], data.get("configs", []), explicit, _LOADER_MARK)
        servers = [*explicit, *imported]
        data["servers"] = servers
    if isinstance(servers, list):
        prepared: list[Any] = []
        for entry in servers:
            if isinstance(entry, dict):
                for loader_field in ("missing_env", "config_problem"):
                    if loader_field in entry and entry.get("_from_client") is not _LOADER_MARK:
                        raise _FieldProblem(("servers", len(prepared), loader_field), "is set by the loader, not by you")
                entry.pop("_from_client", None)
                entry = dict(entry)
                missing: list[str] = []

                def expand(text: str, missing: list[str] = missing) -> str:
                    return expand_refs(text, environ, missing)

                for key in _SERVER_SECRET_FIELDS:
                    if key in entry:
                        entry[key] = _walk_strings(entry[key], expand)
                if isinstance(entry.get("cwd"), str):
                    cwd = Path(os.path.expanduser(expand_refs(entry["cwd"], environ, missing)))
                    entry["cwd"] = os.path.normpath(cwd if cwd.is_absolute() else base / cwd)
                fallback = entry.get("fallback")
                if isinstance(fallback, dict):
                    entry["fallback"] = _walk_strings(fallback, expand)
                entry["missing_env"] = tuple(dict.fromkeys(missing))
            prepared.append(entry)
        data["servers"] = prepared
    return data


class _FieldProblem(Exception):
    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        self.loc = loc
        self.message = message
        super().__init__(message)


def _format_loc(loc: tuple[str | int, ...], raw: Mapping[str, Any]) -> str:
    """``servers[1] (jira).probe.timeout`` - the index plus the name, so the user finds the table."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and 0 <= item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    label += f" ({node['name']})"
            else:
                node = None
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


def _describe_validation_error(exc: ValidationError, raw: Mapping[str, Any]) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # pydantic appends the union arm / validator name to loc for some errors; drop non-fields
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        where = _format_loc(loc, raw)
        kind = err["type"]
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if kind == "extra_forbidden":
            message = "unknown key (check the spelling; see docs/configuration.md for valid keys)"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            message = f"invalid value {err.get('input')!r}; expected {expected}"
        problems.append(f"{where}: {message}")
    return problems


def parse_config(
    text: str, source: Path | str = "<string>", environ: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate TOML text; relative paths resolve against the file's directory."""
    source = Path(source)
    environ = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    base = source.parent.resolve() if source.name != "<string>" else Path.cwd()
    if "file_secrets" in raw:
        raise ConfigError(source, ["file_secrets: is set by the loader, not by you"])
    file_values: set[str] = set()
    token = _FILE_VALUES.set(file_values)
    try:
        data = _prepare(raw, environ, base)
    except _FieldProblem as exc:
        raise ConfigError(source, [f"{_format_loc(exc.loc, raw)}: {exc.message}"]) from None
    finally:
        _FILE_VALUES.reset(token)
    data["source"] = str(source)
    data["file_secrets"] = frozenset(file_values)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _describe_validation_error(exc, raw)) from None


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> Config:
    path = Path(os.path.expanduser(str(path)))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, ["file not found (pass --config FILE or create it; see etc/mcp-supervisor.toml)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"cannot read the file: {exc}"]) from None
    return parse_config(text, path, environ)


def find_config(explicit: str | Path | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """``--config``, else ``MCP_SUPERVISOR_CONFIG``, else the first default path that exists."""
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(os.path.expanduser(str(explicit)))
    if environ.get("MCP_SUPERVISOR_CONFIG"):
        return Path(os.path.expanduser(environ["MCP_SUPERVISOR_CONFIG"]))
    for candidate in DEFAULT_CONFIG_PATHS:
        expanded = Path(os.path.expanduser(str(candidate)))
        if expanded.exists():
            return expanded
    return None


def default_socket_path(owner_uid: int | None = None, run_user: Path = Path("/run/user")) -> Path:
    """The socket a config implies, from the uid that owns the config, never from who asks.

    Why not the reader's uid or ``$XDG_RUNTIME_DIR``: an unprivileged ``supervisorctl-mcp`` reading
    the system config, a cron job without a login session and the daemon itself must all arrive at
    the same path. Root's config -> ``/run/mcp-supervisor/``; uid N's -> ``/run/user/N/`` when
    logind made it, else ``/tmp/mcp-supervisor-N/`` (whose owner and mode the daemon checks).
    """
    uid = os.geteuid() if owner_uid is None else owner_uid
    if uid == 0:
        return Path("/run/mcp-supervisor/control.sock")
    if (run_user / str(uid)).is_dir():
        return run_user / str(uid) / "mcp-supervisor" / "control.sock"
    return Path(f"/tmp/mcp-supervisor-{uid}/control.sock")


def _config_owner(config: Config | None) -> int | None:
    if config is None or config.source is None or config.source.name == "<string>":
        return None
    try:
        return config.source.stat().st_uid
    except OSError:
        return None


def resolve_socket_path(
    cli_socket: str | Path | None, config: Config | None, environ: Mapping[str, str] | None = None
) -> Path:
    """``--socket``, else ``MCP_SUPERVISOR_SOCKET``, else ``[supervisor] socket``, else the default."""
    environ = os.environ if environ is None else environ
    if cli_socket:
        return Path(os.path.expanduser(str(cli_socket)))
    if environ.get("MCP_SUPERVISOR_SOCKET"):
        return Path(os.path.expanduser(environ["MCP_SUPERVISOR_SOCKET"]))
    if config is not None and config.supervisor.socket is not None:
        return config.supervisor.socket
    return default_socket_path(_config_owner(config))
