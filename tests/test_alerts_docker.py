"""The Docker engine down inhibits the per-container alerts; the engine back resolves the group.

A real private engine (tests/docker_engine.py) runs three MCP servers in containers. The daemon
reaches the engine through a small Unix-socket relay the test owns, so "the engine goes away" is
the relay closing (the engine the test itself uses stays) while the containers are stopped, as
they are when dockerd stops. The real supervisor tries to restart them, cannot reach the engine,
and Slack (the real slack-sdk against the stand-in) gets one message led by the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mcp_supervisor.health.model import State
from tests.docker_engine import IMAGE, REPO, DockerEngine, docker_engine  # noqa: F401
from tests.live_daemon import free_port
from tests.test_notify_slack import bot, fake_slack, make_config, supervised, wait_state

pytestmark = [pytest.mark.docker, pytest.mark.timeout(150)]


class Relay:
    """A Unix socket that forwards to the engine's while it is up; ``down()`` closes it and every link."""

    def __init__(self, path: Path, target: str) -> None:
        self.path, self.target = path, target
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_unix_server(self._link, path=str(self.path))

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.discard(writer)
        self._writers.discard(up_writer)


@contextlib.asynccontextmanager
async def relay(path: Path, engine: DockerEngine) -> AsyncIterator[Relay]:
    link = Relay(path, engine.host.removeprefix("unix://"))
    await link.up()
    try:
        yield link
    finally:
        await link.down()


async def test_engine_down_is_one_message_under_the_cause_and_the_engine_back_resolves_it(
    tmp_path: Path, docker_engine: DockerEngine  # noqa: F811
) -> None:
    names = [f"mcp-engine-{i}" for i in range(3)]
    ports = [free_port() for _ in names]
    for name, port in zip(names, ports, strict=True):
        docker_engine.docker("rm", "-f", name, check=False)
        docker_engine.docker(
            "run", "-d", "--name", name, "--network", "host", *docker_engine.host_mounts(), "-w", str(REPO), IMAGE,
            sys.executable, str(REPO / "examples" / "notes_server.py"), "http", str(port),
        )  # fmt: skip
    sock = Path(f"/tmp/h18relay-{free_port()}.sock")
    servers = f'\n[docker]\nhost = "unix://{sock}"\n' + "".join(f"""
[[servers]]
name = "{name}"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"
container = "{name}"
probe = {{ interval = "300ms", timeout = "1s", failure_threshold = 2, start_period = "30s" }}
recovery = {{ backoff_initial = "200ms", backoff_max = "1s" }}
""" for name, port in zip(names, ports, strict=True))
    try:
        async with relay(sock, docker_engine) as link, fake_slack() as fake:
            config = make_config(tmp_path, bot(fake), servers, notify='group_wait = "2s"\ngroup_interval = "1s"')
            async with supervised(config) as (sup, service):
                for name in names:
                    await wait_state(sup, name, State.HEALTHY, 60)
                await link.down()  # the engine goes away for the daemon, and its containers with it
                await asyncio.to_thread(docker_engine.docker, "stop", "-t", "0", *names)
                await fake.wait_for(lambda f: len(f.messages) >= 1, 40, "the alert")
                head = fake.messages[0]["_ts"]
                # on a loaded machine a straggler joins by an edit of the same message, never a second one
                await fake.wait_for(lambda f: f.current_title(head).startswith("3 servers down: Docker engine not "
                                                                                 "answering"), 20, "all three under the cause")
                assert len(fake.messages) == 1 and service.alert_stats["inhibited"] == 3, fake.titles()
                await link.up()  # the engine is back: the ladder restarts the containers
                await fake.wait_for(lambda f: len(f.messages) >= 2, 60, "the resolution")
                assert fake.titles()[1].startswith("3 servers back after") and len(fake.messages) == 2
    finally:
        docker_engine.docker("rm", "-f", *names, check=False)
