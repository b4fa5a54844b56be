"""``supervisorctl-mcp notify-test``: one test message through every configured channel.

Why without the daemon: the point is to check the channel setup (secret set? webhook alive? bot in
the channel?) before relying on it, also when the daemon is not running. Each channel's answer is
printed as the receiver gave it (``ok (200)``, ``404: no_service``, ``channel_not_found``), masked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp_supervisor.config import Config

EXIT_OK, EXIT_FAILED = 0, 1


def channels_config(args: argparse.Namespace) -> Config:
    """The config whose channels to use (``FILE``, ``--config`` or the default); a usage error if none."""
    from mcp_supervisor.cli.common import load_cli_config

    return load_cli_config(args, getattr(args, "file", None))


def print_answers(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """Each channel's answer as the receiver gave it; exit 0 only when every channel took it."""
    channels = result["channels"]
    if args.json:
        print(json.dumps(result))
    else:
        for name, answer in channels.items():
            print(f"{name}: {'sent' if answer['ok'] else 'FAILED'}, the receiver answered: {answer['answer']}")
    return EXIT_OK if channels and all(a["ok"] for a in channels.values()) else EXIT_FAILED


def cmd_notify_test(args: argparse.Namespace) -> int:
    from mcp_supervisor.notify.sending import send_test, targets

    config = channels_config(args)
    if not targets(config):
        result: dict[str, Any] = {"channels": {}}
        message = "no notification channel configured (add [notify.slack] or [notify.apprise]; see docs/configuration.md)"
        if args.json:
            print(json.dumps({**result, "error": message}))
        else:
            print(f"supervisorctl-mcp: {message}", file=sys.stderr)
        return EXIT_FAILED
    return print_answers(args, asyncio.run(send_test(config)))


def add_notify_subcommands(sub: Any) -> None:
    from mcp_supervisor.cli.common import common_options

    command = sub.add_parser(
        "notify-test", parents=[common_options(suppress=True)],
        help="send one test message through every configured channel and print each answer",
        description="Send one test message through every configured notification channel (Slack, apprise).",
    )
    command.add_argument("file", metavar="FILE", nargs="?", default=None, help="config file (default: as the daemon)")
    command.set_defaults(func=cmd_notify_test)
