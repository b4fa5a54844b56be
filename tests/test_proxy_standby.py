"""A managed HTTP server with a warm standby behind the proxy: what a job and an operator notice.

The job: a loop of read-only calls goes on across a kill -9 of the primary with 0 failed calls,
answered by the standby at once. The operator: ``status`` shows the roles swapped (the standby's
port now serves; the old primary, restarted, is the standby and healthy again), readiness counts
the server ready. Bad standby settings are refused at load with the field and the fix.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_supervisor.config import ConfigError, parse_config
from tests.live_daemon import BIN, PY, api, cli, free_port, server_status, stop, supervisor_table, wait_for
from tests.servers.fixtures import RUN_AS

PROXIED = Path(__file__).parent / "servers" / "proxied.py"


@dataclass
class StandbyDaemon:
    directory: Path
    sock: Path
    port: int
    ports: tuple[int, int]
    proc: subprocess.Popen[bytes]

    @property
    def token(self) -> str:
        return (self.directory / "state" / "proxy.token").read_text().strip()

    def entry(self) -> dict[str, Any]:
        return server_status(self.sock, "pay")

    def both_healthy(self) -> dict[str, Any] | None:
        if not self.sock.exists():
            return None
        entry = self.entry()
        standby = entry.get("standby") or {}
        return entry if entry["state"] == "healthy" and standby.get("state") == "healthy" else None


@pytest.fixture(scope="module")
def standby_daemon() -> Iterator[StandbyDaemon]:
    directory = Path(tempfile.mkdtemp(prefix="mcpstandby-", dir="/tmp"))
    port, first, second = free_port(), free_port(), free_port()
    config = directory / "mcp-supervisor.toml"
    config.write_text(supervisor_table(directory, shutdown_timeout="3s") + f"""
[proxy]
listen = "127.0.0.1:{port}"
hold = "20s"

[[servers]]
name = "pay"
transport = "http"
url = "http://127.0.0.1:{{port}}/mcp"
ports = [{first}, {second}]
standby = 1
managed = true
command = "{PY}"
args = ["{PROXIED}", "http", "{{port}}", "{directory / 'charges.txt'}"]
{RUN_AS}
probe = {{ interval = "300ms", timeout = "2s", failure_threshold = 1, start_period = "20s" }}
recovery = {{ backoff_initial = "50ms", max_attempts = 1000 }}
""")
    with open(directory / "daemon.log", "ab") as log:
        proc = subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(config)], stderr=log)
    daemon = StandbyDaemon(directory, directory / "ctl.sock", port, (first, second), proc)
    try:
        wait_for(daemon.both_healthy, 60, "the primary and its standby healthy")
        yield daemon
    finally:
        stop(proc)
        shutil.rmtree(directory, ignore_errors=True)


def _text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def _loop_across_kill(daemon: StandbyDaemon, mode: str) -> tuple[list[str], list[str], int]:
    """Call ``lookup`` in a loop; kill -9 the primary after 10 calls; go on until 10 answers
    came from another process. Returns the answers, the failures and the killed pid."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {daemon.token}"}, timeout=httpx2.Timeout(30.0))
    url = f"http://127.0.0.1:{daemon.port}/servers/pay/mcp"
    answers: list[str] = []
    failures: list[str] = []
    killed = 0
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        after = 0
        for index in range(400):
            if index == 10:
                killed = daemon.entry()["pid"]
                os.kill(killed, signal.SIGKILL)
            try:
                answer = _text(await client.call_tool("lookup", {"query": str(index)}))
            except Exception as exc:  # the test counts failures; it must not stop at the first
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            answers.append(answer)
            if killed and f"(pid {killed})" not in answer:
                after += 1
                if after >= 10:
                    break
    return answers, failures, killed


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_kill_of_the_primary_switches_to_the_standby_without_a_failed_call(
        standby_daemon: StandbyDaemon, mode: str) -> None:
    daemon = standby_daemon
    before = wait_for(daemon.both_healthy, 60, "both instances healthy before the kill")
    answers, failures, killed = asyncio.run(_loop_across_kill(daemon, mode))
    assert failures == [], failures
    standby_pid = before["standby"]["pid"]
    assert answers[-1].endswith(f"(pid {standby_pid})"), (answers[-3:], before["standby"])  # the standby answered

    after = wait_for(daemon.both_healthy, 60, "the old primary back as a healthy standby")
    assert after["standby"]["primary_port"] == before["standby"]["port"]  # roles swapped
    assert after["standby"]["port"] == before["standby"]["primary_port"]
    assert after["pid"] == standby_pid and after["standby"]["pid"] not in (None, killed)
    assert after["standby"]["swaps"] == before["standby"]["swaps"] + 1
    assert "SIGKILL" in (after["standby"]["last_swap"] or "")
    status, ready = api(daemon.sock, "/v1/ready")
    assert status == 200 and ready["ready"] is True

    table = cli(daemon.sock, "status").stdout
    assert f"standby :{after['standby']['port']} healthy" in table


