"""``[backup] locations`` as the snapshot store takes them: folders as paths, the rest as remote stores.

Why transports apart from stores: opening the vault first counts the snapshots present without the
key (a store with a zero key), then opens them with the key; both share one transport, so an sftp
location connects once.
"""

from __future__ import annotations

from pathlib import Path

from mcp_supervisor.config.fleet import remote_kind
from mcp_supervisor.config.models import BackupSettings
from mcp_supervisor.vault.location import ObjectStore
from mcp_supervisor.vault.remote import RemoteStore, Transport


def transports(settings: BackupSettings) -> list[Path | Transport]:
    """One entry per location: a folder's path, or the (not yet connected) transport of a remote."""
    opened: list[Path | Transport] = []
    for location in settings.locations:
        kind = remote_kind(location)
        if kind == "sftp":
            from mcp_supervisor.vault.remote_sftp import SFTPTransport

            opened.append(SFTPTransport(location, settings.sftp))
        elif kind == "rclone":
            from mcp_supervisor.vault.remote_rclone import RcloneTransport

            opened.append(RcloneTransport(location, settings.rclone))
        else:
            opened.append(Path(location))
    return opened


def places(opened: list[Path | Transport], key: bytes) -> list[Path | ObjectStore]:
    return [p if isinstance(p, Path) else RemoteStore(p, key) for p in opened]
