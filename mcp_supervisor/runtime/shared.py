"""The long-lived resources every runner of one daemon shares, made on first use, closed once.

Why apart from the supervisor: each one (the plain HTTP session of the executor's checks, the
Docker actuator, the probers' ``ProbeContext``) has its own making and closing rules; the
supervisor only asks for them and closes them all at the end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp

from mcp_supervisor.config import Config
from mcp_supervisor.probes import ProbeContext


class SharedResources:
    def __init__(self, config: Callable[[], Config], pressure: Callable[[], float] | None = None) -> None:
        self._config = config
        settings = config().supervisor
        self.probe_context = ProbeContext(max_concurrent_cold=settings.max_concurrent_cold_probes,
                                          max_concurrent_handshakes=settings.max_concurrent_handshakes,
                                          state_dir=Path(config().state_dir), pressure=pressure)
        self._http: aiohttp.ClientSession | None = None
        self.docker: Any = None

    async def get_http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def get_docker(self) -> Any:
        """The Docker actuator when any server names a container (None otherwise)."""
        config = self._config()
        if self.docker is None and any(s.container for s in config.servers):
            from mcp_supervisor.actuators.container import DockerActuator

            required: dict[str, Iterable[str]] = {s.container: tuple(s.env) for s in config.servers if s.container}
            self.docker = DockerActuator(os.environ.get("DOCKER_HOST") or config.docker.host, required_env=required)
        return self.docker

    def require_env(self, config: Config) -> None:
        """A reload: the actuator checks the new config's container environments."""
        if self.docker is not None:
            for server in config.servers:
                if server.container:
                    self.docker.require_env(server.container, tuple(server.env))

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self.docker is not None:
            with contextlib.suppress(Exception):
                await self.docker.aclose()
            self.docker = None
        with contextlib.suppress(Exception):
            await self.probe_context.aclose()
