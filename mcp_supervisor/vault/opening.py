"""Opening the vault: the key file checked against the snapshots that are there.

Why the key is guarded: a new key silently made over a lost one would orphan every snapshot, so
only ``backup`` on an empty vault creates one; anything else names the key file and
``key import``. And a key that opens none of the snapshots present is the wrong key, said so
before anything is written with it.
"""

from __future__ import annotations

import os
from pathlib import Path

from mcp_supervisor.config.models import BackupSettings
from mcp_supervisor.vault.crypto import KeyFileError, VaultError, load_key
from mcp_supervisor.vault.placement import RestoreError
from mcp_supervisor.vault.places import places, transports
from mcp_supervisor.vault.snapshots import SnapshotStore


class NoBackupsYet(RestoreError):
    """No key file and no snapshot anywhere: nothing was ever backed up."""


def key_file_of(settings: BackupSettings) -> Path:
    return Path(os.path.expanduser(str(settings.key_file)))


def open_store(settings: BackupSettings, *, create_key: bool) -> SnapshotStore:
    """The store of ``[backup]``, its key checked against the snapshots present (sync)."""
    if not settings.locations:
        raise VaultError("no backup location configured: add [backup] locations = [...] to the config")
    opened = transports(settings)
    count = SnapshotStore(places(opened, bytes(32)), bytes(32)).snapshot_count()
    where = ", ".join(settings.locations)
    key_file = key_file_of(settings)
    if not os.path.lexists(key_file):
        if count:
            raise KeyFileError(
                f"key file {key_file} is missing, but {count} snapshot(s) in {where} were encrypted with it; "
                "no new key was made (it would orphan them). Put the key back with: "
                "supervisorctl-mcp key import FILE (the copy saved with 'key export')"
            )
        if not create_key:
            raise NoBackupsYet(
                f"no backups yet: no snapshot in {where} and no key file {key_file}; "
                "make the first with: supervisorctl-mcp backup"
            )
        key = load_key(key_file, create=True)
    else:
        key = load_key(key_file, create=False)
    store = SnapshotStore(places(opened, key), key)
    if count and not store.key_opens_any():
        raise KeyFileError(
            f"key file {key_file} decrypts none of the {count} snapshot(s) in {where}: it is not the key "
            "they were made with (or every manifest is damaged). Put the right key back with: "
            "supervisorctl-mcp key import FILE --force"
        )
    return store
