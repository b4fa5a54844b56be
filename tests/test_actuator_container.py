"""Docker containers through aiodocker against a real, private engine (see tests/docker_engine.py)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from mcp_supervisor.actuators.container import (
    ContainerEvent,
    ContainerState,
    DockerActuator,
    container_probe_result,
)
from mcp_supervisor.health.model import FailureClass
from tests.docker_engine import IMAGE, REPO, DockerEngine, running_engine, why_no_docker

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    reason = why_no_docker()
    if reason:
        pytest.skip(reason)
    with running_engine() as engine:
        yield engine


@pytest.fixture
async def actuator(engine: DockerEngine) -> AsyncIterator[DockerActuator]:
    actuator = DockerActuator(engine.host)
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


async def next_event(events: AsyncIterator[ContainerEvent], action_prefix: str, timeout: float = 20) -> ContainerEvent:
    async with asyncio.timeout(timeout):
        async for event in events:
            if event.action.startswith(action_prefix):
                return event
    raise AssertionError("event stream ended")


async def test_dead_container_is_seen_by_event_and_restarted(engine: DockerEngine, actuator: DockerActuator) -> None:
    run_container(engine, "sleeper", IMAGE, "sleep", "300")
    state = await wait_state(actuator, "sleeper", lambda s: s.status == "running")
    assert container_probe_result(state).ok
    events = actuator.events({"sleeper"})
    listener = asyncio.ensure_future(next_event(events, "die"))
    await asyncio.sleep(0.3)  # let the subscription reach the engine before the kill
    engine.docker("kill", "sleeper")
    event = await listener
    assert event.name == "sleeper"
    await events.aclose()
    dead = await wait_state(actuator, "sleeper", lambda s: s.status == "exited")
    result = container_probe_result(dead)
    assert result.failure is FailureClass.CRASHED and "exit code 137" in result.message
    assert await actuator.restart("sleeper", timeout=1)
    engine.docker("rm", "-f", "sleeper")


async def test_unhealthy_container_reports_health_events(engine: DockerEngine, actuator: DockerActuator) -> None:
    run_container(
        engine,
        "health",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        IMAGE,
        "sh",
        "-c",
        "touch /tmp/ok; sleep 300",
    )
    await wait_state(actuator, "health", lambda s: s.health == "healthy")
    events = actuator.events({"health"})
    listener = asyncio.ensure_future(next_event(events, "health_status: unhealthy"))
    await asyncio.sleep(0.3)
    engine.docker("exec", "health", "rm", "/tmp/ok")
    await listener
    await events.aclose()
    state = await wait_state(actuator, "health", lambda s: s.health == "unhealthy")
    assert not container_probe_result(state).ok
    assert await actuator.restart("health", timeout=1)  # the restart brings the file back
    await wait_state(actuator, "health", lambda s: s.health == "healthy")
    engine.docker("rm", "-f", "health")


async def test_removed_container_is_recreated_from_its_recorded_config(
    engine: DockerEngine, actuator: DockerActuator
) -> None:
    run_container(engine, "victim", "--label", "role=mcp", IMAGE, "sleep", "300", env=("JIRA_TOKEN=s3cret",))
    before = await wait_state(actuator, "victim", lambda s: s.status == "running")
    engine.docker("rm", "-f", "victim")
    gone = await actuator.inspect("victim")
    assert not gone.exists and not container_probe_result(gone).ok
    assert await actuator.recreate("victim")
    after = await wait_state(actuator, "victim", lambda s: s.status == "running")
    labels = engine.docker("inspect", "-f", "{{.Config.Labels.role}} {{.Config.Cmd}}", "victim").stdout.strip()
    assert labels == "mcp [sleep 300]"
    assert after.exists and before.exists
    engine.docker("rm", "-f", "victim")


async def test_missing_required_env_is_named_without_values(engine: DockerEngine, actuator: DockerActuator) -> None:
    run_container(engine, "envy", IMAGE, "sleep", "300", env=("GITLAB_URL=http://x", "OTHER=value-secret"))
    actuator.require_env("envy", ["GITLAB_URL", "GITLAB_TOKEN"])
    state = await wait_state(actuator, "envy", lambda s: s.status == "running")
    result = container_probe_result(state)
    assert result.failure is FailureClass.CONFIG
    assert "GITLAB_TOKEN" in result.message and "GITLAB_URL" not in result.message
    assert "value-secret" not in result.message + (result.hint or "")
    engine.docker("rm", "-f", "envy")


async def test_container_runs_a_real_mcp_server_the_host_reaches(engine: DockerEngine, actuator: DockerActuator) -> None:
    from mcp import Client

    port = _free_port()
    run_container(
        engine, "mcp", "-w", str(REPO), IMAGE, sys.executable, str(REPO / "examples" / "notes_server.py"), "http",
        str(port),
    )  # fmt: skip
    await wait_state(actuator, "mcp", lambda s: s.status == "running")
    deadline = time.monotonic() + 30
    while True:
        try:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                tools = await client.list_tools()
                break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    assert {t.name for t in tools.tools} >= {"add_note", "list_notes"}
    engine.docker("rm", "-f", "mcp")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

