"""A fleet on a real Prometheus and Alertmanager: three daemons (one behind TLS + basic auth) scraped
through the shipped file-SD scrape config with the shipped rules; a server killed on one host reaches
the Slack stand-in as one grouped Alertmanager message and one resolution, while that host's own
notifier (``[notify] mode = "alertmanager"``) stays quiet; a non-loopback listen is refused without
TLS and auth.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import signal
import ssl
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from mcp_supervisor.config import ConfigError, parse_config
from mcp_supervisor.events import Event
from tests.fleet import (
    DEPLOY,
    Daemon,
    Engine,
    basic,
    http_json,
    make_ca_and_cert,
    start_alertmanager,
    start_prometheus,
)
from tests.live_daemon import ROOT, free_port, notes_http, stop, wait_for
from tests.slack_fake import WEBHOOK_PATH, FakeSlack
from tests.test_notify_slack import down, fake_slack, make_config, notifier, webhook

pytestmark = pytest.mark.timeout(150)
PASSWORD = "scrape-secret-4f1d"


def _servers(*names_ports: tuple[str, int], critical: bool = False) -> str:
    return "".join(f"""
[[servers]]
name = "{name}"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"
critical = {str(critical).lower()}
probe = {{ interval = "250ms", timeout = "1s", failure_threshold = 2 }}
recovery = {{ backoff_initial = "100ms", backoff_max = "1s" }}
""" for name, port in names_ports)


@dataclass
class Fleet:
    directory: Path
    ca: Path
    daemons: dict[str, Daemon]
    backends: dict[str, tuple[int, subprocess.Popen[bytes]]]
    prometheus: Engine
    prom_config: dict[str, Any]
    slack_port: int

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = http_json(self.prometheus.url("/api/v1/query?" + urllib.parse.urlencode({"query": promql})))
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def instance(self, name: str) -> str:
        return f"127.0.0.1:{self.daemons[name].metrics_port}"


def prometheus_config(directory: Path, fleet_daemons: dict[str, Daemon], ca: Path, rules: list[Path]) -> dict[str, Any]:
    """The shipped deploy/prometheus/prometheus.yml, pointed at this test's files and made fast."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(r) for r in rules]
    config.pop("alerting")
    secure = config["scrape_configs"][0]
    assert secure["job_name"] == "mcp-supervisor" and secure["scheme"] == "https"
    secure["tls_config"]["ca_file"] = str(ca)
    (directory / "password").write_text(PASSWORD)
    secure["basic_auth"]["password_file"] = str(directory / "password")
    secure["file_sd_configs"][0] = {"files": [str(directory / "targets-tls" / "*.yml")], "refresh_interval": "1s"}
    plain = {"job_name": "mcp-supervisor-loopback", "file_sd_configs": [
        {"files": [str(directory / "targets" / "*.yml")], "refresh_interval": "1s"}]}
    config["scrape_configs"].append(plain)
    for folder, names in (("targets-tls", ["a"]), ("targets", ["b", "c"])):
        (directory / folder).mkdir()
        targets = [{"targets": [f"127.0.0.1:{fleet_daemons[n].metrics_port}"], "labels": {"team": "research"}}
                   for n in names]
        (directory / folder / "hosts.yml").write_text(yaml.safe_dump(targets))
    return config


