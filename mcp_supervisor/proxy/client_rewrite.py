"""``import --via-proxy`` / ``--undo-proxy``: point an MCP client's config at the proxy, and back.

Why the stdio bridge form (``supervisorctl-mcp proxy NAME``) for every entry, HTTP ones too: every
client can spawn a command, and the bridge needs no token, so no secret is written into a file the
client (and its sync, its backups) owns. Why the originals are kept in the state directory and
not in the client's file: clients refuse or drop keys they do not know; ``--undo-proxy`` puts
back exactly the entries that were replaced, and only while they still are the proxy's.

The transform is pure; ``rewrite_file`` is the one write: same directory, temp created with
``O_EXCL|O_NOFOLLOW``, fsync, rename, the file's mode kept; nothing written when nothing changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MAPS = ("mcpServers", "servers")
"""The server maps of Cursor, Claude Desktop, Claude Code, Windsurf (``mcpServers``) and VS Code (``servers``)."""


class RewriteError(Exception):
    """The file cannot be rewritten safely; the message names it and the fix."""


def is_proxied(entry: Any, name: str) -> bool:
    if not isinstance(entry, dict):
        return False
    args = entry.get("args")
    return (str(entry.get("command", "")).endswith("supervisorctl-mcp") and isinstance(args, list)
            and args[-2:] == ["proxy", name])


def bridge_entry(name: str, command: str, socket: str | None, vscode: bool) -> dict[str, Any]:
    args = (["--socket", socket] if socket else []) + ["proxy", name]
    entry: dict[str, Any] = {"command": command, "args": args}
    if vscode:
        entry = {"type": "stdio", **entry}
    return entry


def via_proxy(data: dict[str, Any], supervised: Iterable[str], command: str,
              socket: str | None) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[str]]:
    """(new data, the replaced entries per map, names left alone because not supervised)."""
    names = set(supervised)
    new = dict(data)
    originals: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for key in MAPS:
        servers = data.get(key)
        if not isinstance(servers, dict):
            continue
        replaced = dict(servers)
        for name, entry in servers.items():
            if is_proxied(entry, name):
                continue
            if name not in names:
                skipped.append(name)
                continue
            originals.setdefault(key, {})[name] = entry
            replaced[name] = bridge_entry(name, command, socket, vscode=key == "servers")
        new[key] = replaced
    return new, originals, skipped


def undo_proxy(data: dict[str, Any], originals: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """(new data, names restored); an entry someone changed since is left as it is."""
    new = dict(data)
    restored: list[str] = []
    for key, entries in originals.items():
        servers = data.get(key)
        if not isinstance(servers, dict):
            continue
        changed = dict(servers)
        for name, entry in entries.items():
            if is_proxied(servers.get(name), name):
                changed[name] = entry
                restored.append(name)
        new[key] = changed
    return new, restored


def originals_path(state_dir: Path, client_file: Path) -> Path:
    digest = hashlib.sha256(str(client_file.resolve()).encode()).hexdigest()[:16]
    return state_dir / "proxy-originals" / f"{digest}.json"


def load_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RewriteError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise RewriteError(f"{path}: not plain JSON (comments or trailing commas?); rewriting it would lose "
                           "them: change its entries by hand to command \"supervisorctl-mcp\", args [\"proxy\", "
                           "NAME]") from None
    if not isinstance(data, dict):
        raise RewriteError(f"{path}: the top level is not a JSON object")
    return data


def rewrite_file(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path``'s content atomically, keeping its mode (and owner, when allowed)."""
    info = os.stat(path, follow_symlinks=False)
    if not os.path.isfile(path) or os.path.islink(path):
        raise RewriteError(f"{path}: not a regular file (a symlink?); rewrite the file it points to instead")
    tmp = path.with_name(f".{path.name}.proxy-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, info.st_mode & 0o777)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(PermissionError):
            os.chown(tmp, info.st_uid, info.st_gid)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_originals(state_dir: Path, client_file: Path, originals: dict[str, dict[str, Any]]) -> Path:
    """Merged with what an earlier ``--via-proxy`` kept (an entry is never overwritten by its proxy form)."""
    target = originals_path(state_dir, client_file)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    kept: dict[str, Any] = {"path": str(client_file.resolve()), "originals": {}}
    if target.exists():
        kept = json.loads(target.read_text(encoding="utf-8"))
    for key, entries in originals.items():
        kept["originals"].setdefault(key, {}).update(entries)
    tmp = target.with_name(target.name + f".{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(kept, indent=2))
    os.replace(tmp, target)
    return target
