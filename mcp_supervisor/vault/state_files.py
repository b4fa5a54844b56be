"""The daemon's own state in the vault: the OAuth token store and the accepted tool contracts.

Why in every snapshot: ``state_dir/auth/`` holds what only a person's ``login`` can make again
(client registrations, refresh tokens) and ``state_dir/contracts/`` the tool contracts someone
accepted; a lost or damaged state directory must not cost either. The files are backed up as they
are (token files are already AES-256-GCM encrypted; the snapshot encrypts them again), under entry
names ``auth/FILE`` and ``contracts/FILE``: a ``[[configs]]`` name cannot contain ``/``, so they
never collide with a watched config.

Why so careful with the files (an attacker owning one home directory): the state directory may
sit in a home (``~/.local/state``), and a root CLI may restore into it. Everything goes through
directory descriptors: the state directory is reached by ``safefs.open_dir`` (no link a user
planted is followed), ``auth``/``contracts`` are opened ``O_NOFOLLOW`` (a link or file in their
place is refused, never followed), and must belong to the state directory's owner and be closed to
others; files are read only when regular, not hard-linked elsewhere and owned by that owner.
A restore writes each file to an ``O_EXCL|O_NOFOLLOW`` temp file, 0600, owned by the state
directory's owner (the daemon's user), fsynced and renamed over the target: a reader (the daemon)
sees the old token file or the new one, never half of one. Before anything is written every file is
read back from the vault and checked (a token file must decrypt with the key the daemon will use);
one that does not is an error naming it and the fix, and nothing is written.

What a restore replaces: only files that are missing or damaged. A present file that checks out is
newer than any backup (a rotating refresh token already used once is refused by the authorization
server, and may make it revoke the whole grant), so it is kept, unless a snapshot is named
(``--snapshot ID``), which replaces everything that snapshot holds. Whatever is replaced is kept
beside it under a unique name (``safefs.set_aside``), never deleted.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp_supervisor.vault.crypto import KEY_BYTES, IntegrityError, VaultError
from mcp_supervisor.vault.manifest import FileEntry, Manifest, file_entry
from mcp_supervisor.vault.placement import RestoreError
from mcp_supervisor.vault.safefs import PathRefused, open_dir, read_regular, set_aside, write_replace
from mcp_supervisor.vault.snapshots import SnapshotStore

GROUPS = ("auth", "contracts")
MAX_STATE_FILE = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_NOT_STATE = re.compile(r"\.(corrupt|replaced|bad|old)-|\.(bad|tmp|lock)$")
"""Kept copies, set-aside files, temp and lock files: not state worth restoring."""

Check = Callable[[str, str, bytes, bytes | None], str | None]
"""(group, file name, content, the ``auth/token.key`` the daemon will find) -> what is wrong, or None."""
TOKEN_KEY = "token.key"
"""``auth/token.key``: the token store's own key when the daemon started before the vault had one."""


class StateRefused(VaultError):
    """The state directory or one of its folders is not safe to read or write; ``str()`` says why and the fix."""


def wanted(group: str, filename: str) -> bool:
    if not _FILE_NAME.match(filename) or _NOT_STATE.search(filename):
        return False
    return filename.endswith(".json") if group == "contracts" else True


def split_name(name: str) -> tuple[str, str] | None:
    """``("auth", "jira.token")`` for a state entry's name; None for a watched config's."""
    group, _, filename = name.partition("/")
    return (group, filename) if group in GROUPS and filename and wanted(group, filename) else None


def _state_path(state_dir: Path) -> str:
    return os.path.abspath(os.path.expanduser(str(state_dir)))


