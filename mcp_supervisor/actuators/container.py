"""Docker containers through aiodocker: state, health, events, restart and recreate.

Why keep the last inspect data: "recreate" must work after someone (or a crash of the engine's
state) removed the container, and then the engine no longer knows its configuration. The actuator
remembers the configuration of every container it has seen, and recreates from that.

Environment variables of a container are checked by name only; values never leave this module.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiodocker
import aiohttp

from mcp_supervisor.health.model import FailureClass, ProbeKind, ProbeResult
from mcp_supervisor.logging import get_logger

log = get_logger("mcp_supervisor.container")

_EVENT_ACTIONS = ("die", "oom", "kill", "stop", "start", "restart", "destroy", "health_status")

# Keys of a container's inspect data that `containers/create` accepts back (HostConfig as is).
_CREATE_KEYS = (
    "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts",
    "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes",
    "WorkingDir", "Entrypoint", "NetworkDisabled", "MacAddress", "OnBuild", "Labels", "StopSignal",
    "StopTimeout", "Shell",
)  # fmt: skip


@dataclass(frozen=True)
class ContainerState:
    name: str
    exists: bool
    status: str | None = None  # created | running | paused | restarting | removing | exited | dead
    health: str | None = None  # None (no healthcheck) | starting | healthy | unhealthy
    exit_code: int | None = None
    oom_killed: bool = False
    missing_env: tuple[str, ...] = ()
    health_log: str = ""
    engine_error: str | None = None
    """Set when the engine could not be asked at all (down, wrong DOCKER_HOST): state unknown."""


@dataclass(frozen=True)
class ContainerEvent:
    name: str
    action: str  # "die", "oom", "health_status: unhealthy", ...
    attributes: dict[str, str] = field(default_factory=dict)


def env_names(env: Iterable[str] | None) -> set[str]:
    return {item.split("=", 1)[0] for item in env or ()}


def container_probe_result(state: ContainerState) -> ProbeResult:
    """Pure: what the container's state says about the server (the MCP probe says the rest)."""
    kind = ProbeKind.CONTAINER
    if state.engine_error is not None:
        return ProbeResult(
            ok=False,
            failure=FailureClass.REFUSED,
            kind=kind,
            message=f"Docker engine unreachable while checking container {state.name}: {state.engine_error}",
            hint="is dockerd running? check DOCKER_HOST or [docker] host in the supervisor config",
        )
    if not state.exists:
        return ProbeResult(
            ok=False, failure=FailureClass.CRASHED, kind=kind, message=f"container {state.name} does not exist"
        )
    if state.missing_env:
        names = ", ".join(state.missing_env)
        return ProbeResult(
            ok=False,
            failure=FailureClass.CONFIG,
            kind=kind,
            message=f"container {state.name} lacks environment variable(s) {names}",
            hint=f"recreate the container with {names} set (docker run -e ...)",
        )
    if state.status != "running":
        detail = f"exit code {state.exit_code}" if state.exit_code is not None else "not running"
        if state.oom_killed:
            detail += ", killed by the OOM killer"
        return ProbeResult(
            ok=False, failure=FailureClass.CRASHED, kind=kind, message=f"container {state.name} is {state.status} ({detail})"
        )
    if state.health == "unhealthy":
        tail = f": {state.health_log}" if state.health_log else ""
        return ProbeResult(
            ok=False, failure=FailureClass.CRASHED, kind=kind, message=f"container {state.name} is unhealthy{tail}"
        )
    return ProbeResult(ok=True, kind=kind, message=f"container {state.name} running ({state.health or 'no healthcheck'})")


_INSPECT_KEYS = ("Id", "Name", "Image", "State", "Config", "HostConfig")
"""What the actuator reads of ``docker inspect``: the state, and what a recreate needs."""


def _inspected(container: aiodocker.containers.DockerContainer) -> dict[str, Any]:
    """The inspect data ``containers.get`` fetched, through the container's public mapping access
    (``container["State"]``), not aiodocker's private ``_container``: no second request, and no
    reliance on a private attribute that may change in any release."""
    return {key: container[key] for key in _INSPECT_KEYS if key in container}


