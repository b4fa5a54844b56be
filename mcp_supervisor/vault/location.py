"""Where a vault keeps its objects: a location is an encrypted repository over a plain object store.

Two layers, so that a new kind of place (sftp, rclone, ...) only has to store bytes:

* ``ObjectStore`` (the seam): named objects and nothing else: read, write (atomic: a reader sees
  the old object or the new one, never a torn one), list, delete, plus the cross-process locks
  and the clean-up of writes killed midway. ``LocalFolder`` is the one kind today.
* ``Location``: the repository layout on top (restic-like), with the key:

      objects/<sha[:2]>/<sha256 of the plaintext>   AES-GCM, AAD = the hash
      snapshots/<snapshot id>                       AES-GCM JSON manifest, AAD = the id

  Every object is authenticated, so a flipped bit, a truncation or a swapped blob is detected and
  never restored; manifests are cached by the object's identity so listing stays cheap.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Protocol

from mcp_supervisor.vault.crypto import IntegrityError, decrypt, encrypt
from mcp_supervisor.vault.fsutil import atomic_write
from mcp_supervisor.vault.locks import collect_torn, location_lock
from mcp_supervisor.vault.manifest import Manifest, sha256
from mcp_supervisor.vault.safefs import TEMP_GRACE_S

OBJECTS = "objects"
SNAPSHOTS = "snapshots"


class ObjectStore(Protocol):
    """Named objects in one place. Names are ``/``-separated relative paths (``objects/ab/ab12..``).

    Errors are ``OSError`` (``FileNotFoundError`` for a missing object); what one kind of place
    cannot do (a lock on a plain bucket) it documents, never fakes.
    """

    def __str__(self) -> str: ...

    def ensure(self) -> None:
        """Create the place if it can be created (a missing local folder), else raise OSError."""

    def exists(self) -> bool:
        """Whether the place is there at all (an unmounted disk is not)."""

    def read(self, name: str) -> bytes: ...

    def write(self, name: str, data: bytes) -> None:
        """Atomically and durably replace ``name`` with ``data``."""

    def has(self, name: str) -> bool: ...

    def identity(self, name: str) -> tuple[int, ...]:
        """Changes whenever the object is replaced (used to cache what was decrypted)."""

    def list(self, prefix: str) -> list[str]:
        """The names under ``prefix`` (recursively), without temp files of writes in flight."""

    def delete(self, name: str) -> None:
        """Remove ``name``; no error when it is already gone."""

    def shared(self) -> contextlib.AbstractContextManager[object]: ...

    def exclusive(self) -> contextlib.AbstractContextManager[object]: ...

    def collect_leftovers(self, now: float | None = None) -> int:
        """Remove what killed writes left behind (older than a grace period); how many."""


class LocalFolder:
    """An ``ObjectStore`` in a folder of this machine (a local disk or a mounted share)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    def _path(self, name: str) -> Path:
        return self.root / name

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def exists(self) -> bool:
        return self.root.is_dir()

    def read(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        atomic_write(self._path(name), data)

    def has(self, name: str) -> bool:
        return self._path(name).is_file()

    def identity(self, name: str) -> tuple[int, ...]:
        info = self._path(name).stat()
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        try:
            return sorted(
                str(path.relative_to(self.root)) for path in base.rglob("*")
                if path.is_file() and not path.name.startswith(".")
            )  # fmt: skip
        except FileNotFoundError:
            return []

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def shared(self) -> contextlib.AbstractContextManager[object]:
        return location_lock(self.root, exclusive=False)

    def exclusive(self) -> contextlib.AbstractContextManager[object]:
        return location_lock(self.root, exclusive=True)

    def collect_leftovers(self, now: float | None = None) -> int:
        """Temp files of writes killed midway (dot-files ending ``.tmp``, older than a minute: the
        caller holds the exclusive lock, so no cooperating writer is active; the age spares one
        that does not lock), and torn lock files."""
        removed = 0
        cutoff = (now or time.time()) - TEMP_GRACE_S
        for path in [*self._path(OBJECTS).glob("*/.*"), *self._path(SNAPSHOTS).glob(".*")]:
            if not path.name.endswith(".tmp"):
                continue
            try:
                if path.lstat().st_mtime >= cutoff:
                    continue
            except FileNotFoundError:
                continue
            path.unlink(missing_ok=True)
            removed += 1
        collect_torn(self.root, TEMP_GRACE_S)
        return removed


def _blob_aad(digest: str) -> bytes:
    return b"blob:" + digest.encode()


def _manifest_aad(snapshot_id: str) -> bytes:
    return b"manifest:" + snapshot_id.encode()


def blob_name(digest: str) -> str:
    return f"{OBJECTS}/{digest[:2]}/{digest}"


def manifest_name(snapshot_id: str) -> str:
    return f"{SNAPSHOTS}/{snapshot_id}"


class Location:
    """One copy of the vault: encrypted blobs and manifests in an ``ObjectStore``."""

    def __init__(self, store: ObjectStore | Path, key: bytes) -> None:
        self.store: ObjectStore = LocalFolder(store) if isinstance(store, Path) else store
        self._key = key
        self._manifests: dict[str, tuple[tuple[int, ...], Manifest]] = {}

    def __str__(self) -> str:
        return str(self.store)

    def has_object(self, digest: str) -> bool:
        return self.store.has(blob_name(digest))

    def write_object(self, digest: str, content: bytes) -> None:
        if not self.has_object(digest):
            self.store.write(blob_name(digest), encrypt(self._key, content, _blob_aad(digest)))

    def replace_object(self, digest: str, content: bytes) -> None:
        """Write the blob even if one is there (repair: the one there is bad)."""
        self.store.write(blob_name(digest), encrypt(self._key, content, _blob_aad(digest)))

    def read_object(self, digest: str) -> bytes:
        """Decrypt and check the hash; IntegrityError or OSError when the copy is bad."""
        content = decrypt(self._key, self.store.read(blob_name(digest)), _blob_aad(digest))
        if sha256(content) != digest:
            raise IntegrityError("content does not match its hash")
        return content

    def write_manifest(self, manifest: Manifest) -> None:
        blob = encrypt(self._key, manifest.to_bytes(), _manifest_aad(manifest.id))
        self.store.write(manifest_name(manifest.id), blob)

    def snapshot_ids(self) -> list[str]:
        return sorted(name.rsplit("/", 1)[-1] for name in self.store.list(SNAPSHOTS))

    def read_manifest(self, snapshot_id: str, *, fresh: bool = False) -> Manifest:
        """The decrypted manifest; cached by the object's identity unless ``fresh`` (verify reads
        every byte again: bit rot does not change a file's size or mtime)."""
        name = manifest_name(snapshot_id)
        identity = self.store.identity(name)
        cached = self._manifests.get(snapshot_id)
        if not fresh and cached is not None and cached[0] == identity:
            return cached[1]
        manifest = self._decrypt_manifest(snapshot_id, self.store.read(name))
        self._manifests[snapshot_id] = (identity, manifest)
        return manifest

    def _decrypt_manifest(self, snapshot_id: str, blob: bytes) -> Manifest:
        data = decrypt(self._key, blob, _manifest_aad(snapshot_id))
        try:
            manifest = Manifest.from_bytes(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"manifest is not readable ({type(exc).__name__})") from None
        if manifest.id != snapshot_id:
            raise IntegrityError("manifest id does not match its name")
        return manifest

    def remove_snapshot(self, snapshot_id: str) -> None:
        self.store.delete(manifest_name(snapshot_id))
        self._manifests.pop(snapshot_id, None)

    def collect_garbage(self, referenced: set[str], now: float | None = None) -> int:
        """Remove unreferenced blobs and what killed writes left; the caller holds ``exclusive()``."""
        removed = 0
        for name in self.store.list(OBJECTS):
            if name.rsplit("/", 1)[-1] not in referenced:
                self.store.delete(name)
                removed += 1
        return removed + self.store.collect_leftovers(now)

    def shared(self) -> contextlib.AbstractContextManager[object]:
        return self.store.shared()

    def exclusive(self) -> contextlib.AbstractContextManager[object]:
        return self.store.exclusive()

