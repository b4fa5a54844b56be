"""The notifier end to end with the real slack-sdk clients against a local server that answers as Slack.

Events go in on a real EventBus (the contract with the runtime), messages come out over HTTP through
``AsyncWebhookClient`` / ``AsyncWebClient``; the outbox is a real SQLite file. The last tests run the
real supervisor with real MCP servers (killed, crash-looping, answering 401) and the real daemon
binary, killed with SIGKILL while Slack is failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.config import Config, parse_config
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.health.model import State
from mcp_supervisor.notify.service import NotifyService
from mcp_supervisor.runtime.supervisor import Supervisor
from tests.live_daemon import (
    BIN,
    api,
    free_port,
    managed_notes,
    managed_server,
    notes_http,
    state,
    stop,
    unauthorized,
    until,
    wait_until,
)
from tests.slack_fake import BOT_TOKEN, FakeSlack

pytestmark = pytest.mark.timeout(120)


NO_GROUPING = 'group_wait = "0s"\ngroup_interval = "0s"\npace = "0s"'
"""Each incident on its own at once, as before grouping (the grouping has its own tests)."""


def make_config(tmp: Path, slack: str, extra: str = "", environ: dict[str, str] | None = None,
                notify: str = NO_GROUPING) -> Config:
    text = f"""
