"""The configuration's models: what a valid config is (pydantic v2, frozen, unknown keys refused).

Why apart from the loader (``loading.py``): the models are the reference of every key, its default
and its check, read by anyone who wants to know what a setting means; reading files, expanding
``${...}`` references and turning errors into messages is the loader's job. A ``[[servers]]``
entry's models are in ``servers.py``, the optional features' in ``features.py``; here are the
daemon's own settings, the vault's, the watched files and ``Config``, which holds them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mcp_supervisor.config.base import _NAME_RE, Duration, _Model
from mcp_supervisor.config.defaults import ServerDefaults
from mcp_supervisor.config.features import (
    HistorySettings,
    MetricsSettings,
    NotifySettings,
    ProxySettings,
    ReportSettings,
    SlackSettings,
    WebSettings,
)
from mcp_supervisor.config.fleet import RcloneSettings, SFTPSettings, check_location
from mcp_supervisor.config.servers import ServerConfig


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
    max_concurrent_handshakes: int = Field(default=16, ge=1, le=1024)
    """HTTP/SSE connects + handshakes at once; more wait their turn (their deadline starts then)."""


class DockerSettings(_Model):
    host: str | None = None
    """Docker endpoint, e.g. ``unix:///var/run/docker.sock``; ``DOCKER_HOST`` wins when set."""


class BackupSettings(_Model):
    key_file: Path = Path("~/.config/mcp-supervisor/vault.key")
    locations: list[str] = Field(default_factory=list)
    """Folders, ``sftp://user@host:port/path`` or ``rclone:REMOTE:path`` (config/fleet.py)."""
    sftp: SFTPSettings = Field(default_factory=SFTPSettings)
    rclone: RcloneSettings = Field(default_factory=RcloneSettings)
    max_age: Duration = 2 * 86400.0
    """A location without a good copy of a backup for this long is alerted (metrics and alert rules)."""
    min_copies: int = Field(default=1, ge=1)
    keep_last: int = Field(default=10, ge=1)
    keep_daily: int = Field(default=7, ge=0)
    keep_weekly: int = Field(default=4, ge=0)
    keep_monthly: int = Field(default=6, ge=0)
    verify_interval: Duration = 86400.0
    full_backup_interval: Duration = 604800.0

    @field_validator("locations")
    @classmethod
    def _known_kinds(cls, locations: list[str]) -> list[str]:
        return [check_location(location) for location in locations]

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
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    defaults: ServerDefaults = Field(default_factory=ServerDefaults)
    """``[defaults]``: merged into every ``[[servers]]`` table by the loader (config/defaults.py);
    kept here for ``check-config``."""
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