def _open_state(state_dir: Path) -> tuple[int, os.stat_result]:
    path = _state_path(state_dir)
    try:
        fd = open_dir(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StateRefused(f"state directory {path} cannot be opened safely: {exc}") from None
    info = os.fstat(fd)
    euid = os.geteuid()
    problem = None
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"is writable by others (mode {stat.S_IMODE(info.st_mode):04o}); fix: chmod go-w {path}"
    elif euid != 0 and info.st_uid != euid:
        problem = f"belongs to uid {info.st_uid}, not to this user (uid {euid}); run as the daemon's user"
    if problem:
        os.close(fd)
        raise StateRefused(f"state directory {path} {problem}")
    return fd, info


def _open_group(state_fd: int, owner: os.stat_result, path: str, group: str, *, create: bool) -> int | None:
    where = f"{path}/{group}"
    try:
        fd = os.open(group, _DIR_FLAGS, dir_fd=state_fd)
    except FileNotFoundError:
        if not create:
            return None
        os.mkdir(group, 0o700, dir_fd=state_fd)
        fd = os.open(group, _DIR_FLAGS, dir_fd=state_fd)
        if os.geteuid() == 0:
            os.fchown(fd, owner.st_uid, owner.st_gid)
        os.fchmod(fd, 0o700)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StateRefused(f"{where} is not a directory (a symbolic link or a file took its place): it is "
                               f"never followed; move it aside (mv {where} {where}.suspect) and try again") from None
        raise StateRefused(f"{where} cannot be opened: {exc.strerror}") from None
    info = os.fstat(fd)
    if info.st_uid != owner.st_uid or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise StateRefused(f"{where} must belong to the state directory's owner (uid {owner.st_uid}) and not be "
                           f"writable by others (it is uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}); "
                           f"fix: chown {owner.st_uid} {where} && chmod 700 {where}")
    return fd


def _read(group_fd: int, filename: str, owner: int) -> tuple[bytes, os.stat_result]:
    got = read_regular(group_fd, filename, limit=MAX_STATE_FILE)
    if got.info.st_uid != owner or got.info.st_nlink != 1:
        raise PathRefused(f"belongs to uid {got.info.st_uid} or has other links ({got.info.st_nlink}): not the "
                          "daemon's own file")
    return got.content, got.info


def collect(state_dir: Path) -> tuple[list[tuple[FileEntry, bytes]], dict[str, str]]:
    """Every state file to back up, and the ones refused (entry name -> why)."""
    try:
        state_fd, owner = _open_state(state_dir)
    except FileNotFoundError:
        return [], {}
    except StateRefused as exc:
        return [], {"state": str(exc)}
    path = _state_path(state_dir)
    files: list[tuple[FileEntry, bytes]] = []
    refused: dict[str, str] = {}
    try:
        for group in GROUPS:
            try:
                group_fd = _open_group(state_fd, owner, path, group, create=False)
            except StateRefused as exc:
                refused[f"{group}/"] = str(exc)
                continue
            if group_fd is None:
                continue
            try:
                for filename in sorted(os.listdir(group_fd)):
                    if not wanted(group, filename):
                        continue
                    name = f"{group}/{filename}"
                    try:
                        content, info = _read(group_fd, filename, owner.st_uid)
                    except FileNotFoundError:
                        continue  # replaced between the listing and the read: the next backup has it
                    except OSError as exc:
                        refused[name] = str(exc) if isinstance(exc, PathRefused) else (exc.strerror or str(exc))
                        continue
                    files.append((file_entry(name, Path(path, group, filename), content, info), content))
            finally:
                os.close(group_fd)
    finally:
        os.close(state_fd)
    return files, refused


def contract_problem(content: bytes) -> str | None:
    try:
        data = json.loads(content)
    except ValueError:
        return "not JSON"
    return None if isinstance(data, dict) else "not a JSON object"


@dataclass
class StateRestore:
    """What a restore of one group did (names are file names within the group's folder)."""

    group: str
    snapshot: str | None = None
    restored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept_current: list[str] = field(default_factory=list)
    kept_aside: dict[str, str] = field(default_factory=dict)
    skipped_snapshots: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "snapshot": self.snapshot, "restored": self.restored,
                "unchanged": self.unchanged, "kept_current": self.kept_current, "kept_aside": self.kept_aside,
                "skipped_snapshots": self.skipped_snapshots}


def _chosen(store: SnapshotStore, group: str, snapshot_id: str | None) -> tuple[Manifest | None, dict[str, bytes],
                                                                                list[str]]:
    """The newest snapshot holding the group whose every file of it reads back (or the named one)."""
    manifests = store.manifests()
    if snapshot_id is not None and snapshot_id not in manifests:
        raise RestoreError(f"snapshot {snapshot_id} not found (list them with: supervisorctl-mcp backups)")
    order = [manifests[snapshot_id][0]] if snapshot_id else [m for m, _ in reversed(manifests.values()) if m.held is None]
    rejected: list[str] = []
    for manifest in order:
        entries = [(parts[1], e) for e in manifest.files if (parts := split_name(e.name)) and parts[0] == group]
        if not entries:
            continue
        try:
            return manifest, {filename: store.read_file(entry) for filename, entry in entries}, rejected
        except IntegrityError as exc:
            rejected.append(f"{manifest.id}: {exc}")
    return None, {}, rejected


