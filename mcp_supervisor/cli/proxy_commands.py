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
    from mcp_supervisor.cli.common import socket_path
    from mcp_supervisor.proxy.bridge import bridge_stdio

    return asyncio.run(bridge_stdio(socket_path(args), args.name))


def add_proxy_subcommands(sub: Any) -> None:
    from mcp_supervisor.cli.common import common_options

    text = "speak MCP on stdin/stdout as the daemon's session-preserving proxy for server NAME"
    parser: argparse.ArgumentParser = sub.add_parser("proxy", parents=[common_options(suppress=True)], help=text,
                                                     description=text)
    parser.add_argument("name", metavar="NAME")
    parser.set_defaults(func=cmd_proxy)


def cmd_import_proxy(args: argparse.Namespace) -> int:
    """``import --via-proxy`` / ``--undo-proxy`` (the flags live on ``import``)."""
    import json
    import os
    import sys
    from pathlib import Path

    from mcp_supervisor.api.client import SupervisorClient
    from mcp_supervisor.cli.common import load_cli_config, socket_path
    from mcp_supervisor.guard.precheck import take_backup
    from mcp_supervisor.importer.discover import known_locations
    from mcp_supervisor.proxy import client_rewrite as cr

    config = load_cli_config(args)
    state_dir = Path(config.state_dir)
    home = Path(os.path.expanduser(args.home)) if args.home else Path.home()
    project = Path(args.project).resolve() if args.project else Path.cwd()
    paths = [Path(p).expanduser() for p in args.paths] or [p for _c, p in known_locations(home, project)]
    followed = {c.path.resolve() for c in config.configs if c.name in config.servers_from}
    sock = str(socket_path(args))
    command = str(Path(sys.executable).parent / "supervisorctl-mcp")
    backup = {"taken": False, "reason": "dry run"}
    if not args.dry_run:
        backup = take_backup(SupervisorClient(sock, timeout=10.0))
    report: list[dict[str, Any]] = []
    for path in paths:
        entry: dict[str, Any] = {"path": str(path)}
        report.append(entry)
        try:
            if path.resolve() in followed:
                raise cr.RewriteError(f"{path}: the supervisor reads its servers from this file (servers_from); "
                                      "pointing it at the proxy would make the supervisor proxy itself")
            data = cr.load_json(path)
            if args.undo_proxy:
                kept_at = cr.originals_path(state_dir, path)
                kept = json.loads(kept_at.read_text(encoding="utf-8")) if kept_at.exists() else {"originals": {}}
                new, done = cr.undo_proxy(data, kept["originals"])
                entry["restored"] = done
                if done and not args.dry_run:
                    cr.rewrite_file(path, new)
                    kept_at.unlink()
            else:
                new, originals, skipped = cr.via_proxy(data, [s.name for s in config.servers], command, sock)
                entry["proxied"] = sorted(n for entries in originals.values() for n in entries)
                entry["not_supervised"] = skipped
                if originals and not args.dry_run:
                    entry["originals"] = str(cr.save_originals(state_dir, path, originals))
                    cr.rewrite_file(path, new)
        except (cr.RewriteError, OSError, ValueError) as exc:
            entry["error"] = str(exc)
    failed = any("error" in e for e in report)
    if args.json:
        print(json.dumps({"backup": backup, "files": report}, indent=2))
        return 1 if failed else 0
    verb = "restored" if args.undo_proxy else "proxied"
    for entry in report:
        if "error" in entry:
            print(f"  {entry['error']}", file=sys.stderr)
            continue
        names = entry.get(verb) or []
        print(f"{entry['path']}: {verb} {', '.join(names) or 'nothing'}" + (" (dry run)" if args.dry_run else ""))
        if entry.get("not_supervised"):
            print(f"  left as they are (not supervised): {', '.join(entry['not_supervised'])}")
    if not args.dry_run:
        print(f"backup before the change: {backup.get('snapshot') or backup.get('reason')}")
    return 1 if failed else 0
