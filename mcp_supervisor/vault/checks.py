"""Verify and repair: read back every object of every location, and mend one copy from another.

Why a module of its own: these are the vault's slow, exhaustive paths (every byte decrypted
again, because bit rot changes neither size nor mtime), run on a schedule or by a person; the
write and read paths in ``snapshots.py`` stay short.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from mcp_supervisor.vault.crypto import IntegrityError, VaultError
from mcp_supervisor.vault.location import Location
from mcp_supervisor.vault.manifest import BadObject, FileEntry, Manifest

Manifests = dict[str, tuple[Manifest, list[str]]]
"""snapshot id -> (a readable manifest, the locations holding a readable copy)"""


def verify_locations(locations: list[Location], good_manifests: Manifests) -> list[BadObject]:
    """Decrypt every manifest and blob in every location; name each bad one.

    ``good_manifests`` (readable somewhere) let a location whose own manifest is damaged still
    have its blobs checked.
    """
    bad: list[BadObject] = []
    all_ids = sorted({sid for loc in locations for sid in loc.snapshot_ids()})
    for location in locations:
        checked: set[str] = set()
        try:
            with location.shared():
                _verify_location(location, all_ids, good_manifests, checked, bad)
        except (OSError, VaultError) as exc:
            bad.append(BadObject(str(location), None, None, "location", str(exc)))
    return bad


def _verify_location(
    location: Location, all_ids: list[str], good_manifests: Manifests, checked: set[str], bad: list[BadObject]
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


def repair_locations(
    locations: list[Location], manifests: Manifests, read_file: Callable[[FileEntry], bytes]
) -> list[str]:
    """Copy good objects over missing or corrupt ones; ``read_file`` finds a good copy anywhere.

    Returns what was mended, one line each (the caller verifies again afterwards).
    """
    repaired: list[str] = []
    with contextlib.ExitStack() as stack:
        for location in locations:
            with contextlib.suppress(OSError, VaultError):
                stack.enter_context(location.shared())
        for snapshot_id, (manifest, _holders) in manifests.items():
            for location in locations:
                _repair_snapshot(location, snapshot_id, manifest, read_file, repaired)
    return repaired


def _repair_snapshot(
    location: Location,
    snapshot_id: str,
    manifest: Manifest,
    read_file: Callable[[FileEntry], bytes],
    repaired: list[str],
) -> None:
    try:
        location.read_manifest(snapshot_id, fresh=True)
    except (OSError, IntegrityError):
        try:
            location.write_manifest(manifest)
            repaired.append(f"{location}: snapshot {snapshot_id}: manifest")
        except OSError:
            return
    for entry in manifest.files:
        try:
            location.read_object(entry.sha256)
        except (OSError, IntegrityError):
            try:
                location.replace_object(entry.sha256, read_file(entry))
                repaired.append(f"{location}: snapshot {snapshot_id}: {entry.name}")
            except (OSError, IntegrityError):
                continue