@pytest.mark.parametrize(("change", "words"), [
    ({"ports": "[8765]"}, "must list exactly two ports"),
    ({"ports": "[8765, 8765]"}, "is the primary's port too"),
    ({"ports": None}, "url contains {port}"),
    ({"ports": None, "url": '"http://127.0.0.1:8765/mcp"'}, "needs a second port"),
    ({"args": '["srv.py"]'}, "must be told its port"),
    ({"managed": "false"}, "needs managed = true"),
    ({"standby": "0"}, "set standby = 1, or remove them"),
])
def test_bad_standby_settings_are_refused_with_the_field_and_the_fix(
        tmp_path: Path, change: dict[str, str | None], words: str) -> None:
    fields = {"name": '"pay"', "transport": '"http"', "url": '"http://127.0.0.1:{port}/mcp"',
              "ports": "[8765, 8766]", "standby": "1", "managed": "true", "command": '"python"',
              "args": '["srv.py", "--port", "{port}"]', **change}
    text = "[[servers]]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items() if v is not None)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "c.toml")
    message = str(caught.value)
    assert "c.toml" in message and "servers[0] (pay)" in message and words in message, message


def test_a_standby_port_another_server_uses_is_refused(tmp_path: Path) -> None:
    text = """
[[servers]]
name = "pay"
transport = "http"
url = "http://127.0.0.1:8765/mcp"
standby_port = 8766
standby = 1
managed = true
command = "python"
args = ["srv.py", "--port", "{port}"]

[[servers]]
name = "other"
transport = "http"
url = "http://localhost:8766/mcp"
"""
    with pytest.raises(ConfigError, match="port 8766 is used by server 'other' too"):
        parse_config(text, tmp_path / "c.toml")
    config = parse_config(text.replace("8766/mcp", "9000/mcp"), tmp_path / "c.toml")
    pay = config.servers[0]
    standby = pay.standby_instance()
    assert pay.args[-1] == "8765" and standby is not None and standby.args[-1] == "8766"
    assert standby.url == "http://127.0.0.1:8766/mcp"
    assert json.dumps(pay.model_dump(mode="json"))  # still a plain model for check-config and reload


def test_the_standby_in_the_cli_the_dashboard_text_and_the_page() -> None:
    from mcp_supervisor.cli.render import status_table
    from mcp_supervisor.web.summary import build_summary

    standby = {"state": "backoff", "healthy": False, "reason": "the standby killed by SIGKILL", "port": 8765,
               "url": "http://127.0.0.1:8765/mcp", "pid": None, "primary_port": 8766, "since": 1.0, "swaps": 2,
               "last_swap": "the primary on port 8765 killed by SIGKILL; the standby took over"}
    status = {"ready": True, "servers": [{"name": "pay", "state": "healthy", "since": 1.0, "message": "answered",
                                          "critical": True, "standby": standby}]}
    assert "(primary :8766, standby :8765 backoff, 2 swaps)" in status_table(status)
    page = build_summary(status, title="t", now=2.0, scrub=str)
    assert page["servers"][0]["standby"] == {"state": "backoff", "swaps": 2}  # no ports or pids on the page


def test_a_healthy_standby_keeps_the_server_ready_with_a_note_and_only_while_healthy() -> None:
    from mcp_supervisor.health.model import State
    from mcp_supervisor.runtime.readiness import Roster, readiness
    from mcp_supervisor.runtime.snapshot import Board, ServerView

    board = Board(lambda view: {"name": view.name})
    roster = Roster.of([("pay", True)])

    def put(state: State, standby_state: str) -> dict[str, Any]:
        board.put(ServerView("pay", True, "http", "process", False, state, 0.0, "managed process killed by SIGKILL",
                             1, standby={"state": standby_state, "healthy": standby_state == "healthy", "port": 8766}))
        return readiness(board, roster, phase="running", started=True, replacing={})

    answer = put(State.BACKOFF, "healthy")
    assert answer["ready"] is True
    assert "the standby on port 8766 is healthy and serves" in answer["standby"][0]["reason"]
    from mcp_supervisor.cli.render import ready_line

    assert ready_line(answer).startswith("ready; note: pay: the primary is backoff")
    answer = put(State.BACKOFF, "starting")
    assert answer["ready"] is False and "standby" not in answer
    assert put(State.HEALTHY, "failed")["ready"] is True  # a failing standby never makes a server unready


def test_a_killed_standby_is_restarted_and_the_primary_never_notices(standby_daemon: StandbyDaemon) -> None:
    daemon = standby_daemon
    before = wait_for(daemon.both_healthy, 60, "both instances healthy")
    os.kill(before["standby"]["pid"], signal.SIGKILL)
    after = wait_for(lambda: (e := daemon.both_healthy()) and e["standby"]["pid"] != before["standby"]["pid"] and e,
                     60, "the standby restarted and healthy")
    assert after["pid"] == before["pid"] and after["since"] == before["since"]  # the primary: no incident
    assert after["standby"]["port"] == before["standby"]["port"]
    assert after["standby"]["swaps"] == before["standby"]["swaps"]
