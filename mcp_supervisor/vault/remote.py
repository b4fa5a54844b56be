"""An off-host vault location (sftp, rclone): the vault's ``ObjectStore`` seam over a small transport.

Why the remote only ever sees ciphertext and random names: the objects are the same AES-GCM
blobs and manifests a folder holds, and their names are encrypted too. A folder names a blob by
the SHA-256 of its plaintext, which would let whoever holds the remote confirm a guessed config;
here every name is AES-SIV-encrypted (deterministic, so a blob already uploaded is found again
and never sent twice; reversible with the key, so retention and verify work unchanged), and lock
files, which name this host and pid, are encrypted as well. ``repair`` therefore copies between
a folder and a remote as between two folders.

Why a ``Transport`` under the store: SSH and rclone differ only in five verbs (check, put, get,
list, delete); names, locks, leftovers and the listing cache are this one class. Transport
failures are ``OSError`` (``RemoteError``; a missing object ``FileNotFoundError``), so a remote
that is down is, to the snapshot store, a folder whose disk is gone: that copy fails, the others
carry on, and the backup names the missing copy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path, PurePath, PurePosixPath
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mcp_supervisor.vault.crypto import IntegrityError, decrypt, encrypt
from mcp_supervisor.vault.locks import LockInfo, hold, parse_body
from mcp_supervisor.vault.safefs import TEMP_GRACE_S

UNREADABLE = "?"
"""Prefix of a snapshot name the key cannot decode (another key, or damage): counted and reported."""


class RemoteError(OSError):
    """A remote location failed (unreachable, refused, host key, permissions): the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)

    def __str__(self) -> str:
        return str(self.strerror)


class Transport(Protocol):
    """Five verbs on relative POSIX names (``objects/ab/<name>``) under the location's path."""

    where: str
    """How the location is named in reports (``sftp://user@host:port/path``; never a secret)."""

    def check(self) -> None:
        """Reach the location (connect, authenticate, create its folder); RemoteError when it cannot."""

    def put(self, name: str, data: bytes, *, atomic: bool) -> None:
        """Store ``data``; ``atomic``: readers see the old object or the whole new one."""

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Store several blobs (not necessarily atomic each), as fast as the transport can."""

    def get(self, name: str) -> bytes:
        """The object; FileNotFoundError when it is not there."""

    def list(self, folder: str) -> list[tuple[str, float]]:
        """(name relative to the location, mtime) of every file under ``folder`` (``""``: all of
        them); [] when absent."""

    def delete(self, name: str) -> None:
        """Remove one object; absent is fine."""

    def close(self) -> None: ...


class RemoteStore:
    """The vault's ``ObjectStore`` on a transport, with encrypted names and encrypted lock files."""

    def __init__(self, transport: Transport, key: bytes) -> None:
        self.transport = transport
        self._key = key
        self._names = AESSIV(HKDF(hashes.SHA256(), 64, None, b"mcp-supervisor remote names").derive(key))
        self._reached = False
        self._pending: list[tuple[str, bytes]] = []
        """Blobs written under a lock, uploaded together before the manifest (or the lock's end)."""
        self._present: set[str] | None = None
        """Outer object names, listed when a lock is taken: a backup then uploads only what is new."""

    def __str__(self) -> str:
        return self.transport.where

    # --- names: inner (the vault's) <-> outer (what the remote sees) -------------------------------

    def _seal(self, text: str, kind: bytes) -> str:
        return self._names.encrypt(text.encode(), [kind]).hex()

    def _open(self, sealed: str, kind: bytes) -> str | None:
        try:
            return self._names.decrypt(bytes.fromhex(sealed), [kind]).decode()
        except (ValueError, InvalidTag):  # not hex, another key's, or damaged
            return None

    def outer(self, name: str) -> str:
        folder, _, base = name.rpartition("/")
        if folder.startswith("objects"):
            sealed = self._seal(base, b"blob")
            return f"objects/{sealed[:2]}/{sealed}"
        if folder == "snapshots":
            return "snapshots/" + (base[len(UNREADABLE):] if base.startswith(UNREADABLE) else self._seal(base, b"snapshot"))
        return name

    def _inner(self, outer: str) -> str | None:
        folder, _, base = outer.rpartition("/")
        if folder.startswith("objects"):
            digest = self._open(base, b"blob")
            return None if digest is None else f"objects/{digest[:2]}/{digest}"
        if folder == "snapshots":
            snapshot_id = self._open(base, b"snapshot")
            return "snapshots/" + (UNREADABLE + base if snapshot_id is None else snapshot_id)
        return outer

    # --- the ObjectStore verbs -------------------------------------------------------------------

    def ensure(self) -> None:
        if not self._reached:
            self.transport.check()
            self._reached = True  # a later failure surfaces in the operation itself

    def exists(self) -> bool:
        try:
            self.ensure()
        except OSError:
            return False
        return True

    def read(self, name: str) -> bytes:
        self._flush()
        return self.transport.get(self.outer(name))

    def write(self, name: str, data: bytes) -> None:
        outer = self.outer(name)
        if self._present is not None and outer.startswith("objects/"):
            self._pending.append((outer, data))  # sent with the others before the manifest
            self._present.add(outer)
            return
        self._flush()
        # a torn blob fails authentication (verify names it, repair replaces it); the manifest is
        # what makes a snapshot exist, so it always appears whole or not at all
        self.transport.put(outer, data, atomic=not outer.startswith("objects/"))

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self.transport.put_many(pending)

    def has(self, name: str) -> bool:
        outer = self.outer(name)
        if self._present is not None and outer.startswith("objects/"):
            return outer in self._present
        folder = outer.rpartition("/")[0]
        return any(found == outer for found, _ in self.transport.list(folder))

    def identity(self, name: str) -> tuple[int, ...]:
        """Constant: a remote object is never changed in place under a name that stays readable
        (verify and repair read ``fresh``); a stat per listing would cost a round trip each."""
        return (0,)

    def list(self, prefix: str) -> list[str]:
        """The inner names under ``prefix``. Outside a lock an unreachable remote lists nothing (it
        holds no copy we can use, like an unmounted folder); under a lock the error is raised, so
        retention never mistakes a failed listing for an empty location."""
        try:
            listed = self.transport.list(prefix)
        except RemoteError:
            if self._present is not None:
                raise
            return []
        found = []
        for outer, _ in listed:
            if PurePosixPath(outer).name.startswith("."):
                continue
            inner = self._inner(outer)
            if inner is not None:  # a blob name no key of ours made is never listed, so never collected
                found.append(inner)
        return sorted(found)

    def delete(self, name: str) -> None:
        self._flush()
        outer = self.outer(name)
        self.transport.delete(outer)
        if self._present is not None:
            self._present.discard(outer)

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[object]:
        with hold(RemoteLocks(self.transport, self._key), exclusive=exclusive):
            self._present = {name for name, _ in self.transport.list("objects")}
            try:
                yield self
                self._flush()  # what was written under the lock is there before it is released
            finally:
                self._pending = []
                self._present = None

    def shared(self) -> contextlib.AbstractContextManager[object]:
        return self._locked(False)

    def exclusive(self) -> contextlib.AbstractContextManager[object]:
        return self._locked(True)

    def collect_leftovers(self, now: float | None = None) -> int:
        """Temp uploads a killed backup left (dot-names ending ``.tmp``) older than the grace period."""
        cutoff = (now or time.time()) - TEMP_GRACE_S
        removed = 0
        for name, mtime in self.transport.list(""):  # one listing of the whole location
            base = PurePosixPath(name).name
            if base.startswith(".") and base.endswith(".tmp") and mtime < cutoff:
                self.transport.delete(name)
                removed += 1
        return removed


