"""Sending outside the delivery loop, and which channels exist: shared by the notifier and the
commands that send at once (``notify-test``, ``report --slack``).

Why apart from the service: the commands need the channels and one immediate send, not the
outbox, the tracker or the grouping; keeping them here keeps the CLI's import light and the
service about its two loops.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace
from typing import Any

from mcp_supervisor.config import Config
from mcp_supervisor.logging import Redactor, collect_secrets
from mcp_supervisor.notify.channels import AppriseChannel, Channel, Delivery, SlackBot, SlackWebhook
from mcp_supervisor.notify.incidents import Notification


def targets(config: Config) -> dict[str, str]:
    """Configured channel name -> its min_severity (whether or not the channel can be built now)."""
    found: dict[str, str] = {}
    if config.notify.slack is not None:
        found["slack"] = config.notify.slack.min_severity
    elif config.slack.token and config.slack.channel:
        found["slack"] = "info"  # the older [slack] table: a bot token and a channel
    if config.notify.apprise is not None and config.notify.apprise.urls:
        found["apprise"] = config.notify.apprise.min_severity
    return found


def build_channels(config: Config) -> tuple[dict[str, Channel], dict[str, str]]:
    """The channels that can run now, and for the others why not (secret-free)."""
    channels: dict[str, Channel] = {}
    errors: dict[str, str] = {}
    slack = config.notify.slack
    if slack is not None:
        secret = slack.webhook_url or slack.token or ""
        if "${" in secret:
            errors["slack"] = ("the Slack secret references a variable or file that is not set "
                               f"({'webhook_url' if slack.webhook_url else 'token'} in [notify.slack]); "
                               "set it and run supervisorctl-mcp reload")
        elif slack.webhook_url:
            channels["slack"] = SlackWebhook(slack.webhook_url, slack.timeout)
        elif slack.token and slack.channel:
            channels["slack"] = SlackBot(slack.token, slack.channel, slack.base_url, slack.timeout)
    elif config.slack.token and config.slack.channel and "${" not in config.slack.token:
        channels["slack"] = SlackBot(config.slack.token, config.slack.channel, config.slack.base_url)
    if config.notify.apprise is not None and config.notify.apprise.urls:
        try:
            channels["apprise"] = AppriseChannel(config.notify.apprise.urls)
        except RuntimeError as exc:
            errors["apprise"] = str(exc)
    return channels, errors


async def send_test(config: Config, now: float | None = None) -> dict[str, Any]:
    """One test message through every configured channel, now (not via the outbox), and each answer."""
    at = time.time() if now is None else now
    note = Notification(kind="test", severity="info", incident=f"test:{at:.6f}", role="single", at=at,
                        data={"detail": f"Test from mcp-supervisor on {os.uname().nodename}."})
    return await send_now(config, note)


def report_notification(report: dict[str, Any], period: str | None = None, at: float | None = None) -> Notification:
    """A REPORT (see CONTRACTS.md) as a notification, e.g. for ``report --slack`` without the daemon."""
    at = time.time() if at is None else at
    period = period or str(report.get("period") or "custom")
    return Notification(kind="report", severity="info", incident=f"report:{period}:{at:.6f}", role="single", at=at,
                        data={"period": period, "report": report})


async def send_now(config: Config, note: Notification) -> dict[str, Any]:
    """Deliver one notification through every configured channel at once, bypassing the outbox.

    For interactive commands (``notify-test``, ``report --slack``) whose user sees the answer; the
    daemon's own alerts always go through the outbox.
    """
    channels, errors = build_channels(config)
    answers: dict[str, Any] = {name: {"ok": False, "answer": problem} for name, problem in errors.items()}
    redactor = Redactor(collect_secrets(config))
    scrubbed = redactor.scrub(dict(note.data))
    note = replace(note, data=scrubbed if isinstance(scrubbed, dict) else {})
    try:
        for name, channel in channels.items():
            try:
                result = await channel.deliver(note, None)
            except Exception as exc:
                result = Delivery(ok=False, error=type(exc).__name__)
            answers[name] = {"ok": result.ok, "answer": str(redactor.scrub(result.summary()))}
    finally:
        for channel in channels.values():
            with contextlib.suppress(Exception):
                await channel.aclose()
    return {"channels": answers}