[supervisor]
state_dir = "{tmp}/state"
shutdown_timeout = "2s"
[notify]
retry_initial = "100ms"
retry_max = "5s"
{notify}
[notify.slack]
{slack}
{extra}
"""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "config.toml"
    path.write_text(text)
    return parse_config(text, path, environ=environ)


def webhook(fake: FakeSlack) -> str:
    return f'webhook_url = "{fake.webhook_url}"'


def bot(fake: FakeSlack) -> str:
    return f'token = "{BOT_TOKEN}"\nchannel = "#mcp"\nbase_url = "{fake.api_url}"'


@contextlib.asynccontextmanager
async def notifier(config: Config, bus: EventBus | None = None) -> AsyncIterator[tuple[NotifyService, EventBus]]:
    bus = bus or EventBus()
    service = NotifyService(lambda: config, bus)
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(10):
            await service.wait_ready()
        yield service, bus
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        service.close()


@contextlib.asynccontextmanager
async def fake_slack(port: int = 0) -> AsyncIterator[FakeSlack]:
    fake = await FakeSlack().start(port)
    try:
        yield fake
    finally:
        await fake.stop()


def down(bus: EventBus, server: str = "jira", at: float | None = None, **data: Any) -> None:
    payload = {"old": "healthy", "new": "failed", "reason": "crashed: managed process exited (code -9)",
               "failure_class": "crashed", "critical": True, **data}
    bus.publish(Event("state", server, payload, **({"at": at} if at else {})))


def up(bus: EventBus, server: str = "jira", at: float | None = None) -> None:
    bus.publish(Event("state", server, {"old": "recovering", "new": "healthy", "reason": "probe succeeded",
                                        "attempt": 1}, **({"at": at} if at else {})))


async def test_webhook_down_then_recovered_is_one_alert_and_one_resolution_with_time_to_recovery(
    tmp_path: Path,
) -> None:
    async with fake_slack() as fake, notifier(make_config(tmp_path, webhook(fake))) as (service, bus):
        now = time.time()
        down(bus, at=now - 75.0)
        await fake.wait_for(lambda f: len(f.messages) == 1, 20, "the down alert")
        up(bus, at=now)
        await fake.wait_for(lambda f: len(f.messages) == 2, 20, "the resolution")
        assert fake.titles() == ["jira is down", "jira recovered after 1m 15s"]
        resolution = json.dumps(fake.messages[1])
        assert "Time to recovery" in resolution and "1m 15s" in resolution
        assert "jira is down" in fake.messages[0]["text"]  # the notification text for phones
        await asyncio.sleep(0.3)  # nothing else trickles in
        assert len(fake.messages) == 2 and service.counts["pending"] == 0 and service.counts["sent"] == 2


async def test_bot_token_threads_an_incidents_follow_ups_under_its_alert(tmp_path: Path) -> None:
    async with fake_slack() as fake, notifier(make_config(tmp_path, bot(fake))) as (_, bus):
        down(bus)
        bus.publish(Event("notify", "jira", {"notify": "needs_human", "severity": "critical",
                                             "detail": "5 recovery attempt(s) in 600s did not help"}))
        up(bus)
        await fake.wait_for(lambda f: len(f.messages) == 3, 20, "alert, follow-up, resolution")
        alert, follow, resolution = fake.messages
        assert "thread_ts" not in alert and alert["channel"] == "#mcp"
        assert follow["thread_ts"] == alert["_ts"] and resolution["thread_ts"] == alert["_ts"]
        assert follow["channel"] == "C0TEST"  # replies go to the channel ID Slack answered with
        assert "supervisorctl-mcp recover jira" in json.dumps(follow)
        # a second incident starts a new thread
        down(bus)
        await fake.wait_for(lambda f: len(f.messages) == 4, 20, "a new alert")
        assert "thread_ts" not in fake.messages[3]


async def test_slack_down_then_failing_delays_messages_with_backoff_but_loses_none(tmp_path: Path) -> None:
    port = free_port()  # nothing listens yet: connection refused
    url = f"http://127.0.0.1:{port}/services/T000TEST/B000TEST/abcdefghijklmnopqrstuvwx"
    async with notifier(make_config(tmp_path, f'webhook_url = "{url}"')) as (service, bus):
        down(bus)
        deadline = time.monotonic() + 20
        while service.stats[("slack", "retry")] < 2:  # two refused attempts, spaced by the backoff
            assert time.monotonic() < deadline, "no retries after connection refused"
            await asyncio.sleep(0.05)
        assert service.counts["pending"] == 1
        async with fake_slack(port) as fake:
            fake.fail_with(500, times=2)
            up(bus)
            await fake.wait_for(lambda f: len(f.messages) == 2, 30, "both messages after the outage")
            titles = fake.titles()
            assert titles[0] == "jira is down" and titles[1].startswith("jira recovered after"), titles
            assert [a.status for a in fake.attempts] == [500, 500, 200, 200]
            gaps = [b.at - a.at for a, b in zip(fake.attempts, fake.attempts[1:], strict=False)]
            # failures 3 and 4 (after two refusals): at least 0.8 x 0.4 s and 0.8 x 0.8 s apart
            assert gaps[0] >= 0.32 and gaps[1] >= 0.64, gaps
            await asyncio.sleep(0.3)
            assert len(fake.messages) == 2
        assert service.counts == {"pending": 0, "sent": 2, "dead": 0}


async def test_429_retry_after_is_honoured(tmp_path: Path) -> None:
    for flavour in ("webhook", "bot"):
        async with fake_slack() as fake:
            config = make_config(tmp_path / flavour, webhook(fake) if flavour == "webhook" else bot(fake))
            async with notifier(config) as (service, bus):
                fake.fail_with(429, headers={"Retry-After": "1"})
                down(bus)
                await fake.wait_for(lambda f: len(f.messages) == 1, 20, f"the alert after a 429 ({flavour})")
                limited, accepted = fake.attempts
                assert limited.status == 429 and accepted.status == 200
                assert accepted.at - limited.at >= 0.95, "retried before Retry-After"  # retry_initial is 0.1 s
                assert service.stats[("slack", "rate_limited")] == 1


async def test_a_canary_secret_in_config_and_environment_never_reaches_slack(tmp_path: Path) -> None:
    canary = "canary-7f3a9c1e5b2d4680"
    environ = {"JIRA_TOKEN": canary}
    async with fake_slack() as fake:
        extra = """
