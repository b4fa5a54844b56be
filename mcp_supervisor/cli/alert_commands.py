"""``supervisorctl-mcp silence | silences | unsilence | maintenance``: quiet alerts, take a server out.

Why through the daemon: the daemon owns the silences (stored in its record, applied on every
message it sends, expired by its clock), so every command here is one request on the control
socket; this module imports nothing heavy (no rich) so it starts fast.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

EXIT_OK = 0


def _duration(raw: str) -> float:
    from mcp_supervisor.config.base import parse_duration

    try:
        value = parse_duration(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("--for takes a duration above zero, e.g. 1h")
    return value


def _left(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _post(args: argparse.Namespace, kind: str, server: str) -> int:
    from mcp_supervisor.cli.common import client_for, emit_json, local_time

    body = {"kind": kind, "server": server, "for": args.duration, "reason": args.reason or ""}
    _, made = client_for(args).request("POST", "/v1/silences", body, ok=(201,))
    if args.json:
        emit_json(made)
        return EXIT_OK
    what = "every server" if server == "*" else server
    verb = "in maintenance" if kind == "maintenance" else "silenced"
    print(f"{what} {verb} until {local_time(made.get('ends_at'))} (id {made.get('id')}; "
          f"end it early: supervisorctl-mcp unsilence {made.get('id')})")
    return EXIT_OK


def cmd_silence(args: argparse.Namespace) -> int:
    from mcp_supervisor.cli.common import UsageError

    if bool(args.name) == bool(args.all):
        raise UsageError("silence: name one server or give --all, not both")
    return _post(args, "silence", "*" if args.all else args.name)


def cmd_maintenance(args: argparse.Namespace) -> int:
    return _post(args, "maintenance", args.name)


def cmd_silences(args: argparse.Namespace) -> int:
    from mcp_supervisor.cli.common import client_for, emit_json, local_time

    _, body = client_for(args).request("GET", "/v1/silences" + ("?all=1" if args.all else ""))
    items = body.get("silences") or []
    if args.json:
        emit_json(items)
        return EXIT_OK
    if not items:
        print("no active silences or maintenance windows")
        return EXIT_OK
    print(f"{'ID':<10} {'KIND':<12} {'SERVER':<20} {'UNTIL':<20} {'LEFT':<8} REASON")
    for s in items:
        server = "(all)" if s.get("server") == "*" else str(s.get("server"))
        left = _left(s.get("remaining_s")) if s.get("active") else "ended"
        print(f"{s.get('id')!s:<10} {s.get('kind')!s:<12} {server:<20} {local_time(s.get('ends_at')):<20} "
              f"{left:<8} {s.get('reason') or ''}")
    return EXIT_OK


def cmd_unsilence(args: argparse.Namespace) -> int:
    import urllib.parse

    from mcp_supervisor.cli.common import client_for, emit_json, local_time

    _, ended = client_for(args).request("DELETE", "/v1/silences/" + urllib.parse.quote(args.id, safe=""))
    if args.json:
        emit_json(ended)
    else:
        print(f"{ended.get('kind')} {ended.get('id')} ended at {local_time(ended.get('ended_at') or time.time())}")
    return EXIT_OK


def add_alert_subcommands(sub: Any) -> None:
    from mcp_supervisor.cli.common import command_adder

    add = command_adder(sub)

    silence = add("silence", cmd_silence, "stop messages about a server (or --all) for a while; still recorded")
    silence.add_argument("name", nargs="?", default=None, metavar="NAME", help="the server")
    silence.add_argument("--all", action="store_true", help="every server")
    maintenance = add("maintenance", cmd_maintenance,
                      "take a server out for a while: no healing, not required for ready, time counted as "
                      "maintenance (not downtime), no messages")
    maintenance.add_argument("name", metavar="NAME", help="the server")
    for parser in (silence, maintenance):
        parser.add_argument("--for", dest="duration", type=_duration, required=True, metavar="DURATION",
                            help="how long: 30m, 1h, 2d (it ends by itself)")
        parser.add_argument("--reason", default="", metavar="TEXT", help="why (shown in silences and history)")
    listing = add("silences", cmd_silences, "the active silences and maintenance windows")
    listing.add_argument("--all", action="store_true", help="also those that ended in the last week")
    unsilence = add("unsilence", cmd_unsilence, "end a silence or maintenance window early")
    unsilence.add_argument("id", metavar="ID", help="its id (from silences)")
