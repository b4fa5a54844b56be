"""What a snapshot is, as data: its manifest and file entries, and the reports of writing and checking.

Why apart from the stores: the manifest format is the vault's contract across versions and
locations (local folders today, off-host ones beside them); it holds no I/O and no key, so every
location kind and every check shares one definition of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


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
    held: str | None = None
    """Set on content the watcher undid (servers removed from a client config): the SHA-256 of
    what it wrote in its place. Not a backup to restore from: ``backup --accept`` puts it back
    while the file still holds that digest. Written only when set (older readers ignore it)."""

    def file(self, name: str) -> FileEntry | None:
        return next((f for f in self.files if f.name == name), None)

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {
            "version": 1,
            "id": self.id,
            "created": self.created.isoformat(),
            "reason": self.reason,
            "files": [f.to_json() for f in self.files],
        }
        if self.held is not None:
            data["held"] = self.held
        return json.dumps(data, sort_keys=True).encode()

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
            held=raw.get("held"),
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



def file_entry(name: str, path: Path, content: bytes, info: os.stat_result) -> FileEntry:
    """The manifest entry, from the stat of the descriptor the content was read through."""
    return FileEntry(
        name, str(path), sha256(content), len(content), info.st_mode & 0o7777, info.st_mtime, info.st_uid, info.st_gid
    )