[[servers]]
name = "jira"
transport = "http"
url = "http://127.0.0.1:9/mcp"
token_env = "JIRA_TOKEN"
headers = { Authorization = "Bearer ${JIRA_TOKEN}" }
"""
        old = os.environ.get("JIRA_TOKEN")
        os.environ["JIRA_TOKEN"] = canary  # token_env values are read from the daemon's environment
        try:
            config = make_config(tmp_path, bot(fake), extra, environ=environ)
            async with notifier(config) as (_, bus):
                down(bus, reason=f"auth: 401 for Bearer {canary}", failure_class="auth")
                bus.publish(Event("notify", "jira", {"notify": "needs_human", "severity": "critical",
                                                     "detail": f"server said: invalid token {canary}"}))
                bus.publish(Event("notify", "jira", {"notify": "token_expiry", "severity": "warning",
                                                     "detail": f"token {canary} expires", "level": "7d"}))
                await fake.wait_for(lambda f: len(f.messages) == 2, 20, "the alert and the expiry warning")
        finally:
            if old is None:
                os.environ.pop("JIRA_TOKEN", None)
            else:
                os.environ["JIRA_TOKEN"] = old
        everything = json.dumps([a.body for a in fake.attempts])
        assert canary not in everything
        assert "***" in everything and "JIRA_TOKEN" in everything  # the variable's name, never its value
        for path in (tmp_path / "state").glob("history.sqlite3*"):  # the record (with the outbox) and its WAL
            assert canary.encode() not in path.read_bytes(), path


async def test_min_severity_filters_alerts_but_never_splits_an_incident(tmp_path: Path) -> None:
    async with fake_slack() as fake:
        config = make_config(tmp_path, webhook(fake) + '\nmin_severity = "critical"')
        async with notifier(config) as (_, bus):
            down(bus, server="minor", critical=False)  # warning: filtered, and so is its resolution
            up(bus, server="minor")
            down(bus, server="jira", critical=True)  # critical: sent, and its (info) resolution too
            up(bus, server="jira")
            await fake.wait_for(lambda f: len(f.messages) == 2, 20, "jira's alert and resolution")
            await asyncio.sleep(0.3)
        titles = fake.titles()
        assert titles[0] == "jira is down" and titles[1].startswith("jira recovered after"), titles


async def test_report_events_are_rendered(tmp_path: Path) -> None:
    async with fake_slack() as fake, notifier(make_config(tmp_path, webhook(fake))) as (_, bus):
        bus.publish(Event("report", None, {"period": "day", "report": {"health": "GOOD", "servers_total": 3,
                                                                        "servers_healthy": 3, "uptime_pct": 99.9}}))
        await fake.wait_for(lambda f: len(f.messages) == 1, 20, "the daily summary")
        assert fake.titles() == ["Daily MCP summary: GOOD"] and "99.90%" in json.dumps(fake.messages[0])


async def test_report_slack_without_the_daemon_posts_the_report_at_once(tmp_path: Path) -> None:
    from mcp_supervisor.notify.sending import report_notification, send_now

    async with fake_slack() as fake:
        config = make_config(tmp_path, bot(fake))
        answers = await send_now(config, report_notification({"health": "EXCELLENT", "recoveries": 4}, "week"))
        assert answers == {"channels": {"slack": {"ok": True, "answer": "ok (200)"}}}
        assert fake.titles() == ["Weekly MCP reliability report: EXCELLENT"]
        assert not (tmp_path / "state" / "outbox.sqlite3").exists()  # interactive: straight to the channel


async def test_apprise_delivers_the_same_messages_as_markdown(tmp_path: Path) -> None:
    pytest.importorskip("apprise")
    from aiohttp import web

    got: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        got.append(await request.json())
        arrived.set()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        text = f"""
