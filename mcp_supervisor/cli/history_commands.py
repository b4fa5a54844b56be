"""``supervisorctl-mcp history|report``: the record, read through the running daemon.

Why through the daemon and not the file: the daemon owns the database (as root, in its state
directory) and folds in what it has not written yet; the CLI stays a small stdlib client. This
module imports nothing heavy at import time (no sqlite, no rich) so ``ready`` stays fast.
"""

from __future__ import annotations

import argparse
import re
import time
import urllib.parse
from typing import Any

EXIT_OK = 0
_AGO_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_AGO_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_since(raw: str) -> float:
    """``--since``: a Unix time, an ISO date/time (local unless it has an offset), or an age like ``36h``."""
    match = _AGO_RE.match(raw)
    if match:
        return time.time() - float(match.group(1)) * _AGO_UNITS[match.group(2)]
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if value > 0:
            return value
    from datetime import datetime

    try:
        parsed = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not a time; use an age (36h, 7d), an ISO time (2026-11-24 09:30) or a Unix time"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()
    return parsed.timestamp()


def _days(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of days") from None
    if not (0 < value <= 3660):
        raise argparse.ArgumentTypeError("--days takes a number of days between 0 and 3660")
    return value


def _pct(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f} %" if isinstance(value, int | float) else "n/a"


def _secs(value: Any) -> str:
    if not isinstance(value, int | float):
        return "n/a"
    from mcp_supervisor.history.patterns import human_seconds

    return human_seconds(float(value))


def cmd_history(args: argparse.Namespace) -> int:
    from mcp_supervisor.cli.common import client_for, emit_json, local_time

    query = {"days": f"{args.days:g}", "limit": str(args.limit)}
    if args.server:
        query["server"] = args.server
    _, body = client_for(args, timeout=60.0).request("GET", "/v1/history?" + urllib.parse.urlencode(query))
    events = body.get("events") or []
    if args.json:
        emit_json(events)
        return EXIT_OK
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"history: last {args.days:g} day(s)" + (f", {args.server}" if args.server else ""))
    for column in ("time", "server", "kind", "change", "detail"):
        table.add_column(column, overflow="fold")
    for event in events:
        old, new = event.get("from_state"), event.get("to_state")
        change = f"{old} -> {new}" if old or new else ""
        table.add_row(*(escape(cell) for cell in (local_time(event.get("time")), event.get("server") or "-",
                                                   str(event.get("kind")), change, str(event.get("detail") or ""))))
    console = Console()
    console.print(table)
    if body.get("truncated"):
        console.print(f"(only the newest {args.limit} events; use --limit or --days to see others)")
    if not events:
        console.print("nothing recorded in this window")
    return EXIT_OK


def render_report(report: dict[str, Any]) -> str:
    """The report as console markup (rich); the health word in its colour, everything else escaped."""
    from rich.markup import escape

    from mcp_supervisor.cli.common import local_time
    from mcp_supervisor.history.report import HEALTH_COLOURS

    health = str(report.get("health") or "?")
    colour = HEALTH_COLOURS.get(health, "white")
    healthy = report.get("healthy_servers") or []
    failed = report.get("failed_servers") or []
    advice = report.get("recommendations") or []
    lines = [
        f"MCP health: [bold {colour}]{escape(health)}[/]",
        f"window:       {local_time(report.get('since'))} -> {local_time(report.get('until'))} ({report.get('period')})",
        f"MCPs healthy: {report.get('servers_healthy', 0)}/{report.get('servers_total', 0)}",
        f"uptime:       {_pct(report.get('uptime_pct'))}  (not watching: {_secs(report.get('unknown_s'))}, "
        f"paused: {_secs(report.get('paused_s'))}, maintenance: {_secs(report.get('maintenance_s'))}, excluded)",
        f"recovery:     {_pct(100 * report['recovery_rate'], 0) if isinstance(report.get('recovery_rate'), int | float) else 'n/a'}"
        f"  ({report.get('recoveries', 0)} recovered of {report.get('incidents', 0)} incident(s))",
        f"MTTR:         {_secs(report.get('mttr_s'))}",
        f"healthy:      {', '.join(healthy) or '-'}",
        f"failed:       {', '.join(failed) or '-'}",
    ]
    servers = report.get("servers") or {}
    for name, info in servers.items():
        if not isinstance(info, dict):
            continue
        failures = info.get("failures") or {}
        if failures or info.get("attempts"):
            by_class = ", ".join(f"{k} {v}" for k, v in failures.items()) or "-"
            lines.append(f"  {name}: uptime {_pct(info.get('uptime_pct'))}, failures {by_class}, "
                         f"recoveries {info.get('recoveries', 0)}, MTTR {_secs(info.get('mttr_s'))}")
    if advice:
        lines.append(f"top recommendation: {advice[0]}")
    else:  # the judgement gives every word below GOOD its advice; an older daemon may not
        lines.append("top recommendation: none, all is well" if health in ("EXCELLENT", "GOOD")
                     else "top recommendation: see `supervisorctl-mcp status` for what is down")
    head, *rest = lines
    return "\n".join([head, *(escape(line) for line in rest)])


def cmd_report(args: argparse.Namespace) -> int:
    from mcp_supervisor.cli.common import client_for, emit_json

    if args.since is not None:
        query = {"since": f"{args.since:.3f}"}
    else:
        query = {"period": "week" if args.weekly else "day"}
    _, report = client_for(args, timeout=60.0).request("GET", "/v1/report?" + urllib.parse.urlencode(query))
    if getattr(args, "slack", False):
        return _send_report(args, report)
    if args.json:
        from mcp_supervisor.history.report import cli_json

        emit_json(cli_json(report))
        return EXIT_OK
    from rich.console import Console

    Console(highlight=False).print(render_report(report))
    return EXIT_OK


def _send_report(args: argparse.Namespace, report: dict[str, Any]) -> int:
    """``report --slack``: the same REPORT through every configured channel, now (timers, cron)."""
    import asyncio

    from mcp_supervisor.cli.common import UsageError
    from mcp_supervisor.cli.notify_commands import channels_config, print_answers
    from mcp_supervisor.notify.sending import report_notification, send_now, targets

    config = channels_config(args)
    if not targets(config):
        raise UsageError("no notification channel configured (add [notify.slack] or [notify.apprise])")
    period = str(report.get("period") or "custom")
    return print_answers(args, asyncio.run(send_now(config, report_notification(report, period))))


def add_history_subcommands(sub: Any) -> None:
    from mcp_supervisor.cli.common import command_adder

    add = command_adder(sub)

    history = add("history", cmd_history, "what happened: state changes, recoveries, alerts, backups, runs")
    history.add_argument("--days", type=_days, default=1.0, metavar="N", help="the last N days (default 1)")
    history.add_argument("--server", metavar="NAME", default=None, help="only this server")
    history.add_argument("--limit", type=int, default=1000, metavar="N", help="at most N events (default 1000)")
    report = add("report", cmd_report, "health word, uptime, recovery rate, MTTR and advice for a window")
    window = report.add_mutually_exclusive_group()
    window.add_argument("--daily", action="store_true", help="the last 24 hours (default)")
    window.add_argument("--weekly", action="store_true", help="the last 7 days")
    window.add_argument("--since", type=parse_since, default=None, metavar="T",
                        help="from T until now: an age (36h), an ISO time or a Unix time")
    report.add_argument("--slack", action="store_true",
                        help="send the report through the configured channels ([notify.slack], apprise)")
