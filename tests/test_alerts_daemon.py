"""Grouping, silences and maintenance with real parts: real MCP servers, the real supervisor and
daemon binary, the real slack-sdk against the local Slack stand-in, the CLI over the socket.

Twelve configured servers are served by one MCP process: killing it fails all twelve at once,
the way a network drop or an engine restart does.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.live_daemon import BIN, api, cli, free_port, notes_http, stop, supervisor_table, wait_for
from tests.slack_fake import FakeSlack
from tests.test_notify_slack import bot, fake_slack, make_config, supervised

pytestmark = pytest.mark.timeout(150)
GROUPED = 'group_wait = "1500ms"\ngroup_interval = "1s"\npace = "0s"'


def twelve(port: int) -> str:
    return "".join(f"""
[[servers]]
name = "srv{i:02d}"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"
probe = {{ interval = "300ms", timeout = "1s", failure_threshold = 2 }}
""" for i in range(12))


async def test_twelve_servers_failing_together_are_one_message_updated_in_place_and_one_resolution(
    tmp_path: Path,
) -> None:
    port = free_port()
    notes = await asyncio.to_thread(notes_http, port)
    names = {f"srv{i:02d}" for i in range(12)}
    try:
        async with fake_slack() as fake:
            config = make_config(tmp_path, bot(fake), twelve(port), notify=GROUPED)
            async with supervised(config) as (sup, service):
                await asyncio.to_thread(wait_for, lambda: all(str(r.state) == "healthy" for r in sup.runners.values()),
                                        40, "twelve servers healthy")
                stop(notes, signal.SIGKILL)
                await fake.wait_for(lambda f: len(f.messages) >= 1, 30, "the grouped alert")
                head = fake.messages[0]["_ts"]
                await fake.wait_for(lambda f: all(n in json.dumps(f.current[head]) for n in names), 20,
                                    "the one message naming all twelve")
                assert len(fake.messages) == 1, fake.titles()  # later stragglers are edits, not messages
                assert fake.current_title(head).startswith("12 servers down: no HTTP server answers (network down?)")
                notes = await asyncio.to_thread(notes_http, port)
                await fake.wait_for(lambda f: len(f.messages) == 2, 40, "the one resolution")
                await fake.wait_for(lambda f: f.current_title(head).startswith("12 servers back"), 10,
                                    "the alert edited to resolved")
                assert fake.messages[1]["thread_ts"] == head
                assert fake.titles()[1].startswith("12 servers back after")
                assert service.alert_stats["grouped"] == 12
    finally:
        stop(notes)


# --- the daemon binary: silences across a kill -9, expiry, maintenance in the record --------------------


def _config(tmp: Path, fake: FakeSlack, port_a: int, port_b: int) -> Path:
    path = tmp / "mcp-supervisor.toml"
    path.write_text(supervisor_table(tmp) + f"""
