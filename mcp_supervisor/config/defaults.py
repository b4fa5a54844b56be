"""``[defaults]``: per-server keys written once for every server, a server's own value winning.

Why merged into the raw tables before validation (and not a fallback read at run time): every
reader (probes, the machine's policy, spawn, the proxy, the contract keeper) then sees one
``ServerConfig`` with the effective value, exactly as if it had been written in the server's table;
a reload that changes ``[defaults]`` changes those servers and replaces them like any other edit.

The rules: a key a server sets itself is never touched; the ``probe``, ``recovery`` and ``limits``
tables merge key by key (``[defaults.probe] interval = "30s"`` and a server's own
``probe = { timeout = "2s" }`` give that server both); ``user``, ``group``, ``inherit_env`` and
``limits`` reach only servers the supervisor starts (stdio, or ``managed = true``), ``stop_signal``
and ``stop_timeout`` only managed ones, since elsewhere they would be refused. The table itself is
checked first with the same models a server uses, so a bad value is reported once, at
``defaults.KEY``, not once per server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from mcp_supervisor.config.base import Duration, _Model
from mcp_supervisor.config.servers import LimitsConfig, ProbeConfig, RecoveryConfig

TABLES = ("probe", "recovery", "limits")
"""Keys whose value is a table merged key by key."""
SPAWNED_ONLY = frozenset({"user", "group", "inherit_env", "limits"})
MANAGED_ONLY = frozenset({"stop_signal", "stop_timeout"})


class ServerDefaults(_Model):
    """What ``[defaults]`` may hold: a subset of a ``[[servers]]`` entry's keys (unknown keys refused)."""

    pin_tools: bool | list[str] | None = None
    critical: bool | None = None
    alert_group: str | None = None
    retry_tools: list[str] | None = None
    user: str | None = None
    group: str | None = None
    inherit_env: list[str] | None = None
    stop_signal: Literal["TERM", "INT", "QUIT", "HUP", "KILL", "USR1", "USR2"] | None = None
    stop_timeout: Duration | None = None
    probe: ProbeConfig | None = None
    recovery: RecoveryConfig | None = None
    limits: LimitsConfig | None = Field(default=None)

    @model_validator(mode="after")
    def _no_per_server_lists(self) -> ServerDefaults:
        if self.probe is not None and "expected_tools" in self.probe.model_fields_set:
            raise ValueError("probe.expected_tools names one server's tools; set it in that server's table, "
                             "not in [defaults]")
        return self


def applies(key: str, server: Mapping[str, Any]) -> bool:
    """Whether a ``[defaults]`` key reaches this (raw) server table at all."""
    managed = server.get("managed") is True
    if key in MANAGED_ONLY:
        return managed
    if key in SPAWNED_ONLY:
        return managed or server.get("transport") == "stdio"
    return True


def merge_defaults(defaults: Mapping[str, Any], server: dict[str, Any]) -> dict[str, Any]:
    """The server's raw table with every applicable default it does not set itself (pure)."""
    merged = dict(server)
    for key, value in defaults.items():
        if not applies(key, server):
            continue
        own = server.get(key)
        if key in TABLES and isinstance(value, dict):
            if own is None:
                merged[key] = dict(value)
            elif isinstance(own, dict):
                merged[key] = {**value, **own}
        elif key not in server:
            merged[key] = value
    return merged


def effective_defaults(defaults: Mapping[str, Any], servers: list[Any]) -> dict[str, dict[str, Any]]:
    """For ``check-config``: per ``[defaults]`` key (``probe.interval`` for tables), each raw server
    table's effective value and where it came from (``defaults``, ``server`` or ``n/a``)."""
    report: dict[str, dict[str, Any]] = {}
    for key, value in defaults.items():
        paths = [(key, sub) for sub in value] if key in TABLES and isinstance(value, dict) else [(key, None)]
        for top, sub in paths:
            label = f"{top}.{sub}" if sub else top
            default = value[sub] if sub else value
            per_server: dict[str, Any] = {}
            for server in servers:
                if not isinstance(server, dict) or not isinstance(server.get("name"), str):
                    continue
                own = server.get(top)
                if sub is not None and isinstance(own, dict) and sub in own:
                    per_server[server["name"]] = {"value": own[sub], "from": "server"}
                elif sub is None and top in server:
                    per_server[server["name"]] = {"value": own, "from": "server"}
                elif applies(top, server):
                    per_server[server["name"]] = {"value": default, "from": "defaults"}
                else:
                    per_server[server["name"]] = {"value": None, "from": "n/a"}
            report[label] = {"default": default, "servers": per_server}
    return report
