"""The runtime with a container server on a real, private Docker engine (tests/docker_engine.py).

A killed container is noticed from the engine's event stream (not at the next probe tick) and
restarted through the Docker actuator; the MCP server inside answers again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mcp_supervisor.events import Event
from mcp_supervisor.health.model import State
from tests.docker_engine import IMAGE, REPO, DockerEngine, docker_engine  # noqa: F401
from tests.live_daemon import free_port, make_config, running, state, until

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]


async def test_killed_container_is_noticed_by_event_and_restarted(
    tmp_path: Path, docker_engine: DockerEngine  # noqa: F811
) -> None:
    port = free_port()
    name = "mcp-daemon-test"
    docker_engine.docker("rm", "-f", name, check=False)
    docker_engine.docker(
        "run", "-d", "--name", name, "--network", "host", *docker_engine.host_mounts(), "-w", str(REPO), IMAGE,
        sys.executable, str(REPO / "examples" / "notes_server.py"), "http", str(port),
    )  # fmt: skip
    servers = f"""
[docker]
host = "{docker_engine.host}"

[[servers]]
name = "box"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"
container = "{name}"
probe = {{ interval = "5s", timeout = "2s", failure_threshold = 3, start_period = "30s" }}
recovery = {{ backoff_initial = "100ms", backoff_max = "1s" }}
"""
    try:
        async with running(make_config(tmp_path, servers)) as sup:
            await until(sup, lambda: state(sup, "box") is State.HEALTHY, 40, "box healthy")
            events: list[Event] = []
            docker_engine.docker("kill", name)
            await until(
                sup,
                lambda: any(e.kind == "action_done" and e.data["rung"] == "restart" for e in events)
                and state(sup, "box") is State.HEALTHY,
                40,
                "box restarted and healthy",
                seen=events,
            )
            container = [e.data["action"] for e in events if e.kind == "container"]
            assert "die" in container
            failed = next(e for e in events if e.kind == "state" and e.data["new"] == "failed")
            # detected from the engine's view within one loop turn, not after 3 probes x 5 s
            assert "container" in failed.data["reason"]
            done = next(e for e in events if e.kind == "action_done")
            assert done.data["ok"] is True
    finally:
        docker_engine.docker("rm", "-f", name, check=False)
