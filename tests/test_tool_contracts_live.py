"""Tool contracts against a real daemon: a managed server restarted with a changed tool schema.

The server is the SDK's (tests/servers/healing.py ``contract``): release 1.0.0 has
``search(query)``, 2.0.0 ``search(query, limit)``, read from a file at start-up, as an upgrade
changes a tool. What a user notices: one alert per server naming the tool, the field and both
versions; the pinned server is ``drifted`` (``ready`` exits 1 and a guarded run 75, both naming
the tool; no restart) until
``accept-tools --yes``; the unpinned one stays healthy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_daemon import (
    api,
    cli,
    daemon_process,
    free_port,
    managed_server,
    server_status,
    supervisor_table,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

HEALING = Path(__file__).resolve().parent / "servers" / "healing.py"


def _notes(log: Path, kind: str) -> list[dict[str, object]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "notify" and record.get("kind") == kind:
            out.append(record)
    return out


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    release = tmp_path / "release"
    release.write_text("1.0.0\n")
    probe = {"interval": "300ms", "timeout": "2s", "failure_threshold": 3, "start_period": "20s",
             "tools_interval": "300ms"}
    config = tmp_path / "config.toml"
    config.write_text(
        supervisor_table(tmp_path)
        + managed_server("plain", free_port(), [HEALING, "contract", "{port}", release], **probe)
        + managed_server("pinned", free_port(), [HEALING, "contract", "{port}", release], "pin_tools = [\"search\"]",
                         **probe))
    text = config.read_text()
    for name in ("plain", "pinned"):  # each server's own port in its args
        block_start = text.index(f'name = "{name}"')
        port = text[block_start:].split("127.0.0.1:")[1].split("/")[0]
        text = text[:block_start] + text[block_start:].replace("{port}", port, 1)
    config.write_text(text)
    log = tmp_path / "daemon.log"
    with daemon_process(config, log=log):
        yield tmp_path / "ctl.sock", release, log


def test_a_changed_tool_schema_alerts_once_and_a_pinned_server_drifts_until_accepted(
    daemon: tuple[Path, Path, Path],
) -> None:
    sock, release, log = daemon
    states = lambda: {s["name"]: s["state"] for s in api(sock, "/v1/status")[1]["servers"]}  # noqa: E731
    wait_for(lambda: sock.exists() and states() == {"plain": "healthy", "pinned": "healthy"}, 60, "both healthy",
             ignore=(OSError,))  # the socket file exists a moment before the daemon listens
    wait_for(lambda: (sock.parent / "state" / "contracts" / "pinned.json").exists(), 20, "the contract kept")
    restarts = {n: server_status(sock, n)["restarts"] for n in ("plain", "pinned")}

    release.write_text("2.0.0\n")  # the upgrade: the next start serves the new schema
    for name in ("plain", "pinned"):
        assert cli(sock, "recover", name).returncode == 0
    wait_for(lambda: states().get("pinned") == "drifted", 60, "pinned drifted")
    wait_for(lambda: len(_notes(log, "tools_changed")) >= 2, 30, "the tools_changed alerts")

    alerts = _notes(log, "tools_changed")
    assert len(alerts) == 2, alerts  # one per server, not one per probe
    for alert in alerts:
        assert "changed search: input schema" in str(alert["detail"]) and "1.0.0 -> 2.0.0" in str(alert["detail"])
    assert states()["plain"] == "healthy"
    ready = cli(sock, "ready", "--server", "pinned")
    assert ready.returncode == 1 and "drifted" in ready.stdout and "search" in ready.stdout, ready.stdout
    run = cli(sock, "run", "--wait", "0", "--require", "pinned", "--", "true")
    assert run.returncode == 75 and "search" in run.stdout + run.stderr, run.stdout + run.stderr
    shown = cli(sock, "tools", "pinned")
    assert "changed search: input schema" in shown.stdout and "1.0.0 -> 2.0.0" in shown.stdout, shown.stdout
    assert cli(sock, "accept-tools", "pinned").returncode == 1  # not a terminal and no --yes: nothing accepted
    assert states()["pinned"] == "drifted"

    accepted = cli(sock, "accept-tools", "pinned", "--yes")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    wait_for(lambda: states()["pinned"] == "healthy", 20, "pinned healthy after accept-tools")
    assert cli(sock, "ready", "--server", "pinned").returncode == 0
    after = {n: server_status(sock, n)["restarts"] for n in ("plain", "pinned")}
    assert after == {n: restarts[n] + 1 for n in restarts}  # the operator's recover only: a drift never restarts
    assert len(_notes(log, "tools_changed")) == 2
