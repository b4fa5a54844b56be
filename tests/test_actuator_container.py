"""Docker containers through aiodocker against a real, private engine (see tests/docker_engine.py)."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable

import pytest

from mcp_supervisor.actuators.container import (
    ContainerEvent,
    ContainerState,
    DockerActuator,
    container_probe_result,
)
from mcp_supervisor.health.model import FailureClass, ProbeKind
from tests.docker_engine import IMAGE, REPO, DockerEngine, docker_engine  # noqa: F401


@pytest.fixture
async def actuator(docker_engine: DockerEngine) -> AsyncIterator[DockerActuator]:  # noqa: F811
    actuator = DockerActuator(docker_engine.host)
    yield actuator
    await actuator.aclose()


async def wait_state(
    actuator: DockerActuator, name: str, predicate: Callable[[ContainerState], bool], timeout: float = 20
) -> ContainerState:
    async with asyncio.timeout(timeout):
        while True:
            state = await actuator.inspect(name)
            if predicate(state):
                return state
            await asyncio.sleep(0.1)


def run_container(engine: DockerEngine, name: str, *args: str, env: tuple[str, ...] = ()) -> None:
    env_args = [a for item in env for a in ("-e", item)]
    engine.docker("rm", "-f", name, check=False)
    engine.docker("run", "-d", "--name", name, "--network", "host", *engine.host_mounts(), *env_args, *args)


async def collect(
    actuator: DockerActuator, name: str, since: float, wanted: list[str], timeout: float = 20
) -> list[ContainerEvent]:
    """Events for ``name`` from ``since`` (replayed by the engine, so no race) until all of ``wanted``."""
    seen: list[ContainerEvent] = []
    remaining = list(wanted)
    events = actuator.events({name}, since=since)
    try:
        async with asyncio.timeout(timeout):
            async for event in events:
                seen.append(event)
                remaining = [w for w in remaining if not event.action.startswith(w)]
                if not remaining:
                    return seen
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    raise AssertionError(f"event stream ended before {remaining}; saw {[e.action for e in seen]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the engine's view mapped to probe results (pure) ----------------------------------------


def test_probe_result_maps_each_container_state() -> None:
    def result(**kw: object) -> tuple[bool, FailureClass | None]:
        r = container_probe_result(ContainerState(name="c", **kw))  # type: ignore[arg-type]
        assert r.kind is ProbeKind.CONTAINER
        return r.ok, r.failure

    assert result(exists=True, status="running", health="healthy") == (True, None)
    assert result(exists=True, status="running") == (True, None)
    assert result(exists=True, status="running", health="starting") == (True, None)
    assert result(exists=True, status="running", health="unhealthy") == (False, FailureClass.CRASHED)
    assert result(exists=True, status="exited", exit_code=1) == (False, FailureClass.CRASHED)
    assert result(exists=False) == (False, FailureClass.CRASHED)
    assert result(exists=True, status="running", missing_env=("TOKEN",)) == (False, FailureClass.CONFIG)
    assert result(exists=False, engine_error="ConnectionRefusedError") == (False, FailureClass.REFUSED)
    oom = container_probe_result(ContainerState(name="c", exists=True, status="exited", exit_code=137, oom_killed=True))
    assert "OOM" in oom.message and "137" in oom.message


async def test_unreachable_engine_is_a_refused_probe_not_an_exception(short_tmp: object) -> None:
    actuator = DockerActuator(f"unix://{short_tmp}/no-such.sock")
    try:
        state = await actuator.inspect("anything")
    finally:
        await actuator.aclose()
    result = container_probe_result(state)
    assert result.failure is FailureClass.REFUSED and "DOCKER_HOST" in (result.hint or "")


# --- a real engine ---------------------------------------------------------------------------

@pytest.mark.docker
async def test_dead_container_is_seen_by_event_and_restarted(
    docker_engine: DockerEngine, actuator: DockerActuator  # noqa: F811
) -> None:
    run_container(docker_engine, "sleeper", IMAGE, "sleep", "300")
    state = await wait_state(actuator, "sleeper", lambda s: s.status == "running")
    assert container_probe_result(state).ok
    since = time.time()
    docker_engine.docker("kill", "sleeper")
    events = await collect(actuator, "sleeper", since, ["die"])
    assert events[-1].name == "sleeper" and events[-1].attributes.get("exitCode") == "137"
    dead = await actuator.inspect("sleeper")
    result = container_probe_result(dead)
    assert result.failure is FailureClass.CRASHED and "exit code 137" in result.message
    since = time.time()
    assert await actuator.restart("sleeper", timeout=1)
    assert [e.action for e in await collect(actuator, "sleeper", since, ["start"])][-1] == "start"
    docker_engine.docker("rm", "-f", "sleeper")


@pytest.mark.docker
async def test_unhealthy_container_reports_health_events(
    docker_engine: DockerEngine, actuator: DockerActuator  # noqa: F811
) -> None:
    run_container(
        docker_engine, "health", "--health-cmd", "test -f /tmp/ok", "--health-interval", "1s",
        "--health-retries", "1", IMAGE, "sh", "-c", "touch /tmp/ok; sleep 300",
    )  # fmt: skip
    await wait_state(actuator, "health", lambda s: s.health == "healthy")
    since = time.time()
    docker_engine.docker("exec", "health", "rm", "/tmp/ok")
    events = await collect(actuator, "health", since, ["health_status: unhealthy"])
    assert events[-1].action == "health_status: unhealthy"
    state = await actuator.inspect("health")
    assert state.health == "unhealthy"
    assert not container_probe_result(state).ok
    assert await actuator.restart("health", timeout=1)  # the restart brings the file back
    await wait_state(actuator, "health", lambda s: s.health == "healthy")
    docker_engine.docker("rm", "-f", "health")


@pytest.mark.docker
async def test_removed_container_is_recreated_from_its_recorded_config(
    docker_engine: DockerEngine, actuator: DockerActuator  # noqa: F811
) -> None:
    run_container(
        docker_engine, "victim", "--label", "role=mcp", "--health-cmd", "true", "--health-interval", "1s",
        IMAGE, "sleep", "300", env=("JIRA_TOKEN=s3cret",),
    )  # fmt: skip
    before = await wait_state(actuator, "victim", lambda s: s.status == "running")
    since = time.time()
    docker_engine.docker("rm", "-f", "victim")
    gone = await actuator.inspect("victim")
    assert not gone.exists and gone.engine_error is None and not container_probe_result(gone).ok
    assert await actuator.recreate("victim")
    actions = [e.action for e in await collect(actuator, "victim", since, ["destroy", "start"])]
    assert actions.index("destroy") < actions.index("start")
    after = await wait_state(actuator, "victim", lambda s: s.health == "healthy")
    fmt = "{{.Config.Labels.role}} {{.Config.Cmd}} {{.HostConfig.NetworkMode}} {{len .HostConfig.Binds}}"
    assert docker_engine.docker("inspect", "-f", fmt, "victim").stdout.split()[:4] == [
        "mcp", "[sleep", "300]", "host"
    ]
    env = docker_engine.docker("inspect", "-f", "{{json .Config.Env}}", "victim").stdout
    assert "JIRA_TOKEN=s3cret" in env  # the same configuration, secrets included, but never logged
    assert after.exists and before.exists
    docker_engine.docker("rm", "-f", "victim")


@pytest.mark.docker
async def test_recreate_of_a_never_seen_container_says_what_to_do(actuator: DockerActuator) -> None:
    with pytest.raises(RuntimeError, match="never seen by the supervisor"):
        await actuator.recreate("ghost")


@pytest.mark.docker
async def test_missing_required_env_is_named_without_values(
    docker_engine: DockerEngine, actuator: DockerActuator  # noqa: F811
) -> None:
    run_container(docker_engine, "envy", IMAGE, "sleep", "300", env=("GITLAB_URL=http://x", "OTHER=value-secret"))
    actuator.require_env("envy", ["GITLAB_URL", "GITLAB_TOKEN"])
    state = await wait_state(actuator, "envy", lambda s: s.status == "running")
    assert state.missing_env == ("GITLAB_TOKEN",)
    result = container_probe_result(state)
    assert result.failure is FailureClass.CONFIG
    assert "GITLAB_TOKEN" in result.message and "GITLAB_URL" not in result.message
    assert "value-secret" not in result.message + (result.hint or "") + repr(state)
    docker_engine.docker("rm", "-f", "envy")


@pytest.mark.docker
async def test_a_real_mcp_server_in_a_container_answers_again_after_kill_and_restart(
    docker_engine: DockerEngine, actuator: DockerActuator  # noqa: F811
) -> None:
    from mcp import Client

    port = free_port()
    run_container(
        docker_engine, "mcp", "-w", str(REPO), IMAGE, sys.executable, str(REPO / "examples" / "notes_server.py"),
        "http", str(port),
    )  # fmt: skip

    async def tool_names() -> set[str]:
        deadline = time.monotonic() + 30
        while True:
            try:
                async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                    return {t.name for t in (await client.list_tools()).tools}
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    assert {"add_note", "list_notes"} <= await tool_names()
    since = time.time()
    docker_engine.docker("kill", "mcp")
    await collect(actuator, "mcp", since, ["die"])
    assert await actuator.restart("mcp", timeout=1)
    assert {"add_note", "list_notes"} <= await tool_names()
    docker_engine.docker("rm", "-f", "mcp")


@pytest.mark.docker
async def test_oom_killed_container_is_reported_as_such(
    docker_engine: DockerEngine, actuator: DockerActuator  # noqa: F811
) -> None:
    if docker_engine.docker("info", "-f", "{{.MemoryLimit}}").stdout.strip() != "true":
        pytest.skip("this kernel gives dockerd no memory cgroup: a memory limit cannot be set")
    since = time.time()
    hog = "x = []\nwhile True: x.append(bytearray(1 << 20))"
    run_container(
        docker_engine, "hog", "--memory", "32m", "--memory-swap", "32m", IMAGE, sys.executable, "-c", hog
    )
    actions = [e.action for e in await collect(actuator, "hog", since, ["oom", "die"])]
    assert "oom" in actions
    state = await wait_state(actuator, "hog", lambda s: s.status == "exited")
    assert state.oom_killed and state.exit_code == 137
    result = container_probe_result(state)
    assert result.failure is FailureClass.CRASHED and "OOM" in result.message
    docker_engine.docker("rm", "-f", "hog")


def test_the_actuator_reads_containers_through_aiodocker_public_api_only() -> None:
    """``_container`` is aiodocker's private attribute (it may change in any release); the inspect
    data comes through the container's mapping access (the tests above drive it on a real engine)."""
    import ast
    import inspect

    import mcp_supervisor.actuators.container as module

    private = [node.lineno for node in ast.walk(ast.parse(inspect.getsource(module)))
               if isinstance(node, ast.Attribute) and node.attr == "_container"]
    assert private == [], f"aiodocker's private _container read at lines {private}"
