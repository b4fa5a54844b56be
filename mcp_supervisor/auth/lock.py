"""One refresh at a time per server across every process: an ``flock`` on ``state_dir/auth/NAME.lock``.

Why across processes and not only in the daemon: a rotating refresh token is single-use. If the
daemon and a CLI (``login --refresh``) each sent the same one, the authorization server would take
the second as a stolen token and revoke the whole grant (RFC 9700 §4.14.2). So whoever wants to
refresh takes this lock, then re-reads the store (the other may have refreshed already), and only
then sends the refresh token it read. The lock file is opened the way a root daemon must open
anything: ``O_NOFOLLOW`` in its own 0700 directory, created 0600, and refused unless it is a
regular file owned by the directory's owner (the daemon's user). Waiting polls ``LOCK_NB`` so it
stays cancellable and bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

POLL = 0.05


class LockError(Exception):
    """The lock file is unsafe, or another process held it past the deadline."""


def _open_lock(path: Path) -> int:
    owner = os.stat(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    try:
        info = os.fstat(fd)
        if info.st_uid != owner.st_uid and os.geteuid() == 0 and info.st_uid == 0:
            os.fchown(fd, owner.st_uid, owner.st_gid)  # a root CLI made it: the daemon's user owns it
            info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != owner.st_uid or info.st_mode & 0o077:
            raise LockError(f"lock file {path} is not a regular 0600 file owned by the owner of {path.parent}; "
                            f"remove it (rm {path}) and retry")
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.asynccontextmanager
async def refresh_lock(path: Path, timeout: float = 60.0) -> AsyncIterator[None]:
    """Hold the exclusive lock on ``path`` (waiting at most ``timeout``)."""
    try:
        fd = _open_lock(path)
    except OSError as exc:
        raise LockError(f"cannot open lock file {path} ({exc.strerror}); it must be a regular file, not a link") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockError(f"another process has held {path} for over {timeout:.0f} s") from None
                await asyncio.sleep(POLL)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
