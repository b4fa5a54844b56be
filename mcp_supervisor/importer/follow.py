"""``servers_from``: the servers an MCP client file describes, read at config load (and reload).

Why the values are not lifted out here, unlike ``import``: these servers are run and probed from
memory; nothing is written, and the redactor learns every env/header value from the loaded config.

A client file that cannot be read becomes one server entry carrying ``config_problem``: the probe
reports it as a ``config`` failure (not ready, with the fix), because the job's MCP client reads the
same broken file. The servers come back when the file reads again (restored by the vault, or fixed).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mcp_supervisor.importer.clients import ClientConfigError, ImportedServer, ImportResult, parse_client_config
from mcp_supervisor.importer.render import unique_names

MAX_CLIENT_FILE = 8 * 1024 * 1024


def read_client_file(path: Path) -> str:
    """Read without following a symlink at the last component (the daemon may run as root)."""
    return read_client_file_owned(path)[0]


def read_client_file_owned(path: Path) -> tuple[str, int]:
    """The text and the owner's uid of the file actually read (fstat of the open descriptor)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(0, "not a regular file")
        if info.st_size > MAX_CLIENT_FILE:
            raise OSError(0, f"larger than {MAX_CLIENT_FILE // (1024 * 1024)} MiB")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_CLIENT_FILE + 1)
    finally:
        os.close(fd)
    return data.decode("utf-8"), info.st_uid


def servers_from_clients(
    names: Sequence[Any], configs: Sequence[Any], explicit: Sequence[Any], mark: object, euid: int | None = None
) -> list[dict[str, Any]]:
    """Raw ``[[servers]]`` entries for each named client file; explicit entries win on a name clash.

    A root daemon never runs a command taken from a file another user can edit: that user would get
    root. Such stdio servers become ``config`` failures saying so (their HTTP servers are kept).
    """
    euid = os.geteuid() if euid is None else euid
    taken = {e.get("name") for e in explicit if isinstance(e, dict)}
    out: list[dict[str, Any]] = []
    used: dict[str, str] = {}
    results: list[tuple[str, ImportResult, int]] = []
    for name in names:
        entry = next((c for c in configs if isinstance(c, dict) and c.get("name") == name), None)
        if entry is None or not isinstance(entry.get("path"), str):
            continue  # the model's validator names the missing [[configs]] entry
        path = Path(entry["path"])
        problem: str | None = None
        try:
            text, owner = read_client_file_owned(path)
            results.append((name, parse_client_config(text, path, used_variables=used, lift_secrets=False), owner))
        except OSError as exc:
            problem = f"{path}: cannot read the MCP client config: {exc.strerror or exc}"
        except UnicodeDecodeError:
            problem = f"{path}: the MCP client config is not UTF-8 text"
        except ClientConfigError as exc:
            problem = str(exc)
        if problem is not None:
            placeholder = name if name not in taken else f"{name}-file"
            taken.add(placeholder)
            out.append({"name": placeholder, "transport": "stdio", "command": "-", "config": name,
                        "config_problem": problem, "_from_client": mark})
    unique = unique_names([result for _, result, _ in results])
    for name, result, owner in results:
        for server in result.servers:
            server_name = unique[id(server)]
            if server_name in taken:
                continue  # an explicit [[servers]] entry of that name overrides the client's
            taken.add(server_name)
            raw = _raw_server(server, server_name, name)
            if server.transport == "stdio" and euid == 0 and owner != 0:
                raw["config_problem"] = (
                    f"not run: {result.path} belongs to uid {owner}, and the supervisor runs as root; a command from "
                    "a file another user can edit would run as root. Import it instead (supervisorctl-mcp import "
                    "FILE, then review the commands) or run a user daemon as that user (install.sh --user)"
                )
                raw["_from_client"] = mark
            out.append(raw)
    return out


def _raw_server(server: ImportedServer, name: str, config_name: str) -> dict[str, Any]:
    raw: dict[str, Any] = {"name": name, "transport": server.transport, "config": config_name}
    if server.command:
        raw["command"] = server.command
    if server.args:
        raw["args"] = list(server.args)
    if server.env:
        raw["env"] = dict(server.env)
    if server.url:
        raw["url"] = server.url
    if server.headers:
        raw["headers"] = dict(server.headers)
    if server.cwd or (server.project and server.transport == "stdio"):
        raw["cwd"] = server.cwd or server.project
    return raw


def follows_client_change(kind: str, data: dict[str, Any], servers_from: Sequence[str]) -> bool:
    """Does this vault event mean a followed client file changed (so the servers must be re-read)?

    A backup taken because the file changed, or a restore of it: not the startup or scheduled
    backups, which would reload for nothing.
    """
    if not servers_from:
        return False
    if kind == "backup" and str(data.get("reason", "")).startswith("change of"):
        return any(name in servers_from for name in data.get("files", ()))
    if kind == "restore":
        return data.get("config") in servers_from
    return False
