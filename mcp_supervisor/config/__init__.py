"""The configuration: a TOML file turned into frozen, validated models.

What it is for: everything the daemon and the CLI know about servers, schedules, backups and
channels comes from here, checked once at load so a typo fails at ``--check`` or SIGHUP, never at
6 a.m. ``loading.py`` reads the file (``${...}`` references, error messages with field paths),
``locate.py`` finds the file and the socket it implies, ``servers.py`` holds a ``[[servers]]``
entry's models, ``models.py`` the rest of the core (supervisor, backup, watched configs, ``Config``),
``features.py`` the optional features (notify, metrics, history, reports, web, proxy), ``fleet.py``
the metrics listener's and remote locations' settings, ``listen.py`` the loopback ``HOST:PORT``
parser and ``base.py`` the shared bases (durations, sizes, the strict model).

What it may import: the standard library, pydantic and the foundation layer only (``events``;
``importer``, whose ``follow.py`` reads the client files ``servers_from`` names). It sits just
above the foundation; every other package may import it (docs/architecture.md "Layers").
"""

from mcp_supervisor.config.base import Duration, parse_duration
from mcp_supervisor.config.features import (
    AppriseNotifySettings,
    HistorySettings,
    MetricsSettings,
    NotifySettings,
    ProxySettings,
    QuietHours,
    ReportSettings,
    Severity,
    SlackNotifySettings,
    SlackSettings,
    WebSettings,
)
from mcp_supervisor.config.loading import ConfigError, expand_refs, load_config, parse_config
from mcp_supervisor.config.locate import DEFAULT_CONFIG_PATHS, default_socket_path, find_config, resolve_socket_path
from mcp_supervisor.config.models import BackupSettings, Config, DockerSettings, SupervisorSettings, WatchedConfig
from mcp_supervisor.config.servers import (
    DEFAULT_LADDER,
    MANAGED_START_PERIOD,
    DeepCheck,
    FallbackConfig,
    LimitsConfig,
    ProbeConfig,
    RecoveryConfig,
    Rung,
    ServerConfig,
)

__all__ = [
    "DEFAULT_CONFIG_PATHS",
    "DEFAULT_LADDER",
    "MANAGED_START_PERIOD",
    "AppriseNotifySettings",
    "BackupSettings",
    "Config",
    "ConfigError",
    "DeepCheck",
    "DockerSettings",
    "Duration",
    "FallbackConfig",
    "HistorySettings",
    "LimitsConfig",
    "MetricsSettings",
    "NotifySettings",
    "ProbeConfig",
    "ProxySettings",
    "QuietHours",
    "RecoveryConfig",
    "ReportSettings",
    "Rung",
    "ServerConfig",
    "Severity",
    "SlackNotifySettings",
    "SlackSettings",
    "SupervisorSettings",
    "WatchedConfig",
    "WebSettings",
    "default_socket_path",
    "expand_refs",
    "find_config",
    "load_config",
    "parse_config",
    "parse_duration",
    "resolve_socket_path",
]
