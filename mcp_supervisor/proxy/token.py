"""The proxy's bearer token: made once at first start, kept in a 0600 file, never logged.

Why a file: the job must read it (``run -- CMD`` exports its path), and a file's owner and mode
are the access rule everyone already knows from ssh keys. Why so careful opening it: the state
directory may sit in a user's home, so the file is created exclusively and opened without
following links, and a token readable by others is refused, not silently used.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

TOKEN_BYTES = 32


class TokenFileError(Exception):
    """The token file cannot be used; the message names the file and the fix."""


def ensure_token(path: Path) -> str:
    """The token in ``path``, creating the file (0600, exclusively) when it does not exist."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return read_token(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def read_token(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise TokenFileError(f"[proxy] token_file {path}: cannot open it ({exc.strerror}); remove it to have a "
                             "new token made at the next start, or fix its permissions") from None
    with os.fdopen(fd, "r") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise TokenFileError(f"[proxy] token_file {path}: not a regular file; remove it")
        if info.st_mode & 0o077:
            raise TokenFileError(
                f"[proxy] token_file {path}: mode {stat.S_IMODE(info.st_mode):04o} lets others read the token; "
                f"run: chmod 600 {path}  (and replace the token if others may have read it: remove the file)")
        token = handle.read(4096).strip()
    if len(token) < 16:
        raise TokenFileError(f"[proxy] token_file {path}: the token is missing or shorter than 16 characters; "
                             "remove the file to have a new one made")
    return token


def bearer_ok(header: str | None, token: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())