def restore_group(store: SnapshotStore, state_dir: Path, group: str, snapshot_id: str | None,
                  check: Check) -> StateRestore:
    """Put one group's files back from the vault (see the module's rules); raises before writing
    anything when a file from the vault fails ``check`` (a token the daemon's key cannot decrypt)."""
    manifest, contents, rejected = _chosen(store, group, snapshot_id)
    result = StateRestore(group, skipped_snapshots=rejected)
    if manifest is None:
        detail = f" ({'; '.join(rejected)})" if rejected else ""
        raise RestoreError(f"no snapshot holds state_dir/{group}/ to restore{detail}; back it up with: "
                           "supervisorctl-mcp backup")
    result.snapshot = manifest.id
    path = _state_path(state_dir)
    forced = snapshot_id is not None
    try:
        state_fd, owner = _open_state(state_dir)
    except FileNotFoundError:
        raise StateRefused(f"state directory {path} does not exist; create it (as the daemon's user, mode 0700) "
                           "or start the daemon once") from None
    try:
        group_fd = _open_group(state_fd, owner, path, group, create=True)
        assert group_fd is not None
        try:
            names = {*contents, TOKEN_KEY} if group == "auth" else set(contents)
            current = {name: _current(group_fd, name, owner.st_uid) for name in names}
            token_key = _token_key_after(contents, current, forced)
            bad = [f"{path}/{group}/{filename} (snapshot {manifest.id}): {problem}"
                   for filename, content in contents.items() if (problem := check(group, filename, content, token_key))]
            if bad:
                raise RestoreError("nothing restored: " + "; ".join(bad))
            for filename, content in sorted(contents.items()):
                _put(group_fd, owner, filename, content, current.get(filename), forced, token_key,
                     lambda name, data, key: check(group, name, data, key), result)
        finally:
            os.close(group_fd)
    finally:
        os.close(state_fd)
    return result


def _current(group_fd: int, filename: str, owner: int) -> bytes | None:
    """What is at ``filename`` now, if it is the daemon's own regular file."""
    try:
        return _read(group_fd, filename, owner)[0]
    except OSError:  # missing, a link, a folder, someone else's file: nothing usable
        return None


def _token_key_after(contents: dict[str, bytes], current: dict[str, bytes | None], forced: bool) -> bytes | None:
    """The ``auth/token.key`` the daemon will find once the restore is done (None: none, so the
    daemon uses the vault's key): a present key is kept unless the snapshot was named."""
    present = current.get(TOKEN_KEY)
    if present is not None and len(present) != KEY_BYTES:
        present = None
    if TOKEN_KEY not in contents or (present is not None and not forced):
        return present
    return contents[TOKEN_KEY] if len(contents[TOKEN_KEY]) == KEY_BYTES else present


def _put(group_fd: int, owner: os.stat_result, filename: str, content: bytes, current: bytes | None, forced: bool,
         token_key: bytes | None, check: Callable[[str, bytes, bytes | None], str | None],
         result: StateRestore) -> None:
    if current == content:
        result.unchanged.append(filename)
        return
    damaged = current is None or check(filename, current, token_key) is not None
    if not damaged and not forced:
        result.kept_current.append(filename)
        return
    kept = set_aside(group_fd, filename, "corrupt" if damaged else "replaced")
    if kept is not None:
        result.kept_aside[filename] = kept
    write_replace(group_fd, filename, content, 0o600, owner.st_uid, owner.st_gid)
    result.restored.append(filename)


def daemon_check(vault_key: bytes, key_file: Path) -> Check:
    """The checks of a restore: a contract is a JSON object; a token file decrypts with the key
    the daemon will use (``auth.store.token_key``: ``auth/token.key`` when there is one, else the
    vault's, which a restore has just opened); ``token.key`` itself is a 256-bit key."""

    def check(group: str, filename: str, content: bytes, token_key: bytes | None) -> str | None:
        if group == "contracts":
            return contract_problem(content)
        if filename == TOKEN_KEY:
            return None if len(content) == KEY_BYTES else f"not a {KEY_BYTES * 8}-bit key ({len(content)} bytes)"
        if filename.endswith(".token"):
            from mcp_supervisor.auth.store import token_file_opens  # the SDK's models: only when restoring tokens

            server = filename[: -len(".token")]
            if not token_file_opens(token_key or vault_key, server, content):
                which = "state_dir/auth/token.key" if token_key else f"the vault key {key_file}"
                return (f"the daemon's key ({which}) cannot decrypt it (it was encrypted with another key); fix: "
                        "put that key back (supervisorctl-mcp key import FILE --force, or restore the "
                        "token.key of the same snapshot with --snapshot ID) and restore again, or let the daemon "
                        f"obtain a new token for {server} (a machine grant needs nothing; a person's grant: "
                        f"supervisorctl-mcp login {server})")
        return None

    return check


def restore_groups(store: SnapshotStore, state_dir: Path, groups: list[str], snapshot_id: str | None,
                   check: Check) -> dict[str, Any]:
    """``restore --state``: each group restored on its own; ``ok`` only when every one was."""
    results: list[dict[str, Any]] = []
    for group in groups:
        try:
            results.append(restore_group(store, state_dir, group, snapshot_id, check).to_json())
        except VaultError as exc:
            results.append({"group": group, "error": str(exc)})
    return {"ok": all("error" not in r for r in results), "state": results}
