"""The daemon's small parts: the no-drift grid, sd_notify over a real socket, log redaction, --check."""

from __future__ import annotations

import asyncio
import io
import json
import math
import socket
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mcp_supervisor.config import parse_config
from mcp_supervisor.health.model import ProbeKind
from mcp_supervisor.logging import collect_secrets, get_logger, setup_logging
from mcp_supervisor.runtime.schedule import Grid, ProbeSchedule
from mcp_supervisor.sdnotify import Notifier

VENV_BIN = Path(sys.executable).parent


# --- the grid ----------------------------------------------------------------------------------


def test_grid_ticks_stay_on_the_grid_however_late_the_probe_runs() -> None:
    grid = Grid(start=100.0, interval=10.0)
    planned = []
    now = 100.0
    for lateness in (0.3, 4.9, 0.0, 2.5, 7.7):
        now = grid.next_at + lateness
        planned.append(grid.advance(now))
    assert planned == [100.0, 110.0, 120.0, 130.0, 140.0]
    assert grid.next_at == 150.0


def test_grid_skips_missed_ticks_instead_of_bunching() -> None:
    grid = Grid(start=0.0, interval=1.0)
    assert grid.advance(0.0) == 0.0
    # the loop was blocked for 5.5 s: the tick run now is 5.0 (ticks 1-4 are skipped, not made
    # up in a burst) and the next one is at 6.0
    assert grid.advance(5.5) == 5.0
    assert grid.skipped == 4
    assert grid.next_at == 6.0
    assert not grid.due(5.9)


@given(
    start=st.floats(0, 1e6),
    interval=st.floats(0.01, 600),
    lateness=st.lists(st.floats(0, 5), min_size=1, max_size=50),
)
def test_grid_property_ticks_are_on_the_grid_increasing_and_never_in_the_future(
    start: float, interval: float, lateness: list[float]
) -> None:
    grid = Grid(start=start, interval=interval)
    previous = -math.inf
    for late in lateness:
        now = grid.next_at + late * interval
        planned = grid.advance(now)
        k = (planned - start) / interval
        assert abs(k - round(k)) < 1e-6 * max(1.0, k)
        assert previous < planned <= now
        assert grid.next_at > now
        previous = planned


def test_schedule_runs_the_heaviest_due_kind_and_advances_all() -> None:
    schedule = ProbeSchedule(start=0.0, interval=1.0, tools_interval=3.0, cold_interval=6.0)
    kinds = []
    for t in range(7):
        taken = schedule.take(float(t))
        assert taken is not None and taken[1] == float(t)
        kinds.append(taken[0])
    assert kinds == [
        ProbeKind.COLD, ProbeKind.WARM, ProbeKind.WARM, ProbeKind.TOOLS, ProbeKind.WARM, ProbeKind.WARM, ProbeKind.COLD,
    ]
    assert schedule.take(6.5) is None


# --- sd_notify ---------------------------------------------------------------------------------


async def test_notifier_sends_ready_status_watchdog_to_a_real_socket(short_tmp: Path) -> None:
    path = short_tmp / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(2.0)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"})
        assert notifier.watchdog_interval == 0.1
        assert notifier.ready("2/3 ready")
        assert listener.recv(4096) == b"READY=1\nSTATUS=2/3 ready"
        task = asyncio.create_task(notifier.watchdog_loop())
        try:
            pings = [await asyncio.to_thread(listener.recv, 4096) for _ in range(3)]
        finally:
            task.cancel()
        assert pings == [b"WATCHDOG=1"] * 3
        assert notifier.stopping()
        assert listener.recv(4096) == b"STOPPING=1"
        notifier.close()
    finally:
        listener.close()


def test_notifier_without_socket_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.watchdog_interval is None


# --- logging -----------------------------------------------------------------------------------

_SECRET_CONFIG = """
[slack]
token = "xoxb-slack-secret-123"

[[servers]]
name = "jira"
transport = "http"
url = "http://127.0.0.1:9/mcp"
headers = { Authorization = "Bearer jira-token-abcdef" }
env = { API_KEY = "env-secret-value" }
fallback = { url = "http://127.0.0.1:9/api", headers = { "X-Api" = "fallback-secret-999" } }
"""


def test_log_lines_never_contain_secret_values() -> None:
    config = parse_config(_SECRET_CONFIG)
    secrets = collect_secrets(config)
    assert {"jira-token-abcdef", "env-secret-value", "fallback-secret-999", "xoxb-slack-secret-123"} <= secrets
    stream = io.StringIO()
    setup_logging("info", "json", secrets, stream=stream)
    logger = get_logger("test")
    logger.warning("probe failed", message="server said: bad key env-secret-value", detail={"nested": "Bearer jira-token-abcdef"})
    logger.info("config", password="hunter2-long", authorization="whatever")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    text = stream.getvalue()
    for secret in ("jira-token-abcdef", "env-secret-value", "hunter2-long", "whatever"):
        assert secret not in text
    assert lines[0]["message"] == "server said: bad key ***"
    assert lines[0]["level"] == "warning"
    assert lines[1]["password"] == "***"


# --- the command line ----------------------------------------------------------------------------


def test_check_accepts_a_valid_config_and_names_the_field_of_an_invalid_one(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[[servers]]\nname = "a"\ntransport = "http"\nurl = "http://127.0.0.1:1/mcp"\n')
    ok = subprocess.run([VENV_BIN / "mcp-supervisor", "--config", str(good), "--check"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[servers]]\nname = "a"\ntransport = "http"\nurl = "http://127.0.0.1:1/mcp"\n[servers.probe]\ntimeout = "fast"\n')
    failed = subprocess.run([VENV_BIN / "mcp-supervisor", "--config", str(bad), "--check"], capture_output=True, text=True, timeout=30)
    assert failed.returncode == 1
    assert str(bad) in failed.stderr
    assert "servers[0] (a).probe.timeout" in failed.stderr