[supervisor]
state_dir = "{tmp_path}/state"
[notify.apprise]
urls = ["json://127.0.0.1:{port}/hook"]
"""
        config = parse_config(text, tmp_path / "c.toml")
        async with notifier(config) as (_, bus):
            down(bus)
            async with asyncio.timeout(20):
                await arrived.wait()
        assert got[0]["title"] == "jira is down" and "**Server**: jira" in got[0]["message"]
    finally:
        await runner.cleanup()


# --- with the real supervisor and real MCP servers -------------------------------------------------------


@contextlib.asynccontextmanager
async def supervised(config: Config) -> AsyncIterator[tuple[Supervisor, NotifyService]]:
    supervisor = Supervisor(config, config.source)
    async with notifier(config, supervisor.bus) as (service, _), asyncio.TaskGroup() as tg:
        await supervisor.start(tg)
        try:
            yield supervisor, service
        finally:
            async with asyncio.timeout(10):
                await supervisor.aclose()


async def wait_state(supervisor: Supervisor, name: str, wanted: State, timeout: float) -> None:
    await until(supervisor, lambda: state(supervisor, name) is wanted, timeout, f"{name} {wanted}")


async def test_kill_and_heal_of_a_managed_server_sends_one_down_and_one_recovered(tmp_path: Path) -> None:
    async with fake_slack() as fake:
        config = make_config(tmp_path, webhook(fake), managed_notes("notes", free_port()))
        async with supervised(config) as (sup, _):
            await wait_state(sup, "notes", State.HEALTHY, 30)
            await asyncio.sleep(0.3)
            base = len(fake.messages)  # a start slower than start_period on a loaded machine is an incident too
            old_pid = sup.runners["notes"].process.pid
            os.kill(old_pid, signal.SIGKILL)
            await fake.wait_for(lambda f: len(f.messages) >= base + 2, 30, "down and recovered")
            await asyncio.sleep(1.0)  # several probe rounds: no more messages for this incident
            assert sup.runners["notes"].state is State.HEALTHY
        assert len(fake.messages) == base + 2
        assert fake.titles()[base] == "notes is down"
        assert fake.titles()[base + 1].startswith("notes recovered after ")
        assert "Time to recovery" in json.dumps(fake.messages[base + 1])


async def test_a_crash_loop_sends_one_alert_not_one_per_attempt(tmp_path: Path) -> None:
    port = free_port()
    servers = managed_server("crashy", port, ["-c", "import sys; sys.exit(3)"],
                             'recovery = { backoff_initial = "50ms", backoff_max = "200ms", max_attempts = 4 }',
                             interval="200ms", timeout="800ms", failure_threshold=1)
    async with fake_slack() as fake:
        config = make_config(tmp_path, bot(fake), servers)
        async with supervised(config) as (sup, _):
            restarts = 0
            with sup.bus.subscription() as queue:
                async with asyncio.timeout(40):
                    while sup.runners["crashy"].state is not State.NEEDS_HUMAN:
                        event = await queue.get()
                        restarts += event.kind == "action"
            await fake.wait_for(lambda f: len(f.messages) == 2, 20, "one alert and one escalation")
            await asyncio.sleep(0.5)
        assert restarts >= 3
        assert fake.titles() == ["crashy is down", "crashy needs a person"]
        assert fake.messages[1]["thread_ts"] == fake.messages[0]["_ts"]
        assert "crashy.log" in json.dumps(fake.messages[1]) and "supervisorctl-mcp recover crashy" in json.dumps(
            fake.messages[1])


async def test_a_401_needs_a_person_with_the_token_variable_and_the_canary_never_leaks(tmp_path: Path) -> None:
    canary = "canary-e2e-5d1c0b9a8f7e"
    port = free_port()
    servers = unauthorized("jira", port, 'token_env = "JIRA_TOKEN"\n'
                           'headers = { Authorization = "Bearer ${JIRA_TOKEN}" }\n'
                           'env = { JIRA_SECRET = "${JIRA_TOKEN}" }', echo=True,
                           interval="200ms", timeout="1s", failure_threshold=2, start_period="8s")
    async with fake_slack() as fake:
        config = make_config(tmp_path, bot(fake), servers, environ={"JIRA_TOKEN": canary})
        async with supervised(config) as (sup, _):
            await wait_state(sup, "jira", State.NEEDS_HUMAN, 30)
            await fake.wait_for(lambda f: len(f.messages) == 1, 20, "the needs-a-person alert")
            await asyncio.sleep(0.5)
        assert fake.titles() == ["jira needs a person"]
        text = json.dumps(fake.messages[0])
        assert "JIRA_TOKEN" in text and "supervisorctl-mcp recover jira" in text
        assert canary not in json.dumps([a.body for a in fake.attempts])


# --- the real daemon, killed with SIGKILL while Slack fails -----------------------------------------------


async def _wait_server_state(sock: Path, name: str, wanted: str, timeout: float) -> None:
    def there() -> bool:
        with contextlib.suppress(OSError, ValueError):
            return any(s["name"] == name and s["state"] == wanted for s in api(sock, "/v1/status", timeout=5)[1]["servers"])
        return False

    await wait_until(lambda: asyncio.to_thread(there), timeout, f"{name} {wanted}", every=0.1)


async def _outbox_rows(db: Path) -> list[dict[str, Any]]:
    from mcp_supervisor.notify.outbox import Outbox

    def read() -> list[dict[str, Any]]:
        box = Outbox(db)
        try:
            return box.rows()
        finally:
            box.close()

    return await asyncio.to_thread(read)


@pytest.mark.slow
async def test_daemon_killed_while_slack_fails_delivers_pending_once_and_never_resends_acknowledged(
    tmp_path: Path,
) -> None:
    http_port = free_port()
    notes = notes_http(http_port)
    daemons: list[subprocess.Popen[bytes]] = []
    async with fake_slack() as fake:
        text = f"""
