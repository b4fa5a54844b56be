"""``supervisorctl-mcp tools NAME | accept-tools NAME [--yes]``: see and accept a tool contract change.

Why a person confirms: a changed description can carry new instructions for the model (the "rug
pull") and a changed schema breaks the job's calls; with ``pin_tools`` the server stays
``drifted`` (not ready) until someone looked. ``accept-tools`` shows the diff and asks; ``--yes``
accepts without asking (scripts). Both are one request on the control socket.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any

EXIT_OK, EXIT_FAILED = 0, 1


def _path(name: str, tail: str) -> str:
    return f"/v1/servers/{urllib.parse.quote(name, safe='')}/{tail}"


def _print_change(answer: dict[str, Any]) -> None:
    lines = answer.get("lines") or []
    versions = f"{answer.get('before') or 'unknown version'} -> {answer.get('after') or 'unknown version'}"
    if not lines:
        print(f"{answer.get('server')}: the tools match the accepted contract ({len(answer.get('tools') or [])} tools)")
        return
    print(f"{answer.get('server')}: tools changed since the accepted contract ({versions}):")
    for line in lines:
        print(f"  {line}")


def cmd_tools(args: argparse.Namespace) -> int:
    from mcp_supervisor.cli.common import client_for, emit_json

    _, answer = client_for(args).request("GET", _path(args.name, "tools"))
    if args.json:
        emit_json(answer)
    else:
        _print_change(answer)
        if answer.get("drifted"):
            print(f"{args.name} is drifted (not ready): supervisorctl-mcp accept-tools {args.name}")
    return EXIT_OK


def cmd_accept_tools(args: argparse.Namespace) -> int:
    from mcp_supervisor.cli.common import client_for, emit_json

    client = client_for(args)
    _, pending = client.request("GET", _path(args.name, "tools"))
    if not args.json:
        _print_change(pending)
    if not args.yes:
        if not sys.stdin.isatty():
            print("accept-tools: not a terminal; give --yes to accept without asking", file=sys.stderr)
            return EXIT_FAILED
        if input("Accept this contract? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not accepted")
            return EXIT_FAILED
    _, answer = client.request("POST", _path(args.name, "accept-tools"), {})
    if args.json:
        emit_json(answer)
    else:
        print(f"accepted: {args.name} is {answer.get('state')}")
    return EXIT_OK


def add_contract_subcommands(sub: Any) -> None:
    from mcp_supervisor.cli.common import common_options

    after = common_options(suppress=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, parents=[after], help=text, description=text)
        parser.set_defaults(func=handler)
        parser.add_argument("name", metavar="NAME", help="the server")
        return parser

    add("tools", cmd_tools, "what changed in a server's tools since its accepted contract")
    accept = add("accept-tools", cmd_accept_tools,
                 "pin a server's tools as they are now (shows the change and asks); a drifted server is ready again")
    accept.add_argument("--yes", action="store_true", help="accept without asking (scripts)")
