"""The vault as the daemon, the API and the CLI use it: backup, list, restore, verify, repair, watch.

Why a service object with async methods over a synchronous store: file I/O and AES run in a worker
thread so the event loop (probes, the control API, the watchdog) never stalls on a slow disk, and
one lock serialises vault operations so retention never collects a blob a running backup needs.

Secrets: results carry names, paths, hashes and sizes, never file contents or dotenv values.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mcp_supervisor.config import Config, WatchedConfig
from mcp_supervisor.logging import get_logger
from mcp_supervisor.vault.crypto import IntegrityError, VaultError, load_key
from mcp_supervisor.vault.fsutil import atomic_write, file_lock
from mcp_supervisor.vault.snapshots import FileEntry, Manifest, SnapshotStore, file_entry, sha256
from mcp_supervisor.vault.validate import Validation, merge_server_map, validate

log = get_logger("mcp_supervisor.vault")

EventCallback = Callable[[str, dict[str, Any]], None]
POLL_INTERVAL = 0.1
DEBOUNCE = 0.3


class RestoreError(VaultError):
    pass


@dataclass(frozen=True)
class FileCheck:
    """What a watched file looks like now."""

    exists: bool
    content: bytes | None
    mode: int | None
    problem: str | None  # None when usable
    validation: Validation | None


def utc_stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


class VaultService:
    def __init__(self, config: Config, on_event: EventCallback | None = None) -> None:
        self.config = config
        self.settings = config.backup
        self.watched = {c.name: c for c in config.configs}
        self.on_event = on_event or (lambda kind, data: None)
        self._store: SnapshotStore | None = None
        self._lock = asyncio.Lock()
        self._known_servers: dict[str, frozenset[str]] = {}
        self._last_backed_up: dict[str, str] = {}

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def store(self) -> SnapshotStore:
        if self._store is None:
            if not self.settings.locations:
                raise VaultError("no backup location configured: add [backup] locations = [...] to the config")
            key = load_key(self.settings.key_file)
            self._store = SnapshotStore(list(self.settings.locations), key)
        return self._store

    def _config(self, name: str) -> WatchedConfig:
        try:
            return self.watched[name]
        except KeyError:
            known = ", ".join(sorted(self.watched)) or "none"
            raise RestoreError(f"no watched config named {name!r} (known: {known})") from None

    def _emit(self, kind: str, **data: Any) -> None:
        try:
            self.on_event(kind, data)
        except Exception:
            log.exception("vault event callback failed")

    # --- checks (sync, run in a thread) ---------------------------------------------------------

    def check_file(self, watched: WatchedConfig) -> FileCheck:
        path = watched.path
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return FileCheck(False, None, None, "file is missing", None)
        except OSError as exc:
            return FileCheck(False, None, None, f"cannot stat: {exc.strerror}", None)
        mode = stat.S_IMODE(info.st_mode)
        if not stat.S_ISREG(info.st_mode):
            return FileCheck(True, None, mode, "not a regular file (replaced by a directory or device?)", None)
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            return FileCheck(True, None, mode, f"cannot read: {exc.strerror}", None)
        if not mode & stat.S_IRUSR:
            return FileCheck(True, content, mode, f"mode {mode:04o}: the owner cannot read it", None)
        result = validate(watched.format, content, watched.required_keys, self._known_servers.get(watched.name))
        problem = None if result.ok else "; ".join(result.problems)
        return FileCheck(True, content, mode, problem, result)

    # --- backup --------------------------------------------------------------------------------

    async def backup(self, reason: str = "manual", *, accept: bool = False) -> dict[str, Any]:
        async with self._lock:
            return await asyncio.to_thread(self._backup_sync, reason, accept)

    def _backup_sync(self, reason: str, accept: bool) -> dict[str, Any]:
        files: list[tuple[FileEntry, bytes]] = []
        skipped: dict[str, str] = {}
        for watched in self.watched.values():
            if accept:
                self._known_servers.pop(watched.name, None)
            check = self.check_file(watched)
            if check.problem is not None or check.content is None:
                skipped[watched.name] = check.problem or "unreadable"
                continue
            files.append((file_entry(watched.name, watched.path, check.content), check.content))
            if check.validation is not None and check.validation.servers:
                self._known_servers[watched.name] = check.validation.servers
        if not files:
            raise VaultError("nothing to back up: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
        report = self.store.write(files, reason)
        for entry, _ in files:
            self._last_backed_up[entry.name] = entry.sha256
        safe = len(report.copies) >= self.settings.min_copies
        self.store.forget(
            keep_last=self.settings.keep_last,
            keep_daily=self.settings.keep_daily,
            keep_weekly=self.settings.keep_weekly,
            keep_monthly=self.settings.keep_monthly,
        )
        result = {
            "snapshot": report.snapshot_id,
            "reason": reason,
            "files": [e.name for e, _ in files],
            "skipped": skipped,
            "copies": report.copies,
            "failed_locations": report.failures,
            "safe": safe,
        }
        self._emit("backup", **result)
        if report.failures:
            log.warning("backup location failed", failures=report.failures, snapshot=report.snapshot_id)
        return result

    async def list_snapshots(self) -> list[dict[str, Any]]:
        async with self._lock:
            manifests = await asyncio.to_thread(self.store.manifests)
        now = datetime.now(UTC)
        return [
            {
                "id": sid,
                "created": manifest.created.isoformat(),
                "age_s": round((now - manifest.created).total_seconds(), 1),
                "reason": manifest.reason,
                "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in manifest.files],
                "locations": holders,
                "copies": len(holders),
                "safe": len(holders) >= self.settings.min_copies,
            }
            for sid, (manifest, holders) in reversed(list(manifests.items()))
        ]

    # --- restore -------------------------------------------------------------------------------

    async def restore(self, name: str, snapshot_id: str | None = None, to: Path | str | None = None) -> dict[str, Any]:
        async with self._lock:
            return await asyncio.to_thread(self._restore_sync, name, snapshot_id, Path(to) if to else None, "manual")

    def _candidates(self, name: str, snapshot_id: str | None) -> list[tuple[Manifest, FileEntry]]:
        manifests = self.store.manifests()
        if snapshot_id is not None and snapshot_id not in manifests:
            raise RestoreError(f"snapshot {snapshot_id} not found (list them with: supervisorctl-mcp backups)")
        chosen = [manifests[snapshot_id][0]] if snapshot_id else [m for m, _ in reversed(manifests.values())]
        return [(m, entry) for m in chosen if (entry := m.file(name)) is not None]

    def _restore_sync(self, name: str, snapshot_id: str | None, to: Path | None, why: str) -> dict[str, Any]:
        watched = self._config(name)
        target = to or watched.path
        rejected: list[str] = []
        for manifest, entry in self._candidates(name, snapshot_id):
            try:
                content = self.store.read_file(entry)
            except IntegrityError as exc:
                rejected.append(f"{manifest.id}: {exc}")
                continue
            check = validate(watched.format, content, watched.required_keys)
            if not check.ok:
                rejected.append(f"{manifest.id}: content does not validate ({'; '.join(check.problems)})")
                continue
            return self._put_back(watched, target, content, entry, manifest, check, why, rejected)
        detail = "; ".join(rejected) if rejected else "no snapshot holds it"
        raise RestoreError(f"no valid backup of {name!r} to restore ({detail})")

    def _put_back(
        self,
        watched: WatchedConfig,
        target: Path,
        content: bytes,
        entry: FileEntry,
        manifest: Manifest,
        check: Validation,
        why: str,
        rejected: list[str],
    ) -> dict[str, Any]:
        mode = (entry.mode & 0o7777) | stat.S_IRUSR | stat.S_IWUSR
        if watched.format == "dotenv" or watched.secret_keys is not None:
            mode = 0o600
        kept_aside: str | None = None
        partial = False
        with file_lock(target):
            current = self.check_file(watched) if target == watched.path else None
            if target.exists() or target.is_symlink():
                label = "corrupt" if current is None or current.problem else "replaced"
                aside = target.with_name(f"{target.name}.{label}-{utc_stamp()}")
                if current is not None and current.content is not None and check.server_key:
                    merged = merge_server_map(current.content, content, check.server_key)
                    if merged is not None and validate(watched.format, merged, watched.required_keys).ok:
                        content, partial = merged, True
                os.replace(target, aside)
                kept_aside = str(aside)
            atomic_write(target, content, mode)
        if check.servers:
            self._known_servers[watched.name] = check.servers
        self._last_backed_up[watched.name] = sha256(content) if partial else entry.sha256
        result = {
            "config": watched.name,
            "path": str(target),
            "snapshot": manifest.id,
            "kept_aside": kept_aside,
            "only_server_map": partial,
            "skipped_snapshots": rejected,
            "reason": why,
        }
        self._emit("restore", **result)
        log.warning("config restored", **{k: v for k, v in result.items() if k != "skipped_snapshots"})
        return result

    # --- verify / repair -----------------------------------------------------------------------

    async def verify(self) -> dict[str, Any]:
        async with self._lock:
            bad = await asyncio.to_thread(self.store.verify)
        result = {"ok": not bad, "bad": [str(b) for b in bad]}
        self._emit("verify", **result)
        return result

    async def repair(self) -> dict[str, Any]:
        async with self._lock:
            repaired, bad = await asyncio.to_thread(self.store.repair)
        result = {"ok": not bad, "repaired": repaired, "bad": [str(b) for b in bad]}
        self._emit("repair", **result)
        return result

    # --- the watcher ---------------------------------------------------------------------------

    async def heal(self, name: str, why: str = "watch") -> dict[str, Any] | None:
        """Check one file now: back up a valid change, restore a corrupt or missing file."""
        watched = self._config(name)
        async with self._lock:
            check = await asyncio.to_thread(self.check_file, watched)
            if check.problem is None and check.content is not None:
                digest = sha256(check.content)
                if self._last_backed_up.get(name) == digest:
                    return None
                return await asyncio.to_thread(self._backup_sync, f"change of {name}", False)
            self._emit("config_corrupt", config=name, path=str(watched.path), problem=check.problem)
            log.warning("watched config is damaged", config=name, problem=check.problem)
            try:
                return await asyncio.to_thread(self._restore_sync, name, None, None, why)
            except VaultError as exc:
                self._emit("restore_failed", config=name, error=str(exc))
                log.error("cannot restore watched config", config=name, error=str(exc))
                return {"config": name, "error": str(exc)}

    async def run(self) -> None:
        """Watch every file (stat polling with debounce), verify and back up on schedule."""
        if not self.watched:
            return
        await self._initial_backup()
        signatures = {name: _signature(w.path) for name, w in self.watched.items()}
        changed_at: dict[str, float] = {}
        next_check = {name: time.monotonic() + w.check_interval for name, w in self.watched.items()}
        next_verify = time.monotonic() + self.settings.verify_interval
        next_full = time.monotonic() + self.settings.full_backup_interval
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            now = time.monotonic()
            for name, watched in self.watched.items():
                signature = _signature(watched.path)
                if signature != signatures[name]:
                    signatures[name] = signature
                    changed_at[name] = now  # debounce: editors write in several steps
                due = name in changed_at and now - changed_at[name] >= DEBOUNCE
                if due or now >= next_check[name]:
                    changed_at.pop(name, None)
                    next_check[name] = now + watched.check_interval
                    await self.heal(name)
                    signatures[name] = _signature(watched.path)
            if now >= next_verify:
                next_verify = now + self.settings.verify_interval
                result = await self.verify()
                if not result["ok"]:
                    log.error("vault verify found bad objects; repairing", bad=result["bad"][:10])
                    await self.repair()
            if now >= next_full:
                next_full = now + self.settings.full_backup_interval
                await self.backup("scheduled full backup")

    async def _initial_backup(self) -> None:
        try:
            manifests = await asyncio.to_thread(self.store.manifests)
        except VaultError as exc:
            log.error("vault unavailable", error=str(exc))
            raise
        for manifest, _ in manifests.values():
            for entry in manifest.files:
                self._last_backed_up[entry.name] = entry.sha256
        for name in self.watched:
            await self.heal(name, why="startup check")


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino, info.st_mode)
