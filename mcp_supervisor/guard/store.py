"""Keeping the run report: a private JSON file in ``<state_dir>/runs``, and ``POST /v1/runs``.

Why both: the file is there even when the daemon is not (or is older and has no ``/v1/runs``);
the daemon's record is what ``history``/``report`` and the Slack notifier read.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp_supervisor.api.client import ApiError, ClientError, SupervisorClient

if TYPE_CHECKING:
    from mcp_supervisor.config import Config


def runs_dir(config: Config | None) -> Path:
    """``<state_dir>/runs``; when that is not ours to write (a system daemon's state_dir), the
    user's ``$XDG_STATE_HOME/mcp-supervisor/runs``."""
    state = Path(os.path.expanduser(str(config.state_dir))) if config is not None else None
    if state is not None:
        candidate = state / "runs"
        try:
            candidate.mkdir(parents=True, exist_ok=True, mode=0o700)
            info = os.lstat(candidate)
            if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and os.access(candidate, os.W_OK | os.X_OK):
                return candidate
        except OSError:
            pass
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "mcp-supervisor" / "runs"


def save_report(report: dict[str, Any], directory: Path) -> Path:
    """Write ``<run_id>.json`` atomically with mode 0600, through a directory fd, following no
    symlink (the directory may sit in a home another user can write to)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"{report['run']['run_id']}.json"
    tmp = f".{name}.{secrets.token_hex(4)}.tmp"
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        owner = os.fstat(dfd).st_uid
        if owner != os.geteuid():
            raise PermissionError(f"{directory} belongs to uid {owner}, not to this user; not writing a report there")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(json.dumps(report, indent=2, default=str).encode() + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return directory / name


def post_run(client: SupervisorClient | None, body: dict[str, Any]) -> str:
    """POST /v1/runs; "stored", "unsupported" (an older daemon: 404), or why it failed. Never raises."""
    if client is None:
        return "standalone"
    try:
        client.request("POST", "/v1/runs", body=body, timeout=10.0)
    except ApiError as exc:
        return "unsupported" if exc.status in (404, 405) else f"refused: {exc.message}"
    except ClientError as exc:
        return f"unreachable: {exc}"
    return "stored"


def new_run_id(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(3)
