"""Snapshots in several locations: the vault's write, read, list and retention across all of them.

Why several locations and this order of writes: blobs are written before the manifest, so a
snapshot is listed only when complete (a kill -9 mid-backup leaves at most orphan blobs, which the
next retention run collects); identical content is stored once however many snapshots reference
it; a location that fails (missing mount, read-only, full disk, locked by a stuck process) is
reported and the others carry on. What one location is lives in ``location.py``; the manifest in
``manifest.py``; verify and repair in ``checks.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mcp_supervisor.vault.checks import repair_locations, verify_locations
from mcp_supervisor.vault.crypto import IntegrityError, VaultError
from mcp_supervisor.vault.location import Location, ObjectStore
from mcp_supervisor.vault.manifest import BadObject, FileEntry, Manifest, WriteReport, new_snapshot_id
from mcp_supervisor.vault.retention import select_keep

__all__ = ["BadObject", "FileEntry", "Location", "Manifest", "SnapshotStore", "WriteReport"]


def _describe(exc: OSError) -> str:
    return f"{exc.strerror or type(exc).__name__} ({exc.filename or ''})".replace(" ()", "")


class SnapshotStore:
    """All locations of one vault. Synchronous: callers run it in a worker thread."""

    def __init__(self, locations: list[Path | ObjectStore], key: bytes) -> None:
        self.locations = [Location(Path(p) if isinstance(p, str) else p, key) for p in locations]

    def write(
        self, files: list[tuple[FileEntry, bytes]], reason: str, now: datetime | None = None, *, held: str | None = None
    ) -> WriteReport:
        now = now or datetime.now(UTC)
        manifest = Manifest(new_snapshot_id(now), now, reason, tuple(entry for entry, _ in files), held)
        report = WriteReport(manifest.id)
        for location in self.locations:
            try:
                location.store.ensure()
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
        return verify_locations(self.locations, self.manifests())

    def repair(self) -> tuple[list[str], list[BadObject]]:
        """Copy good objects over missing or corrupt ones from another location; then verify again."""
        repaired = repair_locations(self.locations, self.manifests(), self.read_file)
        return repaired, self.verify()

    def forget(
        self, *, keep_last: int, keep_daily: int, keep_weekly: int, keep_monthly: int
    ) -> dict[str, list[str]]:
        """Apply retention per location and collect unreferenced blobs."""
        removed: dict[str, list[str]] = {}
        for location in self.locations:
            if not location.store.exists():
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
