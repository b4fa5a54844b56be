"""Snapshots in several locations: encrypted content-addressed blobs plus an encrypted manifest.

Layout of one location (restic-like):

    <location>/objects/<sha[:2]>/<sha256 of the plaintext>   AES-GCM, AAD = the hash
    <location>/snapshots/<snapshot id>                       AES-GCM JSON manifest, AAD = the id

Why this shape: identical content is stored once however many snapshots reference it; blobs are
written before the manifest, so a snapshot is listed only when complete (a kill -9 mid-backup
leaves at most orphan blobs, which the next retention run collects); every object is
authenticated, so a flipped bit, a truncation or a swapped blob is detected and never restored.
A location that fails (missing mount, read-only, full disk) is reported and the others carry on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mcp_supervisor.vault.crypto import IntegrityError, VaultError, decrypt, encrypt
from mcp_supervisor.vault.fsutil import atomic_write
from mcp_supervisor.vault.locks import collect_torn, location_lock
from mcp_supervisor.vault.retention import select_keep
from mcp_supervisor.vault.safefs import TEMP_GRACE_S


@dataclass(frozen=True)
class FileEntry:
    name: str  # the [[configs]] name
    path: str
    sha256: str
    size: int
    mode: int
    mtime: float
    uid: int | None = None
    """Owner and group at backup time (None in manifests written before they were recorded)."""
    gid: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "mode": self.mode,
            "mtime": self.mtime,
            "uid": self.uid,
            "gid": self.gid,
        }


@dataclass(frozen=True)
class Manifest:
    id: str
    created: datetime
    reason: str
    files: tuple[FileEntry, ...]

    def file(self, name: str) -> FileEntry | None:
        return next((f for f in self.files if f.name == name), None)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "version": 1,
                "id": self.id,
                "created": self.created.isoformat(),
                "reason": self.reason,
                "files": [f.to_json() for f in self.files],
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        return cls(
            id=raw["id"],
            created=datetime.fromisoformat(raw["created"]),
            reason=raw.get("reason", ""),
            files=tuple(
                FileEntry(
                    f["name"], f["path"], f["sha256"], f["size"], f["mode"], f["mtime"], f.get("uid"), f.get("gid")
                )
                for f in raw["files"]
            ),
        )


@dataclass
class WriteReport:
    snapshot_id: str
    copies: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BadObject:
    location: str
    snapshot: str | None
    file: str | None
    object: str
    problem: str

    def __str__(self) -> str:
        where = f"snapshot {self.snapshot}" if self.snapshot else "object store"
        what = f", file {self.file}" if self.file else ""
        return f"{self.location}: {where}{what}: {self.object}: {self.problem}"


def new_snapshot_id(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(3)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _blob_aad(digest: str) -> bytes:
    return b"blob:" + digest.encode()


def _manifest_aad(snapshot_id: str) -> bytes:
    return b"manifest:" + snapshot_id.encode()


def _describe(exc: OSError) -> str:
    return f"{exc.strerror or type(exc).__name__} ({exc.filename or ''})".replace(" ()", "")


class Location:
    def __init__(self, root: Path, key: bytes) -> None:
        self.root = root
        self._key = key
        self._manifests: dict[str, tuple[tuple[int, int, int], Manifest]] = {}

    def __str__(self) -> str:
        return str(self.root)

    def object_path(self, digest: str) -> Path:
        return self.root / "objects" / digest[:2] / digest

    def manifest_path(self, snapshot_id: str) -> Path:
        return self.root / "snapshots" / snapshot_id

    def has_object(self, digest: str) -> bool:
        return self.object_path(digest).is_file()

    def write_object(self, digest: str, content: bytes) -> None:
        if not self.has_object(digest):
            atomic_write(self.object_path(digest), encrypt(self._key, content, _blob_aad(digest)))

    def write_object_raw(self, digest: str, blob: bytes) -> None:
        atomic_write(self.object_path(digest), blob)

    def read_object(self, digest: str) -> bytes:
        """Decrypt and check the hash; IntegrityError or OSError when the copy is bad."""
        content = decrypt(self._key, self.object_path(digest).read_bytes(), _blob_aad(digest))
        if sha256(content) != digest:
            raise IntegrityError("content does not match its hash")
        return content

    def write_manifest(self, manifest: Manifest) -> None:
        atomic_write(
            self.manifest_path(manifest.id), encrypt(self._key, manifest.to_bytes(), _manifest_aad(manifest.id))
        )

    def snapshot_ids(self) -> list[str]:
        directory = self.root / "snapshots"
        try:
            return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def read_manifest(self, snapshot_id: str, *, fresh: bool = False) -> Manifest:
        """The decrypted manifest; cached by the file's identity unless ``fresh`` (verify reads
        every byte again: bit rot does not change a file's size or mtime)."""
        path = self.manifest_path(snapshot_id)
        info = path.stat()
        identity = (info.st_ino, info.st_size, info.st_mtime_ns)
        cached = self._manifests.get(snapshot_id)
        if not fresh and cached is not None and cached[0] == identity:
            return cached[1]
        manifest = self._decrypt_manifest(snapshot_id, path.read_bytes())
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
        self.manifest_path(snapshot_id).unlink(missing_ok=True)
        self._manifests.pop(snapshot_id, None)

    def collect_garbage(self, referenced: set[str], now: float | None = None) -> int:
        """Remove unreferenced blobs and the temp files of writes killed midway (dot-files ending
        ``.tmp``, older than a minute: the caller holds the exclusive lock, so no cooperating
        writer is active; the age spares one that does not lock)."""
        removed = 0
        cutoff = (now or time.time()) - TEMP_GRACE_S
        for path in [*(self.root / "objects").glob("*/*"), *(self.root / "snapshots").glob(".*")]:
            if path.name.startswith("."):
                if not path.name.endswith(".tmp"):
                    continue
                try:
                    if path.lstat().st_mtime >= cutoff:
                        continue
                except FileNotFoundError:
                    continue
            elif path.parent.name == "snapshots" or path.name in referenced:
                continue
            path.unlink(missing_ok=True)
            removed += 1
        collect_torn(self.root, TEMP_GRACE_S)
        return removed

    def shared(self) -> Any:
        return location_lock(self.root, exclusive=False)

    def exclusive(self) -> Any:
        return location_lock(self.root, exclusive=True)


