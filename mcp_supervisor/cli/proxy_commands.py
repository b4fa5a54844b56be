"""``supervisorctl-mcp proxy NAME``: a stdio MCP server that is the daemon's proxy for NAME.

Why a command: clients that can only spawn commands (Claude Desktop, many IDEs) get the proxy's
session preservation too. Point the client's ``command`` at ``supervisorctl-mcp`` with
``args = ["proxy", "NAME"]``; the control socket's uid/gid rule decides who may use it.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


def cmd_proxy(args: argparse.Namespace) -> int:
    from mcp_supervisor.cli.main import socket_path
    from mcp_supervisor.proxy.bridge import bridge_stdio

    return asyncio.run(bridge_stdio(socket_path(args), args.name))


def add_proxy_subcommands(sub: Any) -> None:
    from mcp_supervisor.cli.main import _common

    text = "speak MCP on stdin/stdout as the daemon's session-preserving proxy for server NAME"
    parser: argparse.ArgumentParser = sub.add_parser("proxy", parents=[_common(suppress=True)], help=text,
                                                     description=text)
    parser.add_argument("name", metavar="NAME")
    parser.set_defaults(func=cmd_proxy)
