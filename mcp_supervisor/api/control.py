"""What the control API needs from the running supervisor.

The API server is written against this protocol, not against the daemon, so it can be tested with
the real daemon core and the daemon can change its internals without touching the routes.
"""

from __future__ import annotations

from typing import Any, Protocol

from mcp_supervisor.events import EventBus
from mcp_supervisor.health.model import Command


class SupervisorControl(Protocol):
    bus: EventBus

    def status(self) -> dict[str, Any]:
        """``{"ready": bool, "servers": [{"name", "state", "since", "failure_class", "message",
        "latency_ms", "critical", "fallback", ...}]}``; JSON-able, secret-free."""
        ...

    def readiness(self, servers: list[str] | None = None) -> dict[str, Any]:
        """``{"ready": bool, "daemon": "starting"|"running"|"reloading"|"stopping",
        "not_ready": [{"name", "state", "reason"}], "fallback": [names]}``; never ready while the
        daemon starts or stops. Raises ``health.model.UnknownServer`` for a name not configured."""
        ...

    async def wait_ready(self, servers: list[str] | None, timeout: float) -> dict[str, Any]:
        """Like readiness() but waits (event-driven, no polling) up to ``timeout`` seconds."""
        ...

    async def probe_now(self, name: str) -> dict[str, Any]:
        """Run a probe of ``name`` now and return the result (JSON-able). Raises ``health.model.UnknownServer``."""
        ...

    async def command(self, name: str | None, cmd: Command) -> dict[str, Any]:
        """recover/pause/resume/emergency for one server (or all when name is None for emergency)."""
        ...

    async def reload(self) -> dict[str, Any]:
        """Reload the config file; an invalid one is rejected and the old one keeps running."""
        ...
