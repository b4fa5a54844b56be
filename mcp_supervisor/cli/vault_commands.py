"""``supervisorctl-mcp backup|backups|restore|verify|repair|key``: the vault, without the daemon.

Why these work directly on the vault files: backups matter most when things are broken, including
the daemon itself; a person with the key and the config can always list, verify and restore.
Output never contains file contents or secret values.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp_supervisor.vault.service import VaultService

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _vault(args: argparse.Namespace) -> VaultService:
    from mcp_supervisor.cli.common import load_cli_config
    from mcp_supervisor.vault.service import VaultService

    config = load_cli_config(args)
    source = getattr(args, "source", None)
    if source:  # restore --from LOCATION: that copy alone (a new host restoring from the remote)
        from mcp_supervisor.config.fleet import check_location
        from mcp_supervisor.vault.crypto import VaultError

        try:
            backup = config.backup.model_copy(update={"locations": [check_location(source)], "min_copies": 1})
        except ValueError as exc:
            raise VaultError(f"--from {source}: {exc}") from None
        config = config.model_copy(update={"backup": backup})
    return VaultService(config)


def print_failure(args: argparse.Namespace, message: str) -> None:
    if args.json:
        print(json.dumps({"ok": False, "error": message}))
    else:
        print(f"supervisorctl-mcp: {message}", file=sys.stderr)


def _run(args: argparse.Namespace, work: Callable[[VaultService], Coroutine[Any, Any, Any]]) -> tuple[int, Any]:
    from mcp_supervisor.vault.crypto import VaultError

    try:
        return EXIT_OK, asyncio.run(work(_vault(args)))
    except VaultError as exc:
        print_failure(args, str(exc))
        return EXIT_FAILED, None


def _through_daemon(args: argparse.Namespace, accept: bool) -> dict[str, Any] | None:
    """The daemon's answer to a backup when one runs with a vault, else None (then the CLI does it).

    Why: the daemon's watcher remembers what it last saw; a backup (above all ``--accept``) made
    beside it would not tell it that a removal was intended, and it would put the servers back.
    """
    from mcp_supervisor.api.client import ApiError, DaemonUnreachable, SupervisorClient
    from mcp_supervisor.cli.common import UsageError, socket_path

    try:
        client = SupervisorClient(socket_path(args), timeout=120.0)
        return client.request("POST", "/v1/backups", {"accept": accept})[1]
    except (DaemonUnreachable, UsageError):
        return None
    except ApiError as exc:
        if exc.status == 404:  # an older daemon, or one without a vault: do it here
            return None
        from mcp_supervisor.vault.crypto import VaultError

        raise VaultError(f"the daemon refused the backup: {exc.message}") from None


def cmd_backup(args: argparse.Namespace) -> int:
    from mcp_supervisor.vault.crypto import VaultError

    try:
        result = _through_daemon(args, args.accept)
    except VaultError as exc:
        print_failure(args, str(exc))
        return EXIT_FAILED
    if result is None:
        code, result = _run(args, lambda v: v.backup("manual (supervisorctl-mcp backup)", accept=args.accept))
        if result is None:
            return code
    if args.json:
        print(json.dumps(result))
    else:
        print(f"snapshot {result['snapshot']}: {_files_text(result['files'])} -> {len(result['copies'])} location(s)")
        for location, error in result["failed_locations"].items():
            print(f"  FAILED {location}: {error}")
        for name, problem in result["skipped"].items():
            print(f"  skipped {name}: {problem}")
        if not result["safe"]:
            print("  NOT SAFE: fewer copies than [backup] min_copies")
    return EXIT_OK if result["safe"] and not result["skipped"] else EXIT_FAILED


def cmd_backups(args: argparse.Namespace) -> int:
    code, snapshots = _run(args, lambda v: v.list_snapshots())
    if snapshots is None:
        return code
    if args.json:
        print(json.dumps({"snapshots": snapshots}))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table("snapshot", "age", "files", "copies", "reason")
    unreadable = 0
    for snap in snapshots:
        if not snap.get("readable", True):
            unreadable += 1
            table.add_row(snap["id"], "?", "CANNOT DECRYPT", "0", snap.get("problem", ""))
            continue
        files = _files_text([f["name"] for f in snap["files"]])
        copies = f"{snap['copies']}" + ("" if snap["safe"] else " (not safe)")
        table.add_row(snap["id"], _age(snap["age_s"]), files, copies, snap["reason"])
    Console().print(table)
    if unreadable:
        print(f"{unreadable} snapshot(s) cannot be decrypted with this key (damaged, or made with another key); "
              "see: supervisorctl-mcp verify")
    return EXIT_OK


def _restore_state(args: argparse.Namespace) -> int:
    groups = ["auth", "contracts"] if args.state == "all" else [args.state]
    code, result = _run(args, lambda v: v.restore_state(groups, args.snapshot))
    if result is None:
        return code
    if args.json:
        print(json.dumps(result))
        return EXIT_OK if result["ok"] else EXIT_FAILED
    for group in result["state"]:
        where = f"state_dir/{group['group']}/"
        if "error" in group:
            print(f"supervisorctl-mcp: {where}: {group['error']}", file=sys.stderr)
            continue
        print(f"{where} from snapshot {group['snapshot']}: restored {', '.join(group['restored']) or 'nothing'}")
        if group["kept_current"]:
            print(f"  kept (present and readable, newer than the backup): {', '.join(group['kept_current'])}; "
                  "name the snapshot (--snapshot ID) to replace them")
        for name, kept in group["kept_aside"].items():
            print(f"  the {name} it replaced is kept as {kept}")
    if any(group.get("restored") for group in result["state"]):
        print("a running daemon keeps the tokens and contracts it holds: restart it to use the restored ones")
    return EXIT_OK if result["ok"] else EXIT_FAILED


def _files_text(names: list[str]) -> str:
    """``cursor, secrets, auth/ (3 files), contracts/ (2 files)``: the daemon's state counted, not listed."""
    groups: dict[str, int] = {}
    plain = []
    for name in names:
        group, slash, _ = name.partition("/")
        if slash:
            groups[group] = groups.get(group, 0) + 1
        else:
            plain.append(name)
    return ", ".join(plain + [f"{g}/ ({n} file{'s' if n != 1 else ''})" for g, n in groups.items()])


