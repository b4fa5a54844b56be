"""Health probes of MCP servers: the daemon's only view of whether a server works.

Public API (the daemon depends on exactly this): ``ProbeContext``, ``Prober``, ``create_prober``.

What it may import: the layers below it (``config``, ``events``, ``logging``, ``redact``,
``health``), its own layer's ``spawn`` (stdio servers start through the one spawn path) and ``auth.registry``
(an OAuth server's live ``Authorization`` header and fix), and the MCP SDK; never ``runtime``, ``api``, ``web``, ``proxy``, ``cli`` or ``guard``.
"""

from __future__ import annotations

from typing import Protocol

from mcp_supervisor.config import ServerConfig
from mcp_supervisor.health.model import ProbeKind, ProbeResult
from mcp_supervisor.probes.context import ProbeContext

__all__ = ["ProbeContext", "Prober", "create_prober"]


class Prober(Protocol):
    server: ServerConfig

    async def probe(self, kind: ProbeKind) -> ProbeResult:
        """Never raises (except CancelledError); enforces ``server.probe.timeout`` per phase."""
        ...

    async def aclose(self) -> None:
        """Stop warm instances and sessions; nothing is left behind."""
        ...


def create_prober(server: ServerConfig, context: ProbeContext) -> Prober:
    from mcp_supervisor.probes.mcp import McpProber

    return McpProber(server, context)