class DockerActuator:
    """One aiodocker client per daemon; all container servers share it."""

    def __init__(self, host: str | None, required_env: dict[str, Iterable[str]] | None = None) -> None:
        self.host = host
        self._docker: aiodocker.Docker | None = None
        self._recorded: dict[str, dict[str, Any]] = {}
        self._required_env = {name: tuple(keys) for name, keys in (required_env or {}).items()}

    def require_env(self, name: str, keys: Iterable[str]) -> None:
        self._required_env[name] = tuple(keys)

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self.host) if self.host else aiodocker.Docker()
        return self._docker

    async def inspect(self, name: str) -> ContainerState:
        """Never raises for an unreachable engine: that is a state too (``engine_error``)."""
        try:
            info = _inspected(await self._client().containers.get(name))
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return ContainerState(name=name, exists=False)
            return ContainerState(name=name, exists=False, engine_error=f"HTTP {exc.status}: {exc.message}"[:200])
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return ContainerState(name=name, exists=False, engine_error=f"{type(exc).__name__}: {exc}"[:200])
        self._recorded[name] = info
        state = info.get("State", {})
        health = state.get("Health") or {}
        logs = health.get("Log") or []
        required = self._required_env.get(name, ())
        present = env_names(info.get("Config", {}).get("Env"))
        return ContainerState(
            name=name,
            exists=True,
            status=state.get("Status"),
            health=health.get("Status"),
            exit_code=state.get("ExitCode") if state.get("Status") in ("exited", "dead") else None,
            oom_killed=bool(state.get("OOMKilled")),
            missing_env=tuple(k for k in required if k not in present),
            health_log=str(logs[-1].get("Output", "")).strip()[:200] if logs else "",
        )

    async def restart(self, name: str, timeout: float = 10) -> bool:
        container = await self._client().containers.get(name)
        self._recorded[name] = _inspected(container)
        await container.restart(t=int(timeout))
        return (await self.inspect(name)).status == "running"

    async def recreate(self, name: str) -> bool:
        """Remove (if present) and create again from the recorded configuration, then start."""
        await self.inspect(name)  # refreshes the record when the container still exists
        info = self._recorded.get(name)
        if info is None:
            raise RuntimeError(
                f"container {name} was never seen by the supervisor; it cannot be recreated (create it once by hand)"
            )
        config = {k: v for k, v in info.get("Config", {}).items() if k in _CREATE_KEYS}
        config["Image"] = info.get("Config", {}).get("Image") or info.get("Image")
        config["HostConfig"] = info.get("HostConfig", {})
        client = self._client()
        try:
            old = await client.containers.get(name)
            await old.delete(force=True)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
        container = await client.containers.create(config, name=name)
        await container.start()
        log.info("container recreated", container=name)
        return (await self.inspect(name)).status == "running"

    async def events(self, names: Iterable[str], since: float | None = None) -> AsyncIterator[ContainerEvent]:
        """The engine's event stream, filtered to our containers; ends when the stream ends.

        ``since`` (a Unix time) makes the engine replay what happened from then on, so a caller
        that reconnects after a dropped stream (or a test) misses nothing in between.
        """
        wanted = set(names)
        params = {"filters": json.dumps({"type": ["container"], "container": sorted(wanted)})}
        if since is not None:
            params["since"] = f"{since:.9f}"
        client = self._client()
        # aiodocker's public events API: one background reader per client, published to
        # subscribers; stop() ends it (and re-raises what ended it) so a later call starts anew.
        stream: Any = client.events  # untyped in aiodocker
        subscriber = stream.subscribe(**params)
        try:
            while (data := await subscriber.get()) is not None:
                event = _event_from(data, wanted)
                if event is not None:
                    yield event
        finally:
            await stream.stop()

    async def aclose(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None


def _event_from(data: dict[str, Any], wanted: set[str]) -> ContainerEvent | None:
    actor = data.get("Actor") or {}
    attributes = {k: str(v) for k, v in (actor.get("Attributes") or {}).items() if k in ("name", "image", "exitCode")}
    name = attributes.get("name", "")
    action = str(data.get("Action") or data.get("status") or "")
    if name not in wanted or not action.startswith(_EVENT_ACTIONS):
        return None
    return ContainerEvent(name=name, action=action, attributes=attributes)