[notify]
group_wait = "300ms"
group_interval = "300ms"
[notify.slack]
webhook_url = "{fake.webhook_url}"
[[servers]]
name = "notes"
transport = "http"
url = "http://127.0.0.1:{port_a}/mcp"
probe = {{ interval = "300ms", timeout = "1s", failure_threshold = 2 }}
[[servers]]
name = "other"
transport = "http"
url = "http://127.0.0.1:{port_b}/mcp"
probe = {{ interval = "300ms", timeout = "1s", failure_threshold = 2 }}
""")
    return path


def _start(tmp: Path, config: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "MCP_SUPERVISOR_SOCKET")}
    with open(tmp / "daemon.log", "ab") as log:
        return subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(config)], env=env, stdout=log, stderr=log)


def _json(sock: Path, *args: str) -> Any:
    done = cli(sock, *args, "--json")
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return json.loads(done.stdout)


def _states(sock: Path) -> dict[str, Any]:
    try:
        status, body = api(sock, "/v1/status")
    except OSError:
        return {}
    return {s["name"]: s for s in body["servers"]} if status == 200 else {}


def _get(sock: Path, path: str) -> Any:
    try:
        status, body = api(sock, path)
    except OSError:
        return None
    return body if status == 200 else None


async def _until(condition: Any, timeout: float, what: str) -> Any:
    return await asyncio.to_thread(wait_for, condition, timeout, what, 0.2)


def _notifier_answers(sock: Path) -> bool:
    """The notifier has its store open: ending an unknown silence is refused (400, exit 1), not
    left waiting (the CLI gives up after 10 s with exit 3 while the record is still opening)."""
    return cli(sock, "unsilence", "no-such-silence", "--json").returncode == 1


async def test_silence_survives_kill_9_holds_the_alert_records_it_until_ended_maintenance_is_not_downtime(
    tmp_path: Path,
) -> None:
    port_a, port_b = free_port(), free_port()
    a = await asyncio.to_thread(notes_http, port_a)
    b = await asyncio.to_thread(notes_http, port_b)
    sock = tmp_path / "ctl.sock"
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        async with fake_slack() as fake:
            config = _config(tmp_path, fake, port_a, port_b)
            daemons.append(_start(tmp_path, config))
            both = {"notes", "other"}
            await _until(lambda: {n for n, s in _states(sock).items() if s["state"] == "healthy"} == both, 40,
                         "both servers healthy")
            await _until(lambda: _notifier_answers(sock), 60, "the notifier's store open")
            silence = await asyncio.to_thread(_json, sock, "silence", "notes", "--for", "1h", "--reason", "token")
            window = await asyncio.to_thread(_json, sock, "maintenance", "other", "--for", "6s", "--reason", "upgrade")
            assert silence["kind"] == "silence" and window["kind"] == "maintenance"

            # maintenance: paused, said so, and not required for ready
            await _until(lambda: (_states(sock).get("other") or {}).get("maintenance"), 10, "other in maintenance")
            assert _states(sock)["other"]["state"] == "paused"
            ready = await asyncio.to_thread(cli, sock, "ready")
            assert ready.returncode == 0, ready.stdout + ready.stderr
            table = await asyncio.to_thread(subprocess.run, [str(BIN / "supervisorctl-mcp"), "--socket", str(sock),
                                            "status"], capture_output=True, text=True, timeout=30,
                                            env={**os.environ, "COLUMNS": "200"})
            assert "maintenance until" in table.stdout and "upgrade" in table.stdout, table.stdout

            # a kill -9 and a restart keep the silence
            daemons[0].send_signal(signal.SIGKILL)
            daemons[0].wait(timeout=10)
            daemons.append(_start(tmp_path, config))
            await _until(lambda: (_get(sock, "/v1/silences") or {}).get("silences"), 30, "the restarted daemon")
            listed = await asyncio.to_thread(_json, sock, "silences")
            assert silence["id"] in {s["id"] for s in listed}
            wrong = await asyncio.to_thread(cli, sock, "silence", "nope", "--for", "1h")
            assert wrong.returncode != 0 and "no server named 'nope'" in wrong.stderr, wrong.stderr

            # notes fails while silenced: recorded, not sent; once the silence ends, the alert flows
            stop(a, signal.SIGKILL)
            await _until(lambda: any(e["kind"] == "alert" and e["server"] == "notes"
                                     for e in (_get(sock, "/v1/history") or {}).get("events", [])), 30,
                         "the silenced alert in the record")
            shown = await asyncio.to_thread(_json, sock, "history", "--server", "notes")
            assert any(e["detail"].startswith(f"not sent (silenced by {silence['id']})") for e in shown), shown
            assert not any("notes" in t for t in fake.titles()), fake.titles()
            ended = await asyncio.to_thread(_json, sock, "unsilence", silence["id"])
            assert ended["ended_at"] is not None
            await fake.wait_for(lambda f: "notes is down" in f.titles(), 30, "the alert once the silence ended")
            await _until(lambda: (_states(sock).get("other") or {}).get("state") == "healthy"
                         and not _states(sock)["other"]["maintenance"], 30, "other back after maintenance")
            report = _json(sock, "report")
            other = next(s for s in report["servers"] if s["name"] == "other")
            assert other["maintenance_s"] > 0.0 and other["down_s"] == 0.0, other  # the window (up to the kill -9) only
            assert not any("other" in t for t in fake.titles()), fake.titles()
    finally:
        for proc in daemons:
            stop(proc)
        stop(a)
        stop(b)