def cmd_restore(args: argparse.Namespace) -> int:
    if (args.config_name is None) == (args.state is None) or (args.state and args.to):
        print("supervisorctl-mcp: restore needs a CONFIG name or --state auth|contracts|all (one of them; "
              "--to only with CONFIG)", file=sys.stderr)
        return EXIT_USAGE
    if args.state:
        return _restore_state(args)
    code, result = _run(args, lambda v: v.restore(args.config_name, args.snapshot, args.to))
    if result is None:
        return code
    if args.json:
        print(json.dumps(result))
    else:
        what = "server map of " if result["only_server_map"] else ""
        print(f"restored {what}{result['config']} to {result['path']} from snapshot {result['snapshot']}")
        if result["kept_aside"]:
            print(f"  the file it replaced is kept as {result['kept_aside']}")
    return EXIT_OK


def _report(args: argparse.Namespace, result: dict[str, Any], verb: str) -> int:
    if args.json:
        print(json.dumps(result))
    else:
        for line in result.get("repaired", []):
            print(f"repaired {line}")
        for line in result["bad"]:
            print(f"BAD {line}")
        print(f"{verb}: {'every copy is good' if result['ok'] else str(len(result['bad'])) + ' bad object(s)'}")
    return EXIT_OK if result["ok"] else EXIT_FAILED


def cmd_verify(args: argparse.Namespace) -> int:
    code, result = _run(args, lambda v: v.verify())
    return code if result is None else _report(args, result, "verify")


def cmd_repair(args: argparse.Namespace) -> int:
    code, result = _run(args, lambda v: v.repair())
    return code if result is None else _report(args, result, "repair")


def _passphrase(confirm: bool) -> str:
    env = os.environ.get("MCP_SUPERVISOR_KEY_PASSPHRASE")
    if env:
        return env
    first = getpass.getpass("passphrase: ")
    if confirm and getpass.getpass("again: ") != first:
        raise ValueError("the passphrases differ")
    if len(first) < 8:
        raise ValueError("use a passphrase of at least 8 characters")
    return first


def cmd_key(args: argparse.Namespace) -> int:
    from mcp_supervisor.vault.crypto import VaultError, export_key, import_key, load_key
    from mcp_supervisor.vault.fsutil import atomic_write

    vault = _vault(args)
    key_file = vault.settings.key_file
    target = Path(args.file)
    try:
        if args.key_action == "export":
            data = export_key(load_key(key_file, create=False), _passphrase(confirm=True))
            atomic_write(target, data, 0o600)
            print(f"key exported (passphrase-protected) to {target}; store it offline")
        else:
            key = import_key(target.read_bytes(), _passphrase(confirm=False))
            if os.path.lexists(key_file) and not args.force:
                raise VaultError(f"{key_file} exists; pass --force to replace it (the old key is kept beside it)")
            if os.path.lexists(key_file):  # kept under a new name: an earlier kept key is never overwritten
                from mcp_supervisor.vault.safefs import kept_name

                os.link(key_file, key_file.with_name(kept_name(key_file.name, "old")), follow_symlinks=False)
            atomic_write(key_file, key, 0o600)
            print(f"key imported into {key_file}")
    except (VaultError, ValueError, OSError) as exc:
        print(f"supervisorctl-mcp: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def add_vault_subcommands(sub: Any) -> None:
    from mcp_supervisor.cli.common import command_adder

    add = command_adder(sub)

    add("backup", cmd_backup, "back up every watched config now (to every location)").add_argument(
        "--accept",
        action="store_true",
        help="servers removed from a client config were removed on purpose (the daemon keeps them removed)",
    )
    add("backups", cmd_backups, "list snapshots with age, files and copies")
    restore = add("restore", cmd_restore, "restore a watched config, or the daemon's token store / tool contracts "
                  "(--state), from the newest valid (or the given) snapshot")
    restore.add_argument("config_name", metavar="CONFIG", nargs="?", default=None)
    restore.add_argument("--state", choices=["auth", "contracts", "all"], default=None,
                         help="restore state_dir/auth (OAuth tokens, client registrations) and/or state_dir/contracts "
                              "(accepted tool contracts): missing or damaged files only, unless --snapshot is named")
    restore.add_argument("--snapshot", metavar="ID", default=None)
    restore.add_argument("--to", metavar="PATH", default=None, help="write there instead of the watched path")
    restore.add_argument("--from", dest="source", metavar="LOCATION", default=None,
                         help="read only this location (a folder, sftp://user@host:port/path or rclone:REMOTE:path), "
                              "e.g. on a new host restoring from the off-host copy")
    add("verify", cmd_verify, "decrypt and check every object in every location")
    add("repair", cmd_repair, "copy good objects over missing or corrupt ones from another location")
    key = add("key", cmd_key, "export or import the vault key (passphrase-protected, for an offline copy)")
    key.add_argument("key_action", choices=["export", "import"])
    key.add_argument("file", metavar="FILE")
    key.add_argument("--force", action="store_true", help="import: replace an existing key file")
