"""``supervisorctl-mcp import``: the user's MCP client configs -> a supervisor config.

Why import instead of asking the user to describe their servers again: they are already described
in the clients' own files, and two copies drift. The generated file watches each client file too
(``[[configs]]``), so a client that damages its own config gets it back.

All or nothing: every file is read and checked before anything is written, and a malformed one
stops the import with its path and reason (exit 1), writing nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def cmd_import(args: argparse.Namespace) -> int:
    if args.via_proxy or args.undo_proxy:  # point the client files at the proxy (cli/proxy_commands.py)
        from mcp_supervisor.cli.proxy_commands import cmd_import_proxy

        return cmd_import_proxy(args)
    from mcp_supervisor.importer.clients import ClientConfigError, ImportResult, parse_client_config
    from mcp_supervisor.importer.discover import known_locations
    from mcp_supervisor.importer.render import render_config

    home = Path(os.path.expanduser(args.home)) if args.home else Path.home()
    project = Path(args.project).resolve() if args.project else Path.cwd()
    if args.paths:
        sources: list[tuple[str | None, Path]] = [(None, Path(p).expanduser()) for p in args.paths]
    else:
        sources = [(client, path) for client, path in known_locations(home, project)]
    if not sources:
        return _fail(args, "no MCP client config found (looked for Cursor, Claude Desktop, Claude Code, VS Code "
                           f"and Windsurf configs under {home} and {project}); pass the file paths to import")
    results: list[ImportResult] = []
    used: dict[str, str] = {}
    for client, path in sources:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return _fail(args, f"{path}: no such file")
        except (OSError, UnicodeDecodeError) as exc:
            return _fail(args, f"{path}: cannot read it: {exc}")
        try:
            results.append(parse_client_config(text, path.resolve(), client, used_variables=used))
        except ClientConfigError as exc:
            return _fail(args, f"{exc} (nothing was written)")
    text = render_config(results, state_dir=args.state_dir, backup_location=args.backup_location,
                         key_file=args.key_file, home=home)
    problem = _check_generated(text, args.output)
    if problem:
        return _fail(args, f"the generated config does not load ({problem}); nothing was written. "
                           "Please report this with the client file's shape (not its secrets).")
    written = None
    if not args.dry_run:
        if not args.output:
            return _fail(args, "pass --output FILE to write the config, or --dry-run to print it", code=EXIT_USAGE)
        output = Path(args.output).expanduser()
        if output.exists() and not args.force:
            return _fail(args, f"{output} exists; pass --force to replace it (the old file is kept as "
                               f"{output.name}.bak) or choose another --output")
        _write_atomically(output, text)
        written = str(output)
    variables = [{"variable": s.variable, "where": s.where} for r in results for s in r.secrets]
    notes = [n for r in results for n in r.notes]
    summary: dict[str, Any] = {
        "written": written,
        "sources": [{"path": str(r.path), "client": r.client, "servers": [s.name for s in r.servers]} for r in results],
        "variables_to_set": variables,
        "notes": notes,
    }
    if args.json:
        if args.dry_run:
            summary["config"] = text
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    if args.dry_run:
        sys.stdout.write(text)
    out = sys.stderr if args.dry_run else sys.stdout
    servers = sum(len(r.servers) for r in results)
    print(f"imported {servers} server(s) from {len(results)} client config(s)"
          + (f" into {written}" if written else " (dry run: nothing written)"), file=out)
    for secret in variables:
        print(f"  set {secret['variable']} in the supervisor's environment ({secret['where']})", file=out)
    for note in notes:
        print(f"  note: {note}", file=out)
    if written:
        print(f"  check it: supervisorctl-mcp check-config {written}", file=out)
    return EXIT_OK


def _fail(args: argparse.Namespace, message: str, code: int = EXIT_FAILED) -> int:
    if args.json:
        print(json.dumps({"error": {"code": "import", "message": message}}))
    else:
        print(f"supervisorctl-mcp import: {message}", file=sys.stderr)
    return code


def _check_generated(text: str, output: str | None) -> str | None:
    """Load the TOML as the daemon would (variables may be unset: they become per-server problems)."""
    from mcp_supervisor.config import ConfigError, parse_config

    source = Path(output).expanduser() if output else Path.cwd() / "imported.toml"
    try:
        parse_config(text, source)
    except ConfigError as exc:
        return "; ".join(exc.problems) or str(exc)
    return None


def _write_atomically(path: Path, text: str) -> None:
    """temp + fsync + rename: an interrupted import never leaves half a config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.import-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            backup = path.with_name(path.name + ".bak")
            os.replace(path, backup)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def add_import_subcommands(sub: Any) -> None:
    from mcp_supervisor.cli.common import command_adder

    add = command_adder(sub)

    parser = add("import", cmd_import,
                 "write a supervisor config from the MCP clients' configs (Cursor, Claude, VS Code, Windsurf)")
    parser.add_argument("paths", metavar="PATH", nargs="*", help="client config files (default: find them)")
    parser.add_argument("--dry-run", action="store_true", help="print the config instead of writing it")
    parser.add_argument("--output", "-o", metavar="FILE", default=None, help="where to write the config")
    parser.add_argument("--force", action="store_true", help="replace an existing --output (kept as FILE.bak)")
    parser.add_argument("--home", metavar="DIR", default=None, help="look for user configs here (default: ~)")
    parser.add_argument("--project", metavar="DIR", default=None, help="look for project configs here (default: .)")
    parser.add_argument("--state-dir", default="~/.local/state/mcp-supervisor", help="state_dir to write")
    parser.add_argument("--backup-location", default="~/.local/state/mcp-supervisor/backups",
                        help="backup location to write")
    parser.add_argument("--key-file", default="~/.config/mcp-supervisor/vault.key", help="vault key file to write")
    proxy = parser.add_mutually_exclusive_group()
    proxy.add_argument("--via-proxy", action="store_true", help="instead: point the client files' supervised servers "
                       "at the proxy (supervisorctl-mcp proxy NAME), after a vault backup")
    proxy.add_argument("--undo-proxy", action="store_true", help="instead: put back the entries --via-proxy replaced")
