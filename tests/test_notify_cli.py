"""``check-config`` warnings for inline secrets and ``notify-test`` against a local Slack stand-in."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.slack_fake import FakeSlack

BIN = Path(sys.executable).parent


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "supervisorctl-mcp"), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_check_config_warns_when_the_webhook_is_inline_and_not_when_it_is_a_reference(tmp_path: Path) -> None:
    inline = tmp_path / "inline.toml"
    inline.write_text('[notify.slack]\nwebhook_url = "https://hooks.slack.com/services/T1/B2/sEcReTsEcReT"\n')
    result = run("check-config", str(inline))
    assert result.returncode == 0, result.stderr
    assert "notify.slack.webhook_url" in result.stderr and "${SLACK_WEBHOOK_URL}" in result.stderr
    assert "sEcReTsEcReT" not in result.stderr + result.stdout
    as_json = run("check-config", str(inline), "--json")
    assert json.loads(as_json.stdout)["warnings"][0].startswith("notify.slack.webhook_url")
    referenced = tmp_path / "ref.toml"
    referenced.write_text('[notify.slack]\nwebhook_url = "${SLACK_WEBHOOK_URL}"\n')
    clean = run("check-config", str(referenced), env={"SLACK_WEBHOOK_URL": "https://example.invalid/x"})
    assert clean.returncode == 0 and "warning" not in clean.stderr


async def test_notify_test_sends_one_message_per_channel_and_prints_the_answer(tmp_path: Path) -> None:
    fake = await FakeSlack().start()
    try:
        config = tmp_path / "c.toml"
        config.write_text(f'[supervisor]\nstate_dir = "{tmp_path}/state"\n[notify.slack]\nwebhook_url = "${{HOOK}}"\n')
        ok = await asyncio.to_thread(run, "notify-test", "--config", str(config), env={"HOOK": fake.webhook_url})
        assert ok.returncode == 0, ok.stderr
        assert "slack: sent, the receiver answered: ok (200)" in ok.stdout
        assert fake.titles() == ["mcp-supervisor test message"]
        fake.mode = (404, {})  # a revoked webhook
        bad = await asyncio.to_thread(run, "notify-test", "--config", str(config), "--json",
                                      env={"HOOK": fake.webhook_url})
        assert bad.returncode == 1
        answer = json.loads(bad.stdout)["channels"]["slack"]
        assert answer["ok"] is False and answer["answer"].startswith("404")
        unset = await asyncio.to_thread(run, "notify-test", "--config", str(config))  # HOOK is not set
        assert unset.returncode == 1 and "not set" in unset.stdout
        empty = await asyncio.to_thread(run, "notify-test", "--config", str(config), env={"HOOK": ""})
        assert empty.returncode == 2 and "notify.slack: webhook_url is empty" in empty.stderr
        assert len(fake.messages) == 1  # nothing else was sent
    finally:
        await fake.stop()
