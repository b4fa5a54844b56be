"""What every ``supervisorctl-mcp`` command module shares: exit codes, the socket, the config,
the client, JSON output, the common options.

Why a module below ``cli/main.py``: main builds the parser and loads the plug-in command modules
(``cli/*_commands.py``) by name; if they imported main back for these pieces, main and every
plug-in would be one import circle. Like main, it keeps the CLI's start cheap: pydantic (the
config), rich and ``http.client`` load only inside the functions that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from mcp_supervisor.api.client import SupervisorClient

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing costs every call a few ms
if TYPE_CHECKING:
    from typing import Any

    from mcp_supervisor.config import Config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad invocation discovered after parsing (e.g. an unreadable --config); exit 2."""


def socket_path(args: argparse.Namespace) -> Path:
    """``--socket``, else ``MCP_SUPERVISOR_SOCKET``, else the config's socket, else the default."""
    if getattr(args, "socket", None):
        return Path(os.path.expanduser(args.socket))
    env = os.environ.get("MCP_SUPERVISOR_SOCKET")
    if env:
        return Path(os.path.expanduser(env))
    from mcp_supervisor.config import ConfigError, find_config, load_config, resolve_socket_path

    path = find_config(getattr(args, "config", None))
    config = None
    if path is not None:
        try:
            config = load_config(path)
        except ConfigError as exc:
            if getattr(args, "config", None):
                raise UsageError(f"{exc}\n(the socket path is read from this config; or pass --socket PATH)") from None
            # an unusable default config must not stop `ready` from finding a running daemon
    if config is not None:
        from mcp_supervisor.redact import REDACTOR, collect_secrets

        REDACTOR.update(collect_secrets(config))  # what this command prints is masked (main())
    return resolve_socket_path(None, config)


def load_cli_config(args: argparse.Namespace, explicit: str | None = None) -> Config:
    """The config a command works on (``explicit``, ``--config``, ``MCP_SUPERVISOR_CONFIG``, the
    defaults), with logging quieted and the redactor loaded; a usage error naming the fix if none."""
    from mcp_supervisor.config import ConfigError, find_config, load_config

    path = find_config(explicit or getattr(args, "config", None))
    if path is None:
        raise UsageError("no config file found; pass --config FILE or set MCP_SUPERVISOR_CONFIG")
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    from mcp_supervisor.logging import collect_secrets, setup_logging

    setup_logging("error", "console", collect_secrets(config))  # the CLI reports; logs stay quiet
    return config


def client_for(args: argparse.Namespace, timeout: float = 10.0) -> SupervisorClient:
    return SupervisorClient(socket_path(args), timeout=timeout)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=None if not sys.stdout.isatty() else 2, default=str) + "\n")


def print_error(args: argparse.Namespace, code: str, message: str) -> None:
    if args.json:
        emit_json({"error": {"code": code, "message": message}})
    else:
        print(f"supervisorctl-mcp: {message}", file=sys.stderr)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, sized as argparse sizes it, without importing ``shutil`` (and bz2 and
    lzma with it) on every call: argparse builds a formatter for each ``add_argument``."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


def _columns() -> int:
    """``shutil.get_terminal_size().columns``: $COLUMNS, else the terminal's width, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def common_options(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command; after it they must not reset what came before."""
    default: Any = argparse.SUPPRESS if suppress else None
    common = argparse.ArgumentParser(add_help=False, formatter_class=HelpFormatter)
    common.add_argument("--config", metavar="FILE", default=default, help="config file (for the socket path)")
    common.add_argument("--socket", metavar="PATH", default=default, help="control socket of the daemon")
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS if suppress else False, help="machine-readable output"
    )
    return common


def command_adder(sub: Any) -> Callable[[str, Handler, str], argparse.ArgumentParser]:
    """``add(name, handler, text)`` for a plug-in's subcommands: each takes the common options
    after its name and runs ``handler``. One helper so every plug-in's commands parse alike."""
    after = common_options(suppress=True)

    def add(name: str, handler: Handler, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, parents=[after], help=text, description=text)
        parser.set_defaults(func=handler)
        return parser

    return add


def seconds_arg(maximum: float) -> Callable[[str], float]:
    """An argparse ``type`` for ``--wait``: seconds from 0 to ``maximum``, else a usage error
    naming the range (``ready`` and ``run`` differ only in their maximum)."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
        if not (0 <= value <= maximum):
            raise argparse.ArgumentTypeError(f"--wait takes 0 to {maximum:g} seconds")
        return value

    return parse


def local_time(ts: Any) -> str:
    """A Unix time as the operator's local ``YYYY-MM-DD HH:MM:SS``; ``-`` when there is none."""
    if not isinstance(ts, int | float):
        return "-"
    from datetime import datetime

    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
