"""`supervisorctl-mcp dashboard`: textual's pilot against a real daemon, and once in a real tmux."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.text import Text
from textual.widgets import DataTable, Static

from mcp_supervisor.cli.dashboard import (
    DaemonLink,
    Dashboard,
    event_line,
    latency_step,
    latency_text,
    since_text,
    uptime_bar,
)
from tests.live_daemon import BIN, CANARY, LiveDaemon, live_daemon, wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def daemon() -> Iterator[LiveDaemon]:
    with live_daemon() as d:
        d.wait_all_healthy()
        yield d


async def until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def row_state(app: Dashboard, name: str) -> str | None:
    table = app.query_one("#servers", DataTable)
    if name not in {str(k.value) for k in table.rows}:
        return None
    return str(table.get_cell(name, "state"))


def screen_text(app: Dashboard) -> str:
    table = app.query_one("#servers", DataTable)
    cells = [str(c) for key in table.rows for c in table.get_row(key)]
    statics = [str(w.render()) for w in app.query(Static)]
    return "\n".join(cells + statics)


def test_pure_helpers_render_server_text_as_text() -> None:
    assert since_text(None, 0) == "" and since_text(100, 130) == "<1m" and since_text(100, 190) == "2m"
    assert uptime_bar(None).plain == "no record"
    assert uptime_bar(100.0).plain.startswith("██████████")
    line = event_line({"kind": "state", "server": "jira", "old": "healthy", "new": "failed",
                       "reason": "stderr said [/INFO] and [bold]", "at": 0})
    assert isinstance(line, Text) and "[/INFO] and [bold]" in line.plain  # markup-looking text stays text
    assert event_line({"kind": "probe", "server": "x"}) is None


def test_latency_and_time_in_state_change_only_when_a_person_would_care() -> None:
    """Every changed cell repaints the whole table: jitter must not change what is shown."""
    assert [latency_text(ms) for ms in (2.0, 40.0, 400.0, 1234.0)] == ["<10 ms", "<100 ms", "<1 s", "1.2 s"]
    assert latency_step(12.0, shown=0) == 0 and latency_step(16.0, shown=0) == 1  # 10 ms x 1.5
    assert latency_step(8.0, shown=1) == 1 and latency_step(5.0, shown=1) == 0
    assert [since_text(0.001, s) for s in (30, 300, 1900, 7300, 3 * 86400)] == ["<1m", "5m", "30m", "2h", "3.0d"]


async def test_rows_follow_a_killed_server_and_q_quits(daemon: LiveDaemon) -> None:
    app = Dashboard(DaemonLink(daemon.sock), refresh=1.0)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(lambda: row_state(app, "managed") == "healthy" and row_state(app, "external") == "healthy",
                    30, "both rows healthy")
        assert CANARY not in screen_text(app)
        app.apply_report({"recovery_rate": 0.5, "servers": [{"name": "managed", "uptime_pct": 97.5}]})
        app.render_all(None)
        assert "97.5%" in str(app.query_one("#servers", DataTable).get_cell("managed", "uptime 24h"))
        assert "recovery success today 50%" in str(app.query_one("#summary", Static).render())
        daemon.kill_managed()
        await until(lambda: row_state(app, "managed") not in (None, "healthy"), 20, "the killed server's row changes")
        await until(lambda: row_state(app, "managed") == "healthy", 60, "the row healthy again after the restart")
        assert "managed" in str(app.query_one("#events", Static).render())
        await pilot.press("q")
        await until(lambda: not app.is_running, 10, "q to quit")
    assert app.return_value == 0


async def test_unreachable_daemon_is_said_and_the_dashboard_reconnects(tmp_path: Path) -> None:
    with live_daemon() as d:
        d.stop()  # the dashboard starts against a socket nobody serves
        app = Dashboard(DaemonLink(d.sock), refresh=0.5)
        async with app.run_test(size=(140, 40)) as pilot:
            banner = app.query_one("#banner", Static)
            await until(lambda: "not answering" in str(banner.render()), 10, "the banner")
            assert banner.has_class("shown")
            d.start()
            await until(lambda: row_state(app, "managed") is not None, 60, "rows after the daemon came back")
            await until(lambda: not banner.has_class("shown"), 10, "the banner gone")
            # the daemon stops while the dashboard follows its event stream: said again, no crash
            d.stop()
            await until(lambda: banner.has_class("shown"), 20, "the banner after the stream closed")
            d.start()
            await until(lambda: not banner.has_class("shown") and row_state(app, "managed") is not None, 60,
                        "reconnected after the daemon came back")
            assert app.is_running
            await pilot.press("q")


@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed")
def test_in_a_real_terminal_under_tmux(daemon: LiveDaemon, tmp_path: Path) -> None:
    session = f"mcpdash{int(time.time() * 1000) % 10**8}"
    command = f"{BIN / 'supervisorctl-mcp'} --socket {daemon.sock} dashboard --refresh 1"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "140", "-y", "40", command], check=True)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

    try:
        wait_for(lambda: "managed" in screen() and "external" in screen() and "healthy" in screen(), 30,
                 "the dashboard's rows in tmux")
        (tmp_path / "dashboard-screen.txt").write_text(screen())
        daemon.kill_managed()
        wait_for(lambda: any("managed" in line and "healthy" not in line and "→" not in line
                             for line in screen().splitlines()), 20, "the managed row leaving healthy")
        wait_for(lambda: any(line.lstrip().startswith("managed") and "healthy" in line
                             for line in screen().splitlines()), 60, "the managed row healthy again")
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        wait_for(lambda: subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode != 0,
                 10, "the dashboard to quit on q (the tmux session ends with it)")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
