"""One ``[[servers]]`` entry: an MCP server, how it is probed, recovered, limited and checked.

Why apart from the rest of the models (``models.py``: the daemon's own settings, the vault, the
watched files and ``Config`` itself): a server entry is what most readers look up and what most
changes touch (transports, spawn identity and limits, probes, the ladder, deep checks), and it
depends on nothing else in the file.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from mcp_supervisor.config.auth import OAuthConfig
from mcp_supervisor.config.base import _NAME_RE, Duration, Size, _Model, format_size
from mcp_supervisor.config.standby import Filled, instances

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


class LimitsConfig(_Model):
    """What one process tree the supervisor starts may use (``spawn/``: cgroup + setrlimit).

    ``memory`` and ``tasks`` go into a cgroup of the process (v2, else v1's memory and pids
    hierarchies); ``open_files`` is ``RLIMIT_NOFILE``. Unset: no limit of the supervisor's own.
    """

    memory: Size | None = None
    """Bytes the process tree may use ("512M", "2G"); past it the kernel OOM-kills inside it."""
    tasks: int | None = Field(default=None, ge=1, le=4_194_304)
    """Processes + threads the tree may have at once (a fork bomb stops here)."""
    open_files: int | None = Field(default=None, ge=16, le=1 << 30)
    """File descriptors per process (soft and hard ``RLIMIT_NOFILE``)."""

    @property
    def memory_text(self) -> str | None:
        return format_size(self.memory) if self.memory is not None else None

    @property
    def any(self) -> bool:
        return self.memory is not None or self.tasks is not None or self.open_files is not None


class FallbackConfig(_Model):
    """Emergency mode: the job talks to the service's API directly; this URL proves it answers."""

    url: str
    expect_status: int = Field(default=200, ge=100, le=599)
    timeout: Duration = 5.0
    headers: dict[str, str] = Field(default_factory=dict)
    allowed: bool = True
    """Whether a server in fallback counts as ready for the job."""


class DeepCheck(_Model):
    """``[[servers.checks]]``: a synthetic ``tools/call`` with an expected answer (proxy/checks.py).

    Why: ``tools/list`` can pass while every real call fails (an expired upstream token behind a
    healthy process)."""

    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    expect: str | None = None
    """A regular expression the result's text must contain (``re.search``); unset: any answer."""
    is_error: bool = False
    """The result's ``isError`` the check expects (normally false)."""
    interval: Duration = 60.0
    timeout: Duration = 30.0

    @field_validator("expect")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"expect = {value!r} is not a regular expression: {exc}") from None
        return value


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
    alert_group: str | None = None
    """The ``group`` label of this server's alerts ([notify] group_by = ["group"]); ``group`` is the Unix group."""
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
    retry_tools: list[str] = Field(default_factory=list)
    """Proxy: tools safe to call again after a backend restart besides those the server annotates
    ``readOnlyHint``/``idempotentHint``; shell-style patterns such as ``"search_*"``."""
    checks: list[DeepCheck] = Field(default_factory=list)
    """Deep checks run through the proxy; a failing one is the failure class ``check``."""
    pin_tools: bool | list[str] = False
    """Tool contracts: ``true`` (every tool) or the names of the tools the job uses; a change not yet
    accepted (``supervisorctl-mcp accept-tools NAME``) makes the server ``drifted`` (not ready)."""
    standby: int = Field(default=0, ge=0, le=1)
    """Proxy: keep a second instance ready, so a crash switches to it at once instead of waiting
    for a cold start. stdio: one more backend process per client session, already initialized;
    managed http/sse: a second instance on ``standby_port`` (or ``ports[1]``), started, supervised
    and probed by the daemon (``config/standby.py``, ``runtime/standby.py``)."""
    standby_port: int | None = None
    """Managed http/sse with ``standby = 1``: the standby instance's port (the primary keeps url's)."""
    ports: list[int] = Field(default_factory=list)
    """Managed http/sse with ``standby = 1``: ``[primary, standby]``; ``{port}`` in args/env/url is
    filled with each instance's own."""
    _standby_fill: Filled | None = PrivateAttr(default=None)
    # --- how a process the supervisor starts runs (least privilege; see spawn/identity.py) ---
    user: str | None = None
    """Account a managed or stdio server runs as; unset under a root daemon means ``nobody``."""
    group: str | None = None
    """Primary group (name or number); default: the user's own primary group."""
    inherit_env: list[str] = Field(default_factory=list)
    """Names of the daemon's environment variables passed to the server besides the base."""
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    """``{ memory = "512M", tasks = 256, open_files = 4096 }``: bounds of a managed or stdio server."""
    stop_signal: Literal["TERM", "INT", "QUIT", "HUP", "KILL", "USR1", "USR2"] = "TERM"
    stop_timeout: Duration | None = None
    """Seconds between ``stop_signal`` and SIGKILL; unset: derived from ``shutdown_timeout``."""
    secret_args: list[int] = Field(default_factory=list)
    """Indexes into ``args`` whose values are secrets (masked everywhere, like env values)."""
    auth: OAuthConfig | None = None
    """``{ type = "oauth", grant = "client_credentials", ... }``: the daemon obtains and renews
    this http/sse server's access token itself (config/auth.py, mcp_supervisor/auth/)."""

    @field_validator("auth")
    @classmethod
    def _auth_needs_http(cls, value: OAuthConfig | None, info: ValidationInfo) -> OAuthConfig | None:
        if value is not None and info.data.get("transport") == "stdio":
            raise ValueError("OAuth is for http/sse servers; a stdio server takes its credentials from 'env'")
        return value

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
        filled = instances(self)
        if filled is not None:
            primary, self._standby_fill = filled
            # the primary is this entry with its own port filled in (frozen model: set once, here)
            for key in ("args", "env", "url"):
                object.__setattr__(self, key, getattr(primary, key))
        return self

    @property
    def standby_instance_port(self) -> int | None:
        return self._standby_fill.port if self._standby_fill is not None else None

    def standby_instance(self) -> ServerConfig | None:
        """The managed standby instance: this server with the standby's port filled in (same name:
        the runtime gives its process a record name of its own)."""
        fill = self._standby_fill
        if fill is None:
            return None
        return self.model_copy(update={"args": fill.args, "env": fill.env, "url": fill.url})

    @model_validator(mode="after")
    def _process_fields(self) -> ServerConfig:
        for index in self.secret_args:
            if not 0 <= index < len(self.args):
                raise ValueError(
                    f"secret_args: {index} is not an index into args (0..{len(self.args) - 1}); "
                    "count args from 0"
                )
        if not self.managed and self.transport != "stdio":
            for key in ("user", "group"):
                if getattr(self, key) is not None:
                    raise ValueError(f"'{key}' applies to servers the supervisor starts (stdio, or managed = true); "
                                     "remove it here")
            if self.inherit_env or self.limits.any:
                raise ValueError("'inherit_env' and 'limits' apply to servers the supervisor starts "
                                 "(stdio, or managed = true); remove them here")
        if not self.managed:
            if self.stop_timeout is not None:
                raise ValueError("'stop_timeout' applies to managed servers only (managed = true); remove it here")
            if self.stop_signal != "TERM":
                raise ValueError("'stop_signal' applies to managed servers only (managed = true); remove it here")
        return self

    @property
    def spawned(self) -> bool:
        """Does the supervisor start this server's process (stdio probes, managed processes)?"""
        return self.transport == "stdio" or self.managed

    @property
    def kind(self) -> str:
        """What the supervisor can act on: 'process', 'container' or 'external'."""
        if self.container:
            return "container"
        return "process" if self.managed else "external"