def fast_rules(directory: Path) -> list[Path]:
    """The shipped rules, evaluated every second and with no `for:` wait (a test cannot wait 5 minutes)."""
    out = []
    for source in (DEPLOY / "recording-rules.yml", ROOT / "docs" / "alerting-rules.yml"):
        rules = yaml.safe_load(source.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                rule.pop("for", None)
        target = directory / source.name
        target.write_text(yaml.safe_dump(rules))
        out.append(target)
    return out


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    if shutil.which("prometheus") is None:
        pytest.skip("Prometheus is not installed (Debian: apt-get install prometheus); .ci/run installs it")
    directory = Path(tempfile.mkdtemp(prefix="mcpfleet-", dir="/tmp"))
    ca, cert, key = make_ca_and_cert(directory)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    slack_port = free_port()
    backends: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    daemons: dict[str, Daemon] = {}
    prometheus: Engine | None = None
    try:
        for name in ("x", "y"):
            port = free_port()
            backends[name] = (port, notes_http(port))
        x, y = backends["x"][0], backends["y"][0]
        daemons["a"] = Daemon("a", directory / "a", free_port(), servers=_servers(("notes", x), ("wiki", x), critical=True),
                              metrics=f"""[metrics.tls_server_config]
cert_file = "{cert}"
key_file = "{key}"
[metrics.basic_auth_users]
prometheus = "{hashed}"
""", notify=f"""[notify]
mode = "alertmanager"
retry_initial = "100ms"
[notify.slack]
webhook_url = "http://127.0.0.1:{slack_port}{WEBHOOK_PATH}"
""")
        daemons["b"] = Daemon("b", directory / "b", free_port(), servers=_servers(("notes", y)))
        daemons["c"] = Daemon("c", directory / "c", free_port(), servers=_servers(("notes", y)))
        for daemon in daemons.values():
            daemon.start()
        config = prometheus_config(directory, daemons, ca, fast_rules(directory))
        prometheus = start_prometheus(directory, config)
        yield Fleet(directory, ca, daemons, backends, prometheus, config, slack_port)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for daemon in daemons.values():  # all at once: each takes up to its shutdown_timeout
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.proc.terminate()
        for daemon in daemons.values():
            daemon.stop()
        for _, proc in backends.values():
            stop(proc)
        shutil.rmtree(directory, ignore_errors=True)


def _https_get(fleet: Fleet, authorization: str | None) -> int:
    context = ssl.create_default_context(cafile=str(fleet.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", fleet.daemons["a"].metrics_port, context=context, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": authorization} if authorization else {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_prometheus_scrapes_three_daemons_one_over_tls_and_basic_auth(fleet: Fleet) -> None:
    def all_up() -> list[dict[str, Any]] | None:
        targets = http_json(fleet.prometheus.url("/api/v1/targets"))["data"]["activeTargets"]
        return targets if len(targets) == 3 and all(t["health"] == "up" for t in targets) else None

    try:
        targets = wait_for(all_up, 60, "Prometheus scraping all three daemons", every=0.5)
    except AssertionError:
        print(http_json(fleet.prometheus.url("/api/v1/targets")))
        raise
    by_instance = {t["labels"]["instance"]: t for t in targets}
    secure = by_instance[fleet.instance("a")]
    assert secure["scrapeUrl"].startswith("https://") and secure["labels"]["job"] == "mcp-supervisor"
    assert secure["labels"]["team"] == "research"  # the file-SD labels reach every series

    # every per-server series carries server, critical, managed; the host is Prometheus' instance
    def both_healthy() -> list[dict[str, Any]] | None:
        found = fleet.query('mcp_supervisor_server_up == 1')
        return found if len(found) == 4 else None

    up = wait_for(both_healthy, 60, "four servers up on three hosts", every=0.5)
    seen = {(s["metric"]["instance"], s["metric"]["server"], s["metric"]["critical"], s["metric"]["managed"])
            for s in up}
    assert seen == {(fleet.instance("a"), "notes", "true", "false"), (fleet.instance("a"), "wiki", "true", "false"),
                    (fleet.instance("b"), "notes", "false", "false"), (fleet.instance("c"), "notes", "false", "false")}
    info = fleet.query("mcp_supervisor_build_info")
    assert len(info) == 3 and all(s["metric"]["version"] and s["metric"]["python"] for s in info)
    wait_for(lambda: [float(s["value"][1]) for s in fleet.query("fleet:mcp_supervisor_critical_server_up:ratio")]
             == [1.0], 30, "the fleet uptime recording rule at 1")

    # what Prometheus gets, nobody else gets: no credentials, a wrong password, plain HTTP
    assert _https_get(fleet, basic("prometheus", PASSWORD)) == 200
    assert _https_get(fleet, None) == 401
    assert _https_get(fleet, basic("prometheus", "wrong")) == 401
    assert _https_get(fleet, basic("mallory", PASSWORD)) == 401
    plain = http.client.HTTPConnection("127.0.0.1", fleet.daemons["a"].metrics_port, timeout=5)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        plain.request("GET", "/metrics")
        plain.getresponse().read()
    plain.close()


def test_the_shipped_prometheus_files_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus); .ci/run installs it")
    checked = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus.yml")], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout and "SUCCESS: 9 rules found" in checked.stdout


def alertmanager_config(webhook_file: Path) -> dict[str, Any]:
    """The shipped alertmanager.yml with this test's webhook file and seconds instead of minutes."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "alertmanager.yml").read_text())
    config["route"].update(group_wait="6s", group_interval="2s", repeat_interval="1h")
    for route in config["route"]["routes"]:
        route["group_wait"] = "6s"  # both servers' alerts reach it within this on a loaded machine
    config["receivers"][0]["slack_configs"][0]["api_url_file"] = str(webhook_file)
    return config


def _firing_or_resolved(fake: FakeSlack) -> list[dict[str, Any]]:
    return [m for m in fake.messages if m.get("attachments")]


async def test_a_server_down_on_one_host_is_one_grouped_alertmanager_message_then_one_resolution(
    fleet: Fleet,
) -> None:
    if shutil.which("prometheus-alertmanager") is None:
        pytest.skip("Alertmanager is not installed (Debian: apt-get install prometheus-alertmanager); .ci/run "
                    "installs it")
    await asyncio.to_thread(wait_for, lambda: len(fleet.query("mcp_supervisor_server_up == 1")) == 4, 60,
                            "four servers up", 0.5)
    async with fake_slack(fleet.slack_port) as fake:
        (fleet.directory / "webhook").write_text(fake.webhook_url)
        manager = await asyncio.to_thread(start_alertmanager, fleet.directory, alertmanager_config(
            fleet.directory / "webhook"))
        try:
            fleet.prom_config["alerting"] = {"alertmanagers": [{"static_configs": [
                {"targets": [f"127.0.0.1:{manager.port}"]}]}]}
            fleet.prometheus.config.write_text(yaml.safe_dump(fleet.prom_config))
            fleet.prometheus.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(wait_for, lambda: http_json(fleet.prometheus.url("/api/v1/alertmanagers"))[
                "data"]["activeAlertmanagers"], 30, "Prometheus sending to Alertmanager", 0.2)

            port, backend = fleet.backends["x"]
            await asyncio.to_thread(stop, backend)  # notes and wiki on host a go down together
            await fake.wait_for(lambda f: _firing_or_resolved(f), 60, "Alertmanager's message")
            await asyncio.sleep(3)  # a second group_interval: nothing else for this group
            sent = _firing_or_resolved(fake)
            alerts = http_json(fleet.prometheus.url("/api/v1/alerts"))["data"]["alerts"]
            assert len(sent) == 1, (sent, alerts)
            attachment = sent[0]["attachments"][0]
            assert attachment["title"] == f"2 firing: server_down on {fleet.instance('a')}", attachment
            assert "notes" in attachment["text"] and "wiki" in attachment["text"]

            fleet.backends["x"] = (port, await asyncio.to_thread(notes_http, port))
            await fake.wait_for(lambda f: len(_firing_or_resolved(f)) == 2, 60, "the resolution")
            resolved = _firing_or_resolved(fake)[1]["attachments"][0]
            assert resolved["title"] == f"resolved: server_down on {fleet.instance('a')}"
            # host a's own notifier is in alertmanager mode: none of its per-incident messages
            assert not [m for m in fake.messages if m.get("blocks")], json.dumps(fake.messages)[:2000]
        finally:
            await asyncio.to_thread(manager.stop)


async def test_alertmanager_mode_keeps_the_reports_and_drops_the_incident_alerts(tmp_path: Path) -> None:
    async with fake_slack() as fake:
        config = make_config(tmp_path, webhook(fake), extra="", environ={})
        config = config.model_copy(update={"notify": config.notify.model_copy(update={"mode": "alertmanager"})})
        async with notifier(config) as (service, bus):
            down(bus)
            bus.publish(Event("report", None, {"period": "day", "report": {"health": "GOOD", "servers_total": 1}}))
            await fake.wait_for(lambda f: len(f.messages) >= 1, 20, "the daily summary")
            await asyncio.sleep(0.3)
            assert fake.titles() == ["Daily MCP summary: GOOD"] and service.counts["pending"] == 0


def test_the_shipped_alertmanager_config_passes_amtool() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (Debian: apt-get install prometheus-alertmanager); .ci/run installs it")
    checked = subprocess.run([amtool, "check-config", str(DEPLOY / "alertmanager.yml")], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 inhibit rules" in checked.stdout and "1 receivers" in checked.stdout


NON_LOOPBACK = '[metrics]\nlisten = "0.0.0.0:9464"\n'


def test_a_non_loopback_listen_without_tls_and_auth_is_refused_at_load_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(NON_LOOPBACK, tmp_path / "sup.toml", {})
    message = str(refused.value)
    assert "metrics" in message and "not loopback" in message
    assert "tls_server_config" in message and "basic_auth_users" in message and "127.0.0.1:9464" in message

    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web_yml = tmp_path / "web.yml"
    web_yml.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": "m.crt", "key_file": "m.key"},
                                       "basic_auth_users": {"prometheus": hashed}}))
    config = parse_config(NON_LOOPBACK + 'web_config_file = "web.yml"\n', tmp_path / "sup.toml", {})
    effective = config.metrics.web_config()
    assert effective.tls_server_config is not None and effective.tls_server_config.cert_file == tmp_path / "m.crt"
    assert effective.basic_auth_users == {"prometheus": hashed}

    web_yml.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": "hunter2"}}))
    with pytest.raises(ConfigError) as plain_password:
        parse_config(NON_LOOPBACK + 'web_config_file = "web.yml"\n', tmp_path / "sup.toml", {})
    assert "web.yml" in str(plain_password.value) and "not a bcrypt hash" in str(plain_password.value)
    assert "hunter2" not in str(plain_password.value)


def test_each_backup_location_says_when_it_last_took_a_copy(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from mcp_supervisor.metrics import SupervisorMetrics

    remote = "sftp://backup@nas.example:22/srv/mcp-vault"
    config = parse_config(f'[backup]\nlocations = ["{tmp_path}/local", "{remote}"]\nmax_age = "1d"\n',
                          tmp_path / "sup.toml", {})
    metrics = SupervisorMetrics(lambda: {"servers": []}, lambda: config)
    metrics.observe(Event("backup", None, {"copies": [f"{tmp_path}/local"], "failed_locations": {remote: "down"}},
                          at=1_800_000_000.0))
    found = {(s.name, s.labels.get("location")): s.value
             for family in text_string_to_metric_families(metrics.exposition().decode()) for s in family.samples}
    assert found[("mcp_supervisor_backup_location_last_success_timestamp_seconds", f"{tmp_path}/local")] == 1.8e9
    assert found[("mcp_supervisor_backup_location_last_success_timestamp_seconds", remote)] == 0.0  # never
    assert found[("mcp_supervisor_backup_max_age_seconds", None)] == 86400.0
