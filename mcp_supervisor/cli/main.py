"""``supervisorctl-mcp``: talk to the running supervisor over its control socket.

Exit codes (scripts depend on them): 0 ok/ready, 1 not ready or failed, 2 usage, 3 daemon
unreachable. Why the imports are inside functions: ``ready`` runs before every job and scripts
poll it, so it should cost little more than the interpreter's own start: it loads neither pydantic
(the config), rich (tables), asyncio nor ``http.client`` unless needed. Plug-in command modules
(``PLUGINS``) are imported only when the command line may name one of their commands: a built-in
command never pays for them (``python -X importtime supervisorctl-mcp ready`` shows what loads).
The pieces every command module shares (exit codes, the socket, the config, the client, the common
options) live in ``cli/common.py``: a plug-in imports them from there, never from this module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mcp_supervisor.api.client import ApiError, DaemonUnreachable
from mcp_supervisor.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Handler,
    HelpFormatter,
    UsageError,
    client_for,
    common_options,
    emit_json,
    print_error,
    seconds_arg,
)

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing costs every call a few ms
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

PLUGINS: tuple[tuple[str, str], ...] = (
    ("mcp_supervisor.cli.vault_commands", "add_vault_subcommands"),
    ("mcp_supervisor.cli.history_commands", "add_history_subcommands"),
    ("mcp_supervisor.cli.run_command", "add_run_subcommand"),
    ("mcp_supervisor.cli.notify_commands", "add_notify_subcommands"),
    ("mcp_supervisor.cli.import_commands", "add_import_subcommands"),
    ("mcp_supervisor.cli.alert_commands", "add_alert_subcommands"),
    ("mcp_supervisor.cli.proxy_commands", "add_proxy_subcommands"),
    ("mcp_supervisor.cli.contract_commands", "add_contract_subcommands"),
    ("mcp_supervisor.cli.login_commands", "add_login_subcommands"),
)
"""(module, function) of each plug-in command module: ``function(sub)`` adds its subparsers.

Add yours here (a ``cli/<x>_commands.py`` with ``add_<x>_subcommands(sub)``, importing what it
shares from ``cli/common.py``, never from this module); it is loaded for
``--help`` and for any command that is not built in, never for ``ready`` or ``status``."""

BUILTIN_COMMANDS = frozenset(
    {"status", "ready", "probe", "recover", "pause", "resume", "emergency", "reload", "events", "check-config"}
)
_VALUE_OPTIONS = ("--config", "--socket")


# --- commands -----------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    status = client_for(args).status()
    if args.json:
        emit_json(status)
        return EXIT_OK
    from mcp_supervisor.cli.render import status_table, wants_colour

    print(status_table(status, colour=wants_colour(sys.stdout)))
    return EXIT_OK


def cmd_ready(args: argparse.Namespace) -> int:
    servers: list[str] = []
    for item in args.server or []:
        servers.extend(n.strip() for n in item.split(",") if n.strip())
    try:
        client = client_for(args)
        if args.wait:
            answer = client.ready_within(args.wait, servers or None)
        else:
            answer = client.ready(servers or None)
    except DaemonUnreachable as exc:
        if args.json:
            emit_json({"ready": False, "not_ready": [], "error": {"code": "unreachable", "message": str(exc)}})
        else:
            print(f"not ready: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.json:
        emit_json(answer)
    else:
        from mcp_supervisor.cli.render import ready_line

        print(ready_line(answer))
    return EXIT_OK if answer.get("ready") else EXIT_FAILED


def _action(verb: str) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        client = client_for(args, timeout=30.0)
        if verb == "emergency":
            answer = client.emergency(args.name)
        elif verb == "reload":
            answer = client.reload()
        else:
            answer = getattr(client, verb)(args.name)
        failed = (verb == "reload" and not answer.get("ok", True)) or (
            verb == "probe" and not (answer.get("result") or {}).get("ok", False)
        )
        if args.json:
            emit_json(answer)
        else:
            from mcp_supervisor.cli.render import action_line

            print(action_line(verb, answer), file=sys.stderr if failed and verb == "reload" else sys.stdout)
        return EXIT_FAILED if failed else EXIT_OK

    return handler


def cmd_events(args: argparse.Namespace) -> int:
    from mcp_supervisor.cli.render import event_line

    client = client_for(args)
    try:
        for event in client.events(timeout=None):
            print(json.dumps(event, default=str) if args.json else event_line(event), flush=True)
    except KeyboardInterrupt:
        return EXIT_OK
    print_error(args, "closed", "the supervisor closed the event stream (it is stopping or restarting)")
    return EXIT_FAILED


def cmd_check_config(args: argparse.Namespace) -> int:
    from mcp_supervisor.config import ConfigError, find_config, load_config

    path = find_config(args.file or args.config)
    if path is None:
        message = "no config file found; pass FILE, --config FILE or set MCP_SUPERVISOR_CONFIG"
        if args.json:
            emit_json({"valid": False, "path": None, "problems": [message]})
        else:
            print(f"supervisorctl-mcp: {message}", file=sys.stderr)
        return EXIT_FAILED
    try:
        config = load_config(path)
    except ConfigError as exc:
        if args.json:
            emit_json({"valid": False, "path": str(exc.path), "problems": exc.problems})
        else:
            print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    servers = len(config.servers)
    watched = len(getattr(config, "configs", []) or [])
    import contextlib
    import tomllib

    from mcp_supervisor.notify.checks import inline_secret_warnings
    from mcp_supervisor.spawn.checks import spawn_warnings

    warnings: list[str] = []
    with contextlib.suppress(OSError, ValueError):
        warnings = inline_secret_warnings(tomllib.loads(path.read_text(encoding="utf-8")))
    warnings += spawn_warnings(config)
    effective = _effective_defaults(path, config)
    if args.json:
        emit_json({"valid": True, "path": str(path), "servers": servers, "watched_configs": watched,
                   "warnings": warnings, "defaults": effective})
    else:
        from mcp_supervisor.cli.render import defaults_lines

        print(f"{path}: ok ({servers} server(s), {watched} watched config(s))")
        for line in defaults_lines(effective):
            print(line)
        for warning in warnings:
            print(f"warning: {path}: {warning}", file=sys.stderr)
    return EXIT_OK


def _effective_defaults(path: Path, config: Any) -> dict[str, Any]:
    """Each ``[defaults]`` key's effective value per server (its own, the default, or n/a)."""
    import tomllib

    from mcp_supervisor.config.defaults import effective_defaults

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    defaults = raw.get("defaults")
    if not isinstance(defaults, dict):
        return {}
    explicit = [s for s in raw.get("servers", []) if isinstance(s, dict)]
    named = {s.get("name") for s in explicit}
    imported = [{"name": s.name, "transport": s.transport, "managed": s.managed}  # servers_from: no own keys
                for s in config.servers if s.name not in named]
    return effective_defaults(defaults, explicit + imported)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from mcp_supervisor.cli.dashboard import cmd_dashboard as run_dashboard  # textual loads only here

    return run_dashboard(args)