class SnapshotStore:
    """All locations of one vault. Synchronous: callers run it in a worker thread."""

    def __init__(self, locations: list[Path], key: bytes) -> None:
        self.locations = [Location(Path(p), key) for p in locations]

    def write(self, files: list[tuple[FileEntry, bytes]], reason: str, now: datetime | None = None) -> WriteReport:
        now = now or datetime.now(UTC)
        manifest = Manifest(new_snapshot_id(now), now, reason, tuple(entry for entry, _ in files))
        report = WriteReport(manifest.id)
        for location in self.locations:
            try:
                location.root.mkdir(parents=True, exist_ok=True, mode=0o700)
                with location.shared():
                    for entry, content in files:
                        location.write_object(entry.sha256, content)
                    location.write_manifest(manifest)  # last: the snapshot exists only when complete
                report.copies.append(str(location))
            except OSError as exc:
                report.failures[str(location)] = _describe(exc)
            except VaultError as exc:  # locked by a stuck process: this location fails, the others go on
                report.failures[str(location)] = str(exc)
        return report

    def snapshot_count(self) -> int:
        """Snapshots present in any location, readable or not (needs no key)."""
        return len({sid for location in self.locations for sid in location.snapshot_ids()})

    def unreadable(self, readable: set[str]) -> dict[str, tuple[list[str], str]]:
        """Snapshots no location can decrypt: id -> (locations holding it, why)."""
        found: dict[str, tuple[list[str], str]] = {}
        for location in self.locations:
            for snapshot_id in location.snapshot_ids():
                if snapshot_id in readable:
                    continue
                try:
                    location.read_manifest(snapshot_id)
                    problem = "readable now (written during the listing)"
                except (OSError, IntegrityError) as exc:
                    problem = str(exc)
                entry = found.setdefault(snapshot_id, ([], problem))
                entry[0].append(str(location))
        return found

    def key_opens_any(self) -> bool:
        """Whether the key decrypts at least one manifest (stops at the first that does)."""
        for location in self.locations:
            for snapshot_id in reversed(location.snapshot_ids()):
                try:
                    location.read_manifest(snapshot_id)
                    return True
                except FileNotFoundError:
                    continue
                except (OSError, IntegrityError):
                    continue
        return False

    def manifests(self) -> dict[str, tuple[Manifest, list[str]]]:
        """Every snapshot any location can decrypt, with the locations holding a readable manifest."""
        found: dict[str, tuple[Manifest, list[str]]] = {}
        for location in self.locations:
            for snapshot_id in location.snapshot_ids():
                try:
                    manifest = location.read_manifest(snapshot_id)
                except (OSError, IntegrityError):
                    continue
                entry = found.setdefault(snapshot_id, (manifest, []))
                entry[1].append(str(location))
        return dict(sorted(found.items()))

    def read_file(self, entry: FileEntry) -> bytes:
        """The first copy that decrypts and hashes right, from any location."""
        problems = []
        for location in self.locations:
            try:
                return location.read_object(entry.sha256)
            except (OSError, IntegrityError) as exc:
                problems.append(f"{location}: {exc}")
        raise IntegrityError(f"no good copy of {entry.name} ({entry.sha256[:12]}): " + "; ".join(problems))

    def verify(self) -> list[BadObject]:
        """Decrypt every manifest and blob in every location; name each bad one."""
        bad: list[BadObject] = []
        all_ids = sorted({sid for loc in self.locations for sid in loc.snapshot_ids()})
        good_manifests = self.manifests()
        for location in self.locations:
            checked: set[str] = set()
            try:
                with location.shared():
                    self._verify_location(location, all_ids, good_manifests, checked, bad)
            except (OSError, VaultError) as exc:
                bad.append(BadObject(str(location), None, None, "location", str(exc)))
        return bad

    def _verify_location(
        self,
        location: Location,
        all_ids: list[str],
        good_manifests: dict[str, tuple[Manifest, list[str]]],
        checked: set[str],
        bad: list[BadObject],
    ) -> None:
        for snapshot_id in all_ids:
            try:
                manifest = location.read_manifest(snapshot_id, fresh=True)
            except FileNotFoundError:
                bad.append(BadObject(str(location), snapshot_id, None, "manifest", "missing"))
                continue
            except (OSError, IntegrityError) as exc:
                bad.append(BadObject(str(location), snapshot_id, None, "manifest", str(exc)))
                if snapshot_id not in good_manifests:
                    continue
                manifest = good_manifests[snapshot_id][0]
            for entry in manifest.files:
                if entry.sha256 in checked:
                    continue
                checked.add(entry.sha256)
                try:
                    location.read_object(entry.sha256)
                except FileNotFoundError:
                    bad.append(BadObject(str(location), snapshot_id, entry.name, entry.sha256[:16], "missing"))
                except (OSError, IntegrityError) as exc:
                    bad.append(BadObject(str(location), snapshot_id, entry.name, entry.sha256[:16], str(exc)))

    def repair(self) -> tuple[list[str], list[BadObject]]:
        """Copy good objects over missing or corrupt ones from another location; then verify again."""
        repaired: list[str] = []
        manifests = self.manifests()
        with contextlib.ExitStack() as stack:
            for location in self.locations:
                with contextlib.suppress(OSError, VaultError):
                    stack.enter_context(location.shared())
            self._repair_locked(manifests, repaired)
        return repaired, self.verify()

    def _repair_locked(self, manifests: dict[str, tuple[Manifest, list[str]]], repaired: list[str]) -> None:
        for snapshot_id, (manifest, _holders) in manifests.items():
            for location in self.locations:
                try:
                    location.read_manifest(snapshot_id, fresh=True)
                except (OSError, IntegrityError):
                    try:
                        location.write_manifest(manifest)
                        repaired.append(f"{location}: snapshot {snapshot_id}: manifest")
                    except OSError:
                        continue
                for entry in manifest.files:
                    try:
                        location.read_object(entry.sha256)
                    except (OSError, IntegrityError):
                        try:
                            content = self.read_file(entry)
                            location.write_object_raw(
                                entry.sha256, encrypt(location._key, content, _blob_aad(entry.sha256))
                            )
                            repaired.append(f"{location}: snapshot {snapshot_id}: {entry.name}")
                        except (OSError, IntegrityError):
                            continue

    def forget(
        self, *, keep_last: int, keep_daily: int, keep_weekly: int, keep_monthly: int
    ) -> dict[str, list[str]]:
        """Apply retention per location and collect unreferenced blobs."""
        removed: dict[str, list[str]] = {}
        for location in self.locations:
            if not location.root.is_dir():
                continue
            try:
                with location.exclusive():
                    gone = self._forget_location(location, keep_last, keep_daily, keep_weekly, keep_monthly)
            except (OSError, VaultError):
                continue  # retention is best effort: the next run catches up
            if gone is not None:
                removed[str(location)] = gone
        return removed

    def _forget_location(
        self, location: Location, keep_last: int, keep_daily: int, keep_weekly: int, keep_monthly: int
    ) -> list[str] | None:
        manifests = []
        for snapshot_id in location.snapshot_ids():
            try:
                manifests.append(location.read_manifest(snapshot_id))
            except (OSError, IntegrityError):
                continue  # never delete what we cannot read: verify/repair will report it
        keep = select_keep(
            [(m.id, m.created) for m in manifests],
            keep_last=keep_last,
            keep_daily=keep_daily,
            keep_weekly=keep_weekly,
            keep_monthly=keep_monthly,
        )
        gone = [m.id for m in manifests if m.id not in keep]
        try:
            for snapshot_id in gone:
                location.remove_snapshot(snapshot_id)
            referenced = {f.sha256 for m in manifests if m.id in keep for f in m.files}
            # blobs of manifests we could not read stay referenced by being left alone
            unreadable = set(location.snapshot_ids()) - {m.id for m in manifests}
            if not unreadable:
                location.collect_garbage(referenced)
        except OSError:
            return None
        return gone


def file_entry(name: str, path: Path, content: bytes, info: os.stat_result) -> FileEntry:
    """The manifest entry, from the stat of the descriptor the content was read through."""
    return FileEntry(
        name, str(path), sha256(content), len(content), info.st_mode & 0o7777, info.st_mtime, info.st_uid, info.st_gid
    )