class RemoteLocks:
    """``locks.LockStore`` on a transport: encrypted lock files in ``locks/``, as restic keeps them."""

    def __init__(self, transport: Transport, key: bytes) -> None:
        self.transport = transport
        self.where = transport.where
        self._key = key

    def publish(self, name: str, body: bytes) -> PurePath:
        path = PurePosixPath("locks") / name
        self.transport.put(str(path), encrypt(self._key, body, b"lock:" + name.encode()), atomic=True)
        return path

    def remove(self, path: PurePath) -> None:
        self.transport.delete(str(path))

    def holders(self) -> list[LockInfo]:
        found = []
        for name, mtime in self.transport.list("locks"):
            path = PurePosixPath(name)
            if path.name.startswith("."):
                continue
            try:
                body = decrypt(self._key, self.transport.get(name), b"lock:" + path.name.encode())
                found.append(parse_body(path, body))
            except FileNotFoundError:
                continue
            except (OSError, IntegrityError, ValueError, KeyError, TypeError):
                # torn, or another key's: a fresh exclusive lock until it ages out (never guess)
                found.append(LockInfo(path, -1, "?", mtime, True))
        return found


def check_private_file(path: Path, what: str, *, secret: bool) -> Path:
    """Refuse a file another user could have written (or, ``secret``, read), as ssh does.

    The daemon runs as root: an identity, known_hosts or rclone.conf that another user can change
    would let that user choose where root connects and what it trusts.
    """
    path = Path(os.path.expanduser(str(path)))
    try:
        info = path.stat()
    except FileNotFoundError:
        raise RemoteError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise RemoteError(f"{what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise RemoteError(f"{what} {path} is not a regular file")
    if info.st_uid not in (0, os.geteuid()):
        raise RemoteError(f"{what} {path} is owned by uid {info.st_uid}, not by this daemon's user or root; "
                          f"fix: chown {os.geteuid()} {path}")
    loose = stat.S_IMODE(info.st_mode) & (0o077 if secret else 0o022)
    if loose:
        mode = 0o600 if secret else 0o644
        raise RemoteError(f"{what} {path} has mode {stat.S_IMODE(info.st_mode):04o} (others may "
                          f"{'read or write' if secret else 'write'} it); fix: chmod {mode:o} {path}")
    return path
