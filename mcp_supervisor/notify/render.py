"""Notifications -> Slack Block Kit and plain text. Pure builders: no I/O, no config, no clock.

Why every message carries its server and what to do: a message is read on a phone at 7 a.m.,
often without the thread it belongs to (webhooks cannot thread). So each one stands alone: what
happened, to which server, since when, and, when a person must act, the exact step (which token,
which variable, which command). Text from the outside world (probe messages, reasons) is escaped
for Slack's mrkdwn, so a server cannot inject mentions or links into the channel.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mcp_supervisor.notify.group_render import group_body, group_instruction, group_title
from mcp_supervisor.notify.incidents import Notification

_EMOJI = {
    "down": ":red_circle:",
    "recovered": ":large_green_circle:",
    "needs_human": ":sos:",
    "fallback": ":warning:",
    "flapping": ":repeat:",
    "token_expiry": ":hourglass_flowing_sand:",
    "tools_changed": ":scroll:",
    "backup_failed": ":floppy_disk:",
    "restore_failed": ":x:",
    "config_restored": ":recycle:",
    "report": ":bar_chart:",
    "test": ":white_check_mark:",
    "group": ":red_circle:",
}
_HEALTH_EMOJI = {"EXCELLENT": ":large_green_circle:", "GOOD": ":large_green_circle:", "DEGRADED": ":large_yellow_circle:",
                 "CRITICAL": ":red_circle:"}
_MAX_SECTION = 2900  # Slack rejects section text over 3000 characters
_PERIOD_TITLE = {"day": "Daily MCP summary", "week": "Weekly MCP reliability report", "run": "Guarded run report",
                 "custom": "MCP reliability report"}


def escape(text: str) -> str:
    """Slack mrkdwn control characters (``&``, ``<``, ``>``) as entities: no injected mentions or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def _when(ts: float | None) -> str:
    if not ts:
        return "unknown"
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _report(data: dict[str, Any]) -> dict[str, Any]:
    """The REPORT a ``report`` event carries (contract: every key optional)."""
    report = data.get("report")
    return report if isinstance(report, dict) else {}


def _pct(value: Any) -> str:
    return f"{float(value):.2f}%" if isinstance(value, int | float) else "n/a"


# --- the content, shared by Slack and plain text ---------------------------------------------------


def title(n: Notification) -> str:
    server = n.server or ""
    data = n.data
    kind = n.kind
    if kind == "group":
        return group_title(data, n.role, duration)
    if kind == "down":
        return f"{server} is down"
    if kind == "recovered":
        if data.get("ttr_s") is not None:
            return f"{server} recovered after {duration(data.get('ttr_s'))}"
        return f"{server} recovered"
    if kind == "needs_human":
        return f"{server} needs a person"
    if kind == "fallback":
        return f"{server}: fallback engaged, the job must use the direct API"
    if kind == "flapping":
        return f"{server} is flapping"
    if kind == "token_expiry":
        level = data.get("level")
        return f"{server}: token expired" if level == "expired" else f"{server}: token expires soon"
    if kind == "tools_changed":
        return f"{server}: tools changed"
    if kind == "backup_failed":
        return "Config backup is not safe"
    if kind == "restore_failed":
        return f"Config {data.get('config', '?')} could not be restored"
    if kind == "config_restored":
        return f"Config {data.get('config', '?')} restored from backup"
    if kind == "report":
        report = _report(data)
        period = str(data.get("period") or report.get("period") or "custom")
        health = report.get("health")
        base = _PERIOD_TITLE.get(period, _PERIOD_TITLE["custom"])
        return f"{base}: {health}" if health else base
    if kind == "test":
        return "mcp-supervisor test message"
    return f"{server}: {kind}" if server else kind


def facts(n: Notification) -> list[tuple[str, str]]:
    """(label, value) pairs shown as fields; values are plain text (escaped when rendered)."""
    data = n.data
    out: list[tuple[str, str]] = []
    if n.server:
        out.append(("Server", n.server))
    out.append(("Severity", n.severity))
    if data.get("failure_class"):
        out.append(("Failure", str(data["failure_class"])))
    if n.kind == "recovered":
        if data.get("ttr_s") is not None:
            out.append(("Time to recovery", duration(data.get("ttr_s"))))
        if data.get("attempts"):
            out.append(("Recovery attempts", str(data["attempts"])))
        if data.get("opened_at"):
            out.append(("Down since", _when(data.get("opened_at"))))
    elif n.role in ("alert", "followup") and data.get("opened_at"):
        out.append(("Since", _when(data.get("opened_at"))))
    if n.kind == "backup_failed":
        copies = data.get("copies")
        if isinstance(copies, list):
            out.append(("Copies written", str(len(copies))))
        if data.get("min_copies") is not None:
            out.append(("min_copies", str(data["min_copies"])))
        if data.get("snapshot"):
            out.append(("Snapshot", str(data["snapshot"])))
    if n.kind == "config_restored":
        if data.get("snapshot"):
            out.append(("Snapshot", str(data["snapshot"])))
        if data.get("kept_aside"):
            out.append(("Damaged file kept at", str(data["kept_aside"])))
    return out


