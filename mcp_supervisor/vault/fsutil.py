"""Crash-safe file writes in the daemon's own folders (vault locations, key, state) and path locks.

Why every step: a power cut or kill -9 between write and rename must leave either the old file or
the new one, never a torn mix (write to a temp file in the same directory, fsync it, rename over
the target, fsync the directory so the rename itself is durable).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably; the temp file never outlives a failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def path_lock(state_dir: Path, path: Path) -> Iterator[None]:
    """An exclusive advisory lock for writes to ``path``, so the daemon and a CLI never interleave.

    Why in the state directory, named by a hash of the path: a lock file beside the user's file is
    a name the user controls (a planted symlink there once made the root daemon create any file it
    pointed at); the state directory belongs to the daemon.
    """
    locks = Path(os.path.expanduser(str(state_dir))) / "locks"
    locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    digest = hashlib.sha256(os.fsencode(str(path))).hexdigest()[:32]
    fd = os.open(locks / f"{digest}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