[supervisor]
socket = "{tmp_path}/ctl.sock"
state_dir = "{tmp_path}/state"
log_format = "json"
shutdown_timeout = "2s"
[notify]
retry_initial = "200ms"
retry_max = "1s"
group_wait = "0s"
group_interval = "0s"
[notify.slack]
webhook_url = "${{SLACK_WEBHOOK_URL}}"
[[servers]]
name = "notes"
transport = "http"
url = "http://127.0.0.1:{http_port}/mcp"
probe = {{ interval = "250ms", timeout = "3s", failure_threshold = 3 }}
"""
        config_path = tmp_path / "mcp-supervisor.toml"
        config_path.write_text(text)
        env = {**os.environ, "SLACK_WEBHOOK_URL": fake.webhook_url}
        env.pop("NOTIFY_SOCKET", None)
        env.pop("MCP_SUPERVISOR_SOCKET", None)

        def start_daemon() -> subprocess.Popen[bytes]:
            with open(tmp_path / "daemon.log", "ab") as log:
                proc = subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(config_path)], env=env,
                                        stderr=log, stdout=log)
            daemons.append(proc)
            return proc

        try:
            first = start_daemon()
            await _wait_server_state(tmp_path / "ctl.sock", "notes", "healthy", 40)
            stop(notes, signal.SIGKILL, timeout=10)
            await fake.wait_for(lambda f: len(f.messages) == 1, 40, "the down alert (acknowledged)")
            fake.mode = (500, {})  # Slack breaks
            notes = notes_http(http_port)
            await fake.wait_for(lambda f: sum(a.status == 500 for a in f.attempts) >= 2, 40,
                                "the resolution failing at Slack")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            rows = await _outbox_rows(tmp_path / "state" / "history.sqlite3")
            assert [(r["kind"], r["status"]) for r in rows] == [("down", "sent"), ("recovered", "pending")]
            fake.mode = None  # Slack is back
            start_daemon()
            await fake.wait_for(lambda f: len(f.messages) == 2, 40, "the pending resolution after the restart")
            await asyncio.sleep(1.5)  # the restarted daemon sees notes healthy: no new alert, no repeat
            titles = fake.titles()
            assert titles[0] == "notes is down" and titles[1].startswith("notes recovered after"), titles
            assert len(fake.messages) == 2
        finally:
            for proc in daemons:
                stop(proc, timeout=10)
            stop(notes, timeout=10)
        log = (tmp_path / "daemon.log").read_text(errors="replace")
        assert "abcdefghijklmnopqrstuvwx" not in log  # the webhook's secret part never reaches a log line


async def test_backup_metrics_from_the_real_vault_and_a_backup_below_min_copies_alerts(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from mcp_supervisor.metrics import SupervisorMetrics
    from mcp_supervisor.vault.service import VaultService

    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "mcp.json").write_text(json.dumps({"mcpServers": {"a": {"command": "x"}}}))
    async with fake_slack() as fake:
        extra = f"""
