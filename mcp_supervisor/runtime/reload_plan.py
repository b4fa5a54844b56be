"""What a reload changes (pure): which servers go, come and change, and what needs a restart.

Why apart from the supervisor: deciding what differs between two configs is a pure comparison
that can be tested without a daemon; applying it (stopping and starting runners in order, keeping
readiness honest meanwhile) is the supervisor's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp_supervisor.config import Config, ServerConfig


@dataclass(frozen=True)
class ReloadPlan:
    removed: list[str]
    added: list[str]
    changed: list[str]
    new_servers: dict[str, ServerConfig]
    replacing: dict[str, bool]
    """The servers not ready until their new runner exists, with whether each is critical (a
    server that was critical stays so while it is replaced)."""
    warnings: list[str]


_RESTART_ONLY = (
    ("the socket path", lambda c: c.supervisor.socket),
    ("[backup] and [[configs]]", lambda c: (c.backup, c.configs)),
    ("[supervisor] logging", lambda c: c.supervisor.log_level),
    ("[supervisor] max_concurrent_handshakes and max_concurrent_cold_probes",
     lambda c: (c.supervisor.max_concurrent_handshakes, c.supervisor.max_concurrent_cold_probes)),
)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    old_servers = {s.name: s for s in old.servers}
    new_servers = {s.name: s for s in new.servers}
    removed = [n for n in old_servers if n not in new_servers]
    added = [n for n in new_servers if n not in old_servers]
    changed = [n for n in new_servers if n in old_servers and new_servers[n] != old_servers[n]]
    replacing = {n: old_servers[n].critical for n in removed} | {
        n: new_servers[n].critical or (n in old_servers and old_servers[n].critical) for n in added + changed
    }
    warnings = [f"{what} changed; this takes effect at the next daemon restart"
                for what, key in _RESTART_ONLY if key(old) != key(new)]
    return ReloadPlan(removed, added, changed, new_servers, replacing, warnings)