# --- the parser ---------------------------------------------------------------------------------


def command_word(argv: list[str]) -> str | None:
    """The COMMAND in ``argv`` (skipping the global options and their values), or None."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--":
            return None
        elif word.startswith("-"):
            name = word.split("=", 1)[0]
            skip = "=" not in word and len(name) > 2 and any(o.startswith(name) for o in _VALUE_OPTIONS)
        else:
            return word
    return None


def _add_plugins(sub: Any) -> None:
    import importlib

    for module_name, function in PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        getattr(module, function)(sub)


class _Unused:
    """Stands in for a built-in command's parser that this call does not need (see build_parser)."""

    def add_argument(self, *args: object, **kwargs: object) -> None:
        return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser. Given the ``argv`` of a built-in command, only that command's subparser is
    built (each costs ~0.2 ms, most of it argparse's gettext lookups) and no plug-in is loaded."""
    word = command_word(argv) if argv is not None else None
    only = word if word in BUILTIN_COMMANDS else None
    parser = argparse.ArgumentParser(
        prog="supervisorctl-mcp",
        parents=[common_options(suppress=False)],
        formatter_class=HelpFormatter,
        description="Control the MCP supervisor over its Unix socket.",
        epilog="exit codes: 0 ok/ready, 1 not ready or failed, 2 usage, 3 daemon unreachable",
    )
    after = common_options(suppress=True)
    # prog given: argparse would otherwise format a usage line (and import shutil, bz2, lzma) to make it
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog=parser.prog)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser | _Unused:
        if only is not None and name != only:
            return _Unused()
        command = sub.add_parser(name, parents=[after], help=help_text, description=help_text,
                                 formatter_class=HelpFormatter)
        command.set_defaults(func=handler)
        return command

    add("status", cmd_status, "every server's state, since when, last latency and last error")
    ready = add("ready", cmd_ready, "exit 0 when the critical (or the named) servers are ready, 1 when not")
    ready.add_argument("--wait", type=seconds_arg(300), default=None, metavar="S", help="wait up to S seconds (max 300), also for a daemon that is still starting")
    ready.add_argument("--server", action="append", metavar="NAME", help="only these servers (repeatable)")
    for verb, text in (
        ("probe", "probe a server now and print the result"),
        ("recover", "start the recovery ladder for a server now"),
        ("pause", "stop probing and recovering a server (e.g. for maintenance)"),
        ("resume", "resume a paused server"),
    ):
        add(verb, _action(verb), text).add_argument("name", metavar="NAME")
    add("emergency", _action("emergency"), "switch one server (or all) to fallback mode").add_argument(
        "name", metavar="NAME", nargs="?", default=None
    )
    add("reload", _action("reload"), "reload the daemon's config (an invalid one is rejected)")
    add("events", cmd_events, "follow the daemon's events (Ctrl-C to stop)")
    dashboard = add("dashboard", cmd_dashboard, "a live terminal view: states, uptime, events, alerts (r, p, q)")
    dashboard.add_argument("--refresh", type=float, default=5.0, metavar="S", help="status re-read interval (s)")
    check = add("check-config", cmd_check_config, "validate a config file without starting anything")
    check.add_argument("file", metavar="FILE", nargs="?", default=None)

    if only is None:
        _add_plugins(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    # vault_commands (and any later module) register handlers the same way: func(args) -> int
    handler: Handler | None = getattr(args, "func", None) or getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        print("supervisorctl-mcp: error: a COMMAND is required (see --help)", file=sys.stderr)
        return EXIT_USAGE
    from mcp_supervisor.redact import RedactingStream

    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(stdout), RedactingStream(stderr)
    try:
        return _run(handler, args)
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def _run(handler: Handler, args: argparse.Namespace) -> int:
    try:
        return int(handler(args) or 0)
    except UsageError as exc:
        print_error(args, "usage", str(exc))
        return EXIT_USAGE
    except DaemonUnreachable as exc:
        print_error(args, "unreachable", str(exc))
        return EXIT_UNREACHABLE
    except ApiError as exc:
        print_error(args, exc.code, f"{exc.message} ({exc.status})")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `supervisorctl-mcp events | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