[backup]
key_file = "{tmp_path}/keys/vault.key"
locations = ["{tmp_path}/backup0", "{tmp_path}/backup1"]
min_copies = 2
[[configs]]
name = "cursor"
path = "{tmp_path}/home/mcp.json"
format = "mcp-client-json"
"""
        config = make_config(tmp_path, webhook(fake), extra)
        bus = EventBus()
        vault = VaultService(config, on_event=lambda kind, data: bus.publish(Event(kind, None, dict(data))))
        metrics = SupervisorMetrics(lambda: {"servers": []}, lambda: config, bus, vault=vault)
        counting = asyncio.create_task(metrics.run())
        try:
            async with notifier(config, bus) as (service, _):
                result = await vault.backup("test")
                assert result["safe"] is True and len(result["copies"]) == 2
                # a safe backup is no news; one that missed a location is (the vault's event shape)
                bus.publish(Event("backup", None, {**result, "copies": result["copies"][:1], "safe": False,
                                                   "failed_locations": {f"{tmp_path}/backup1": "No space left"}}))
                await fake.wait_for(lambda f: len(f.messages) == 1, 20, "the backup alert")
                await asyncio.sleep(0.2)
                assert service.counts["sent"] == 1
        finally:
            counting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await counting
            metrics.close()
    assert fake.titles() == ["Config backup is not safe"]
    message = json.dumps(fake.messages[0])
    assert "No space left" in message and "min_copies" in message and "supervisorctl-mcp backup" in message
    found = {s.name: s.value for f in text_string_to_metric_families(metrics.exposition().decode()) for s in f.samples}
    assert found["mcp_supervisor_backup_copies"] == 1.0 and found["mcp_supervisor_backup_min_copies"] == 2.0
    assert 0.0 <= found["mcp_supervisor_backup_age_seconds"] < 60.0


async def test_a_pending_outbox_file_of_an_older_daemon_is_moved_into_the_record_and_delivered_once(
    tmp_path: Path,
) -> None:
    from mcp_supervisor.notify.incidents import Notification
    from mcp_supervisor.notify.outbox import Outbox

    old = tmp_path / "state" / "outbox.sqlite3"
    old.parent.mkdir(parents=True)
    box = Outbox(old)  # the tables an older daemon wrote, in their own file
    notes = [Notification("down", "critical", "jira@1.000", "alert", 1.0, "jira", {"detail": "refused"}),
             Notification("recovered", "info", "jira@1.000", "resolution", 9.0, "jira", {"ttr_s": 8.0}),
             Notification("down", "critical", "gitlab@2.000", "alert", 2.0, "gitlab", {"detail": "crashed"})]
    box.enqueue([("slack", n, 0.0) for n in notes], {"open": {}, "recent": {}})
    box.mark_sent(3, 5.0, None, None)  # gitlab's alert was delivered before the upgrade
    box.close()
    async with fake_slack() as fake:
        config = make_config(tmp_path, webhook(fake))
        async with notifier(config) as (service, _):
            await fake.wait_for(lambda f: len(f.messages) == 2, 20, "the two pending messages")
            assert service.db_path == tmp_path / "state" / "history.sqlite3"
            async with asyncio.timeout(10):  # both marked sent (a stop between Slack's ok and that is a repeat)
                while service.counts["pending"]:
                    await asyncio.sleep(0.05)
        async with notifier(config) as (service, _):  # a second start copies nothing again
            await asyncio.sleep(0.5)
            assert service.counts == {"pending": 0, "sent": 3, "dead": 0}
    assert fake.titles() == ["jira is down", "jira recovered after 8.0s"]
    assert not old.exists() and old.with_name("outbox.sqlite3.migrated").exists()


async def test_messages_on_one_channel_are_paced_one_per_second_before_any_429(tmp_path: Path) -> None:
    async with fake_slack() as fake:
        config = make_config(tmp_path, webhook(fake), notify='group_wait = "0s"\ngroup_interval = "0s"\npace = "1s"')
        async with notifier(config) as (_, bus):
            for name in ("a", "b", "c"):
                down(bus, server=name)
            await fake.wait_for(lambda f: len(f.messages) == 3, 20, "three alerts")
        gaps = [later.at - earlier.at for earlier, later in zip(fake.attempts, fake.attempts[1:], strict=False)]
        assert all(status == 200 for status in (a.status for a in fake.attempts))
        assert min(gaps) >= 0.95, gaps
