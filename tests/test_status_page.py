"""The read-only status page: pure summary, the real daemon's listener, and headless Chromium."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.config import ConfigError, parse_config
from mcp_supervisor.config.listen import WebListenError, parse_listen
from mcp_supervisor.web.summary import IncidentLog, RecordData, build_summary, uptime_from_intervals
from tests.live_daemon import CANARY, LiveDaemon, live_daemon, wait_for

pytestmark = pytest.mark.timeout(180)
DOCS = Path(__file__).resolve().parent.parent / "docs"


# --- pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["127.0.0.1:8089", "localhost:0", "[::1]:9000", "127.8.9.10:1"])
def test_loopback_addresses_are_accepted(listen: str) -> None:
    host, port = parse_listen(listen)
    assert port >= 0 and host


@pytest.mark.parametrize("listen", ["0.0.0.0:8089", "192.168.1.4:80", "example.com:80", "8089", "127.0.0.1:x"])
def test_anything_but_loopback_is_refused_with_the_fix(listen: str) -> None:
    with pytest.raises(WebListenError, match="listen"):
        parse_listen(listen)
    with pytest.raises(ConfigError, match=r"web\.listen|\[web\] listen"):
        parse_config(f'[web]\nlisten = "{listen}"\n', "/tmp/x.toml")


def test_daily_uptime_cells_leave_paused_and_unknown_time_out() -> None:
    now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC).timestamp()
    midnight = dt.datetime(2026, 11, 25, tzinfo=dt.UTC).timestamp()
    cells = uptime_from_intervals(
        [
            (midnight - 86400, midnight - 43200, "healthy"),  # yesterday: 12 h up
            (midnight - 43200, midnight - 21600, "failed"),  # 6 h down
            (midnight - 21600, midnight, "paused"),  # 6 h paused: not counted
            (midnight, midnight + 3600, "unknown"),  # daemon not watching: not counted
            (midnight + 3600, now, "healthy"),
        ],
        days=3,
        now=now,
    )
    assert cells == [None, pytest.approx(66.667, abs=0.01), 100.0]


def test_incident_log_measures_time_to_recovery() -> None:
    log = IncidentLog()
    log.on_state("jira", "healthy", "failed", 100.0, "crashed")
    log.on_state("jira", "failed", "recovering", 101.0, None)
    log.on_state("gitlab", "starting", "needs_human", 102.0, "auth")
    log.on_state("jira", "recovering", "healthy", 107.5, None)
    first, second = log.incidents()
    assert first == {"server": "gitlab", "started_at": 102.0, "resolved_at": None, "duration_s": None,
                     "failure_class": "auth", "state": "needs_human"}
    assert second["server"] == "jira" and second["duration_s"] == 7.5 and second["failure_class"] == "crashed"


def test_summary_scrubs_messages_and_carries_no_hints() -> None:
    status: dict[str, Any] = {"ready": False, "servers": [
        {"name": "jira", "state": "needs_human", "message": f"401 with token {CANARY}", "hint": "renew JIRA_TOKEN",
         "critical": True, "latency_ms": 3.0, "since": 1.0}]}
    report = {"health": "DEGRADED", "recommendations": [f"renew the token {CANARY}"], "servers": {"x": {}}}
    summary = build_summary(status, title="t", now=86400.0 * 400, scrub=lambda s: s.replace(CANARY, "***"),
                            record=RecordData(report=report))
    text = json.dumps(summary)
    assert CANARY not in text and "renew JIRA_TOKEN" not in text  # hints (commands) stay off the page
    assert len(summary["servers"][0]["uptime_days"]) == 90
    assert summary["report"]["health"] == "DEGRADED" and "servers" not in summary["report"]


# --- the real daemon ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon() -> Iterator[LiveDaemon]:
    with live_daemon() as d:
        d.wait_all_healthy()
        yield d


def get(url: str, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_summary_over_the_listener_and_no_actions(daemon: LiveDaemon) -> None:
    base = f"http://127.0.0.1:{daemon.web_port}"
    status, body, headers = get(base + "/api/summary")
    assert status == 200
    summary = json.loads(body)
    assert summary["title"] == "Acme MCP status" and {s["name"] for s in summary["servers"]} == {"managed", "external"}
    assert CANARY not in body.decode()
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    page_status, page, _ = get(base + "/")
    assert page_status == 200 and b"/static/app.js" in page and b"http" not in page.replace(b"http-equiv", b"")
    for path, method in (("/", "POST"), ("/api/summary", "POST"), ("/v1/servers/managed/recover", "POST"),
                         ("/static/../server.py", "GET"), ("/v1/status", "GET")):
        assert get(base + path, method)[0] in (404, 405), (path, method)


def chrome() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1100,900"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


needs_chromium = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)


_CARDS_JS = """return Array.from(document.querySelectorAll('.server')).map(
  (e) => [e.dataset.server, e.dataset.state, getComputedStyle(e.querySelector('.state')).backgroundColor]);"""


def cards(driver: Any) -> list[list[str]]:
    """[name, state, badge colour] per card, read in one script (the page re-renders cards live)."""
    return list(driver.execute_script(_CARDS_JS))


def card_states(driver: Any) -> dict[str, str]:
    return {name: state for name, state, _ in cards(driver)}


@needs_chromium
def test_page_in_chromium_turns_red_then_green_without_a_reload(daemon: LiveDaemon) -> None:

    driver = chrome()
    try:
        driver.get(f"http://127.0.0.1:{daemon.web_port}/")
        wait_for(lambda: card_states(driver) == {"managed": "healthy", "external": "healthy"}, 30, "both cards healthy")
        assert driver.title == "Acme MCP status"
        marker = driver.execute_script("window.__sameDocument = 42; return window.__sameDocument")
        daemon.kill_managed()
        wait_for(lambda: card_states(driver).get("managed") not in (None, "healthy"), 20, "the card leaving healthy")
        healthy_green = next(colour for name, _, colour in cards(driver) if name == "external")
        wait_for(lambda: any(name == "managed" and state != "healthy" and colour != healthy_green
                             for name, state, colour in cards(driver)), 10, "the managed badge not green")
        wait_for(lambda: card_states(driver).get("managed") == "healthy", 60, "the card healthy again")
        assert driver.execute_script("return window.__sameDocument") == marker  # live, not reloaded
        incidents = "return document.getElementById('incidents').textContent"
        wait_for(lambda: "managed" in driver.execute_script(incidents)
                 and "recovered in" in driver.execute_script(incidents), 10, "the incident listed")
        assert CANARY not in driver.page_source
        # the record fills today's uptime cell (the last one) for both servers
        today = "return Array.from(document.querySelectorAll('.bar')).map((b) => b.lastElementChild.title)"
        wait_for(lambda: all("no data" not in t for t in driver.execute_script(today)), 70, "today's uptime cells")
    finally:
        driver.quit()


@needs_chromium
def test_page_says_when_the_supervisor_stops_answering() -> None:
    from selenium.webdriver.common.by import By

    with live_daemon() as d:
        d.wait_all_healthy()
        driver = chrome()
        try:
            driver.get(f"http://127.0.0.1:{d.web_port}/")
            wait_for(lambda: len(card_states(driver)) == 2, 30, "the cards")
            assert not driver.find_element(By.ID, "banner").is_displayed()
            d.stop()
            wait_for(lambda: driver.find_element(By.ID, "banner").is_displayed(), 20, "the 'not answering' banner")
            assert "supervisor not answering" in driver.find_element(By.ID, "banner").text
        finally:
            driver.quit()