def body(n: Notification) -> str:
    """The main sentence(s): what happened, in words."""
    data = n.data
    detail = str(data.get("detail") or "")
    if n.kind == "group":
        return group_body(data)
    if n.kind == "backup_failed":
        failed = data.get("failed_locations") or {}
        parts = [detail] if detail else []
        if isinstance(failed, dict) and failed:
            parts.append("failed locations: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
        elif data.get("error"):
            parts.append(str(data["error"]))
        if data.get("safe") is False:
            parts.append("the newest snapshot has fewer copies than [backup] min_copies")
        return "\n".join(parts) or "the backup did not reach every location"
    if n.kind == "config_restored":
        servers = data.get("servers") or data.get("restored_servers")
        where = data.get("path", data.get("config", ""))
        if data.get("reason") == "manual":
            text = f"{where} was restored by an operator from snapshot {data.get('snapshot', '?')}."
        else:
            text = f"{where} was damaged and has been put back from the newest valid backup."
        if data.get("only_server_map"):
            text += " Only the MCP server list was restored; the rest of the file was kept."
        if isinstance(servers, list) and servers:
            text += " Servers back: " + ", ".join(str(s) for s in servers) + "."
        return text
    if n.kind == "restore_failed":
        return str(data.get("error") or detail)
    if n.kind == "report":
        return _report_text(data)
    if n.kind == "test":
        return detail or "If you can read this, mcp-supervisor can reach this channel."
    return detail


def instruction(n: Notification) -> str:
    if n.kind == "group":
        return "" if n.role in ("resolution", "single") else group_instruction(n.data)
    return str(n.data.get("instruction") or "")


def _report_text(data: dict[str, Any]) -> str:
    report = _report(data)
    lines = []
    health = report.get("health")
    if health:
        lines.append(f"Health: {health}")
    total, healthy = report.get("servers_total"), report.get("servers_healthy")
    if total is not None:
        lines.append(f"Servers healthy: {healthy if healthy is not None else '?'} of {total}")
    if "uptime_pct" in report:
        lines.append(f"Uptime: {_pct(report.get('uptime_pct'))}")
    if report.get("recoveries") is not None:
        rate = report.get("recovery_rate")
        rate_text = ""
        if isinstance(rate, int | float):  # a fraction (0..1) or already a percentage
            rate_text = f" (recovery rate {rate * 100 if rate <= 1 else rate:.0f}%)"
        lines.append(f"Self-healed incidents: {report.get('recoveries')}{rate_text}")
    if isinstance(report.get("mttr_s"), int | float):
        lines.append(f"Mean time to recovery: {duration(report.get('mttr_s'))}")
    failed = report.get("failed_servers") or []
    if failed:
        lines.append("Failed: " + ", ".join(str(s) for s in failed))
    run = report.get("run")
    run = run if isinstance(run, dict) else None
    if run:
        command = run.get("command")
        code = run.get("exit_code")
        if command:
            lines.append(f"Command: {command}")
        if code is not None:
            lines.append(f"Exit code: {code}")
        if run.get("duration_s") is not None:
            lines.append(f"Duration: {duration(run.get('duration_s'))}")
    for rec in report.get("recommendations") or []:
        lines.append(f"• {rec}")
    if report.get("since") and report.get("until"):
        lines.append(f"Period: {_when(report.get('since'))} to {_when(report.get('until'))}")
    return "\n".join(lines) or "No data for this period."


# --- Slack ------------------------------------------------------------------------------------------


def fallback_text(n: Notification) -> str:
    """The notification text (phone banners, screen readers) that Slack shows instead of blocks."""
    head = title(n)
    todo = instruction(n)
    return escape(f"{head}. {todo}" if todo else head)


def slack_blocks(n: Notification) -> list[dict[str, Any]]:
    emoji = _EMOJI.get(n.kind, ":information_source:")
    if n.kind == "group" and n.role in ("resolution", "single"):
        emoji = _EMOJI["recovered"]
    if n.kind == "report":
        report = _report(n.data)
        emoji = _HEALTH_EMOJI.get(str(report.get("health")), emoji)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{title(n)}"[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} *{escape(title(n))}*"[:_MAX_SECTION]}},
    ]
    text = body(n)
    if text:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": escape(text)[:_MAX_SECTION]}})
    fields = [{"type": "mrkdwn", "text": f"*{escape(k)}*\n{escape(v)}"[:1900]} for k, v in facts(n)]
    if n.kind != "report" and fields:
        blocks.append({"type": "section", "fields": fields[:10]})
    todo = instruction(n)
    if todo:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f":point_right: *What to do:* {escape(todo)}"[:_MAX_SECTION]}}
        )
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"mcp-supervisor · {n.kind} · {_when(n.at)}"}]}
    )
    return blocks


# --- plain text / markdown (apprise) -------------------------------------------------------------


def plain(n: Notification) -> tuple[str, str]:
    """(title, body) in markdown for e-mail, Teams, Discord, ntfy, ... through apprise."""
    lines = []
    text = body(n)
    if text:
        lines.append(text)
    for label, value in facts(n):
        lines.append(f"- **{label}**: {value}")
    todo = instruction(n)
    if todo:
        lines.append(f"**What to do:** {todo}")
    lines.append(f"_{_when(n.at)}_")
    return title(n), "\n".join(lines)
