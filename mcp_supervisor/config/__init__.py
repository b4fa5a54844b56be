"""The configuration: a TOML file turned into frozen, validated models.

What it is for: everything the daemon and the CLI know about servers, schedules, backups and
channels comes from here, checked once at load so a typo fails at ``--check`` or SIGHUP, never at
6 a.m. ``loading.py`` reads the file (``${...}`` references, error messages with field paths),
``models.py`` holds the core models (servers, supervisor, backup, watched configs),
``features.py`` the optional features (notify, metrics, history, reports, web) and ``base.py``
the shared bases (durations, the strict model).

What it may import: the standard library, pydantic and ``mcp_supervisor.events``-level modules
only. It sits at the bottom of the layers; every other package may import it.
"""

from mcp_supervisor.config.loading import (
    DEFAULT_CONFIG_PATHS,
    DEFAULT_LADDER,
    MANAGED_START_PERIOD,
    AppriseNotifySettings,
    BackupSettings,
    Config,
    ConfigError,
    DeepCheck,
    DockerSettings,
    Duration,
    FallbackConfig,
    HistorySettings,
    MetricsSettings,
    NotifySettings,
    ProbeConfig,
    ProxySettings,
    QuietHours,
    RecoveryConfig,
    ReportSettings,
    Rung,
    ServerConfig,
    Severity,
    SlackNotifySettings,
    SlackSettings,
    SupervisorSettings,
    WatchedConfig,
    WebSettings,
    default_socket_path,
    expand_refs,
    find_config,
    load_config,
    parse_config,
    parse_duration,
    resolve_socket_path,
)
from mcp_supervisor.config.models import LimitsConfig

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
