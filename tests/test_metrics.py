"""Prometheus metrics from the real daemon: over its Unix socket and over TCP, after a real kill and heal."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.live_daemon import (
    ROOT,
    UnixHTTPConnection,
    free_port,
    managed_notes,
    start_daemon,
    stop,
    supervisor_table,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)
STARTING = (OSError, ValueError, KeyError)
"""What a poll may meet while the daemon starts or restarts a server: "not yet", not a failure."""


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, str, str]:
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[dict[str, Any]]:
    port, metrics_port = free_port(), free_port()
    directory = Path(tempfile_dir := f"/tmp/mcpmet-{os.getpid()}-{port}")
    directory.mkdir()
    config = directory / "mcp-supervisor.toml"
    config.write_text(supervisor_table(directory, f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"')
                      + managed_notes("notes", port, recovery='backoff_initial = "100ms"', extra="token_expires = 2030-01-01",
                                      interval="250ms", timeout="1s", failure_threshold=2, start_period="10s"))
    proc = start_daemon(config)
    try:
        yield {"proc": proc, "sock": directory / "ctl.sock", "metrics_port": metrics_port, "dir": directory}
    finally:
        stop(proc, signal.SIGTERM, 15)
        if os.environ.get("KEEP_METRICS_DIR") is None:
            shutil.rmtree(tempfile_dir, ignore_errors=True)


def status(sock: Path) -> dict[str, Any]:
    import json

    code, _, body = get(UnixHTTPConnection(sock), "/v1/status")
    assert code == 200
    servers = json.loads(body)["servers"]
    return next(s for s in servers if s["name"] == "notes")


def test_metrics_over_the_socket_and_tcp_follow_a_real_kill_and_heal(daemon: dict[str, Any]) -> None:
    sock: Path = daemon["sock"]
    first = wait_for(lambda: (s := status(sock))["state"] == "healthy" and s, 40, "notes healthy", 0.1, STARTING)
    code, content_type, text = get(UnixHTTPConnection(sock), "/metrics")
    assert code == 200 and content_type.startswith("text/plain; version=0.0.4")
    before = samples(text)
    assert value(before, "mcp_supervisor_server_state", server="notes", critical="true", managed="true", state="healthy") == 1.0
    assert value(before, "mcp_supervisor_server_state", server="notes", critical="true", managed="true", state="failed") == 0.0
    assert value(before, "mcp_supervisor_server_up", server="notes", critical="true", managed="true") == 1.0
    # the first checks of a server list its tools; later ones are the light warm check
    assert sum(value(before, "mcp_supervisor_probe_duration_seconds_count", kind=kind) or 0
               for kind in ("warm", "tools", "cold")) >= 1
    assert 0 < (value(before, "mcp_supervisor_server_probe_latency_seconds", server="notes", critical="true", managed="true") or 0) < 5
    assert value(before, "mcp_supervisor_notify_outbox_messages", status="pending") == 0.0
    expiry = datetime(2030, 1, 2, tzinfo=UTC).timestamp()  # good through the end of 2030-01-01
    assert value(before, "mcp_supervisor_token_expiry_timestamp_seconds", server="notes", critical="true", managed="true",
                 source="the configured token") == expiry
    # a slow start on a loaded machine may already have cost a restart: count from here
    restarts = value(before, "mcp_supervisor_restarts_total", server="notes", critical="true", managed="true") or 0.0
    successes = value(before, "mcp_supervisor_recoveries_total", server="notes", critical="true", managed="true", rung="restart", outcome="success") or 0.0
    exits = value(before, "mcp_supervisor_process_exits_total", server="notes", critical="true", managed="true") or 0.0

    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: (s := status(sock))["state"] == "healthy" and s["pid"] not in (None, first["pid"]), 40,
             "notes healthy again under a new pid", 0.1, STARTING)
    after = samples(get(UnixHTTPConnection(sock), "/metrics")[2])
    assert value(after, "mcp_supervisor_restarts_total", server="notes", critical="true", managed="true") == restarts + 1
    assert value(after, "mcp_supervisor_recoveries_total", server="notes", critical="true", managed="true", rung="restart", outcome="success") == (
        successes + 1)
    assert value(after, "mcp_supervisor_process_exits_total", server="notes", critical="true", managed="true") == exits + 1
    assert value(after, "mcp_supervisor_server_state", server="notes", critical="true", managed="true", state="healthy") == 1.0
    assert sum(v for (name, labels), v in after.items()
               if name == "mcp_supervisor_server_state" and ("server", "notes") in labels) == 1.0
    assert value(after, "mcp_supervisor_server_up", server="notes", critical="true", managed="true") == 1.0

    tcp = http.client.HTTPConnection("127.0.0.1", daemon["metrics_port"], timeout=10)
    code, _, tcp_text = wait_for(lambda: get(tcp, "/metrics"), 10, "the TCP metrics listener", 0.1, STARTING)
    assert code == 200
    assert value(samples(tcp_text), "mcp_supervisor_restarts_total", server="notes", critical="true", managed="true") == restarts + 1
    # only /metrics is on TCP: the control API stays behind the socket's peer check
    assert get(http.client.HTTPConnection("127.0.0.1", daemon["metrics_port"], timeout=10), "/v1/status")[0] == 404

    names = {family.name for family in text_string_to_metric_families(tcp_text)}
    for documented in ("mcp_supervisor_server_state", "mcp_supervisor_server_up", "mcp_supervisor_probe_duration_seconds",
                       "mcp_supervisor_restarts", "mcp_supervisor_recoveries", "mcp_supervisor_process_exits",
                       "mcp_supervisor_notify_outbox_messages", "mcp_supervisor_token_expiry_timestamp_seconds"):
        assert documented in names, documented
    promtool = shutil.which("promtool")
    if promtool:
        checked = subprocess.run([promtool, "check", "metrics"], input=tcp_text, capture_output=True, text=True,
                                 timeout=30)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_sample_alerting_rules_are_valid_for_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus); CI installs it")
    checked = subprocess.run([promtool, "check", "rules", str(ROOT / "docs" / "alerting-rules.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 9 rules found" in checked.stdout
