"""Where things are: the config file a command uses and the control socket a config implies.

Why apart from the loader: finding a file and deriving a path read the environment and the
file system's owners, not the file's content; ``ready`` and ``status`` need the socket path before
(and sometimes instead of) loading anything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mcp_supervisor.config.models import Config

DEFAULT_CONFIG_PATHS = (
    Path("/etc/mcp-supervisor/mcp-supervisor.toml"),
    Path("~/.config/mcp-supervisor/mcp-supervisor.toml"),
)


def find_config(explicit: str | Path | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """``--config``, else ``MCP_SUPERVISOR_CONFIG``, else the first default path that exists."""
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(os.path.expanduser(str(explicit)))
    if environ.get("MCP_SUPERVISOR_CONFIG"):
        return Path(os.path.expanduser(environ["MCP_SUPERVISOR_CONFIG"]))
    for candidate in DEFAULT_CONFIG_PATHS:
        expanded = Path(os.path.expanduser(str(candidate)))
        if expanded.exists():
            return expanded
    return None


def default_socket_path(owner_uid: int | None = None, run_user: Path = Path("/run/user")) -> Path:
    """The socket a config implies, from the uid that owns the config, never from who asks.

    Why not the reader's uid or ``$XDG_RUNTIME_DIR``: an unprivileged ``supervisorctl-mcp`` reading
    the system config, a cron job without a login session and the daemon itself must all arrive at
    the same path. Root's config -> ``/run/mcp-supervisor/``; uid N's -> ``/run/user/N/`` when
    logind made it, else ``/tmp/mcp-supervisor-N/`` (whose owner and mode the daemon checks).
    """
    uid = os.geteuid() if owner_uid is None else owner_uid
    if uid == 0:
        return Path("/run/mcp-supervisor/control.sock")
    if (run_user / str(uid)).is_dir():
        return run_user / str(uid) / "mcp-supervisor" / "control.sock"
    return Path(f"/tmp/mcp-supervisor-{uid}/control.sock")


def _config_owner(config: Config | None) -> int | None:
    if config is None or config.source is None or config.source.name == "<string>":
        return None
    try:
        return config.source.stat().st_uid
    except OSError:
        return None


def resolve_socket_path(
    cli_socket: str | Path | None, config: Config | None, environ: Mapping[str, str] | None = None
) -> Path:
    """``--socket``, else ``MCP_SUPERVISOR_SOCKET``, else ``[supervisor] socket``, else the default."""
    environ = os.environ if environ is None else environ
    if cli_socket:
        return Path(os.path.expanduser(str(cli_socket)))
    if environ.get("MCP_SUPERVISOR_SOCKET"):
        return Path(os.path.expanduser(environ["MCP_SUPERVISOR_SOCKET"]))
    if config is not None and config.supervisor.socket is not None:
        return config.supervisor.socket
    return default_socket_path(_config_owner(config))
