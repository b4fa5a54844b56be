"""Putting restored content in place: what is there now, and writing it as the folder's owner would.

Why apart from the service: this is the part that touches users' folders, so it is kept small and
readable on its own; every call goes through ``safefs`` (dir fds, ``O_NOFOLLOW``, exclusive kept
copies) and, for a folder owned by another user, through a helper process that dropped to that user.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from mcp_supervisor.vault.crypto import VaultError
from mcp_supervisor.vault.fsutil import path_lock
from mcp_supervisor.vault.owner_helper import put_file_as_owner
from mcp_supervisor.vault.safefs import PathRefused, Put, describe_mode, open_dir, read_regular


class RestoreError(VaultError):
    pass


def os_reason(exc: OSError) -> str:
    if isinstance(exc, PathRefused):
        return str(exc)
    return f"{exc.strerror or type(exc).__name__}" + (f" ({exc.filename})" if exc.filename else "")


def read_target(target: Path, *, only_regular: bool) -> bytes | None:
    """What is at ``target`` now, if it is a readable regular file; refuses non-files for --to."""
    try:
        folder = open_dir(str(target.parent))
    except FileNotFoundError:
        raise RestoreError(
            f"folder {target.parent} does not exist" + (" (restore --to creates no folders)" if only_regular else "")
        ) from None
    except OSError as exc:
        raise RestoreError(f"cannot restore into {target.parent}: {os_reason(exc)}") from None
    try:
        try:
            info = os.stat(target.name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if only_regular and not stat.S_ISREG(info.st_mode):
            raise RestoreError(
                f"{target} is {describe_mode(info.st_mode)}: restore --to writes only regular files "
                "(name a new or existing file); nothing was changed"
            )
        try:
            return read_regular(folder, target.name).content
        except OSError:
            return None
    finally:
        os.close(folder)


def place(
    state_dir: Path,
    target: Path,
    content: bytes,
    *,
    mode: int | None,
    uid: int | None,
    gid: int | None,
    label: str | None,
    only_regular: bool,
) -> str | None:
    """Put ``content`` at ``target`` as the folder's owner would; returns the kept copy's path.

    ``mode=None``: keep the present file's own mode and owner. ``uid=None`` as root: the folder's
    owner (manifests from before owners were recorded).
    """
    try:
        folder = open_dir(str(target.parent))
    except OSError as exc:
        raise RestoreError(f"cannot restore into {target.parent}: {os_reason(exc)}") from None
    try:
        owner = os.fstat(folder)
        if mode is None:
            mode = 0o600
            with contextlib.suppress(FileNotFoundError):
                info = os.stat(target.name, dir_fd=folder, follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):  # keep the file's own owner and mode
                    mode, uid, gid = stat.S_IMODE(info.st_mode) & 0o777, info.st_uid, info.st_gid
        if os.geteuid() == 0 and uid is None and not only_regular:
            uid, gid = owner.st_uid, owner.st_gid
        try:
            with path_lock(state_dir, target):
                reply = put_file_as_owner(folder, target.name, content, Put(mode, uid, gid, label, only_regular))
        except OSError as exc:
            raise RestoreError(f"cannot write {target}: {os_reason(exc)}") from None
    finally:
        os.close(folder)
    kept = reply.get("kept")
    return str(target.parent / kept) if kept else None
