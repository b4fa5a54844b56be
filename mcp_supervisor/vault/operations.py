"""The vault's operations: backup, list, restore, verify and repair, as the API and the CLI call them.

Why async methods over a synchronous store: file I/O, hashing, key loading and AES run in a
worker thread so the event loop (probes, the control API, the watchdog) never stalls on a slow
disk; one lock serialises vault operations in this process, and lock files in each location
(``locks.py``) serialise them with other processes. Events are collected in the thread and
published on the loop afterwards (the bus is not thread-safe). What the daemon adds on top
(watching files, healing them, the schedule) is ``service.py``.

Secrets: results carry names, paths, hashes and sizes, never file contents or dotenv values.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mcp_supervisor.config import Config, WatchedConfig
from mcp_supervisor.logging import get_logger
from mcp_supervisor.vault.crypto import IntegrityError, VaultError, load_key
from mcp_supervisor.vault.filecheck import FileCheck, check_file
from mcp_supervisor.vault.manifest import FileEntry, Manifest, file_entry, sha256
from mcp_supervisor.vault.opening import NoBackupsYet, key_file_of, open_store
from mcp_supervisor.vault.placement import RestoreError, place, read_target
from mcp_supervisor.vault.snapshots import SnapshotStore
from mcp_supervisor.vault.state_files import collect as collect_state
from mcp_supervisor.vault.state_files import daemon_check, restore_groups
from mcp_supervisor.vault.validate import LossVerdict, Validation, judge_server_loss, merge_server_map, validate

log = get_logger("mcp_supervisor.vault")

EventCallback = Callable[[str, dict[str, Any]], None]
Events = list[tuple[str, dict[str, Any]]]


class VaultOperations:
    """One vault (``[backup]``) and the watched configs it keeps; ``service.VaultService`` adds the watcher."""

    def __init__(self, config: Config, on_event: EventCallback | None = None) -> None:
        self.config = config
        self.settings = config.backup
        self.watched = {c.name: c for c in config.configs}
        self.on_event = on_event or (lambda kind, data: None)
        self._store: SnapshotStore | None = None
        self._lock = asyncio.Lock()
        self._known_servers: dict[str, frozenset[str]] = {}
        self._last_backed_up: dict[str, str] = {}
        self._last_snapshot: dict[str, str] = {}
        self._alerted: dict[str, str] = {}
        self._reverted: dict[str, tuple[str, str]] = {}
        """After a server-loss restore: (digest of what we wrote, the snapshot holding what the user
        had): ``accept`` puts it back. The content is in the vault (``Manifest.held``), so this
        survives a restart (``VaultService._load_state`` finds it again)."""

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def key_file(self) -> Path:
        return key_file_of(self.settings)

    def _open_store(self, *, create_key: bool) -> SnapshotStore:
        """The store, its key checked against the snapshots present (sync: run in a thread)."""
        if self._store is None:
            self._store = open_store(self.settings, create_key=create_key)
        return self._store

    @property
    def store(self) -> SnapshotStore:
        return self._open_store(create_key=False)

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

    async def _call(self, work: Callable[..., Any], *args: Any) -> Any:
        """Run ``work(events, *args)`` in a thread; publish the events it collected on the loop."""
        events: Events = []
        try:
            return await asyncio.to_thread(work, events, *args)
        finally:
            for kind, data in events:
                self._emit(kind, **data)

    def check_file(self, watched: WatchedConfig) -> FileCheck:
        return check_file(watched)

    # --- backup --------------------------------------------------------------------------------

    async def backup(self, reason: str = "manual", *, accept: bool = False) -> dict[str, Any]:
        async with self._lock:
            result: dict[str, Any] = await self._call(self._backup_sync, reason, accept)
            return result

    def _backup_sync(self, events: Events, reason: str, accept: bool) -> dict[str, Any]:
        store = self._open_store(create_key=True)
        if accept:
            self._put_back_reverted(store, events)
        files: list[tuple[FileEntry, bytes]] = []
        servers: dict[str, frozenset[str]] = {}
        skipped: dict[str, str] = {}
        for watched in self.watched.values():
            check = self.check_file(watched)
            wanted_empty = check.map_missing_only and (accept or self._known_servers.get(watched.name) == frozenset())
            if (check.problem is not None and not wanted_empty) or check.content is None or check.info is None:
                skipped[watched.name] = check.problem or "unreadable"
                continue
            verdict = None if accept else self._judge(watched, check)
            if verdict is not None and verdict.action == "restore":
                skipped[watched.name] = f"{verdict.reason}: damage, not backed up (restore it, or keep it with: backup --accept)"
                continue
            if verdict is not None and verdict.action == "alert":
                self._alert(events, watched, verdict, check.digest)
            files.append((file_entry(watched.name, watched.path, check.content, check.info), check.content))
            if check.validation is not None and (check.validation.servers or wanted_empty):
                servers[watched.name] = check.validation.servers
        state, refused = collect_state(self.config.state_dir)  # the token store and tool contracts
        files += state
        skipped.update(refused)
        if not files and not skipped:
            raise VaultError("nothing to back up yet (no [[configs]], and no tokens or tool contracts in state_dir)")
        if not files:
            raise VaultError("nothing to back up: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
        report = store.write(files, reason)
        if report.copies:
            for entry, _ in files:
                self._last_backed_up[entry.name] = entry.sha256
                self._last_snapshot[entry.name] = report.snapshot_id
            self._known_servers.update(servers)
        safe = len(report.copies) >= self.settings.min_copies
        store.forget(
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
            "accepted": accept,
        }
        events.append(("backup", dict(result)))
        if report.failures:
            log.warning("backup location failed", failures=report.failures, snapshot=report.snapshot_id)
        return result

    def _put_back_reverted(self, store: SnapshotStore, events: Events) -> None:
        """``accept``: the servers the watcher put back were removed on purpose; undo its restore
        with the user's version, read back from the snapshot that holds it."""
        manifests = store.manifests() if self._reverted else {}
        for name, (restored, snapshot_id) in list(self._reverted.items()):
            del self._reverted[name]
            watched = self.watched.get(name)
            held = manifests.get(snapshot_id)
            entry = held[0].file(name) if held is not None else None
            if watched is None or entry is None:
                continue  # removed by retention: nothing to put back (the kept copy beside the file remains)
            if self.check_file(watched).digest != restored:
                continue  # changed since: what is there now is what gets accepted
            try:
                theirs = store.read_file(entry)
            except IntegrityError as exc:
                log.error("the held version cannot be read back; accepting what is there", config=name, error=str(exc))
                continue
            place(self.config.state_dir, watched.path, theirs, mode=None, uid=None, gid=None, label=None, only_regular=True)
            events.append(("accepted", {"config": name, "path": str(watched.path), "snapshot": snapshot_id}))

    def _hold(self, store: SnapshotStore, watched: WatchedConfig, check: FileCheck, restored: str, why: str) -> None:
        """Keep the version the watcher just undid in the vault, for ``backup --accept``."""
        if check.content is None or check.info is None:
            return
        entry = file_entry(watched.name, watched.path, check.content, check.info)
        report = store.write([(entry, check.content)], f"held for backup --accept: {why}", held=restored)
        if report.copies:
            self._reverted[watched.name] = (restored, report.snapshot_id)
        else:
            log.error("the undone version could not be kept in the vault; backup --accept cannot bring it back "
                      "(it is kept beside the file)", config=watched.name, failures=report.failures)

    async def list_snapshots(self) -> list[dict[str, Any]]:
        async with self._lock:
            try:
                manifests, unreadable = await asyncio.to_thread(self._list_sync)
            except NoBackupsYet:
                return []
        now = datetime.now(UTC)
        listed: list[dict[str, Any]] = [
            {
                "id": sid,
                "readable": True,
                "held": manifest.held is not None,
                "created": manifest.created.isoformat(),
                "age_s": round((now - manifest.created).total_seconds(), 1),
                "reason": manifest.reason,
                "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in manifest.files],
                "locations": holders,
                "copies": len(holders),
                "safe": len(holders) >= self.settings.min_copies,
            }
            for sid, (manifest, holders) in manifests.items()
        ]
        listed += [
            {
                "id": sid,
                "readable": False,
                "held": False,
                "problem": f"cannot decrypt: {problem}",
                "created": None,
                "age_s": None,
                "reason": None,
                "files": [],
                "locations": holders,
                "copies": 0,
                "safe": False,
            }
            for sid, (holders, problem) in unreadable.items()
        ]
        return sorted(listed, key=lambda s: s["id"], reverse=True)

    def _list_sync(self) -> tuple[dict[str, tuple[Manifest, list[str]]], dict[str, tuple[list[str], str]]]:
        store = self._open_store(create_key=False)
        manifests = store.manifests()
        return manifests, store.unreadable(set(manifests))

    # --- restore -------------------------------------------------------------------------------

    async def restore(self, name: str, snapshot_id: str | None = None, to: Path | str | None = None) -> dict[str, Any]:
        async with self._lock:
            result: dict[str, Any] = await self._call(
                self._restore_sync, name, snapshot_id, Path(to) if to else None, "manual", None
            )
            return result

    def _candidates(self, store: SnapshotStore, name: str, snapshot_id: str | None) -> list[tuple[Manifest, FileEntry]]:
        manifests = store.manifests()
        if snapshot_id is not None and snapshot_id not in manifests:
            raise RestoreError(f"snapshot {snapshot_id} not found (list them with: supervisorctl-mcp backups)")
        # a held version (what the watcher undid) is restored only when named
        chosen = [manifests[snapshot_id][0]] if snapshot_id else [m for m, _ in reversed(manifests.values()) if m.held is None]
        return [(m, entry) for m in chosen if (entry := m.file(name)) is not None]

    def _restore_sync(
        self, events: Events, name: str, snapshot_id: str | None, to: Path | None, why: str, label: str | None
    ) -> dict[str, Any]:
        watched = self._config(name)
        store = self._open_store(create_key=False)
        if to is not None and not to.is_absolute():
            to = Path.cwd() / to
        rejected: list[str] = []
        for manifest, entry in self._candidates(store, name, snapshot_id):
            try:
                content = store.read_file(entry)
            except IntegrityError as exc:
                rejected.append(f"{manifest.id}: {exc}")
                continue
            check = validate(watched.format, content, watched.required_keys)
            if not check.ok:
                rejected.append(f"{manifest.id}: content does not validate ({'; '.join(check.problems)})")
                continue
            result = self._put_back(watched, to, content, entry, manifest, check, why, label)
            result["skipped_snapshots"] = rejected
            events.append(("restore", dict(result)))
            log.warning("config restored", **{k: v for k, v in result.items() if k != "skipped_snapshots"})
            return result
        detail = "; ".join(rejected) if rejected else "no snapshot holds it"
        raise RestoreError(f"no valid backup of {name!r} to restore ({detail})")

    def _put_back(
        self,
        watched: WatchedConfig,
        to: Path | None,
        content: bytes,
        entry: FileEntry,
        manifest: Manifest,
        check: Validation,
        why: str,
        label: str | None,
    ) -> dict[str, Any]:
        target = to or watched.path
        mode = (entry.mode & 0o777) | stat.S_IRUSR | stat.S_IWUSR
        if watched.format == "dotenv" or watched.secret_keys is not None:
            mode = 0o600
        current = read_target(target, only_regular=to is not None)
        if label is None:
            label = "replaced" if current is not None and validate(watched.format, current, watched.required_keys).ok else "corrupt"
        partial = False
        if to is None and current is not None and check.server_key:
            merged = merge_server_map(current, content, check.server_key)
            if merged is not None and validate(watched.format, merged, watched.required_keys).ok:
                content, partial = merged, True
        # the recorded owner; manifests from before owners were recorded: the folder's owner
        uid, gid = (None, None) if to is not None else (entry.uid, entry.gid)
        kept = place(
            self.config.state_dir, target, content, mode=mode, uid=uid, gid=gid, label=label, only_regular=to is not None
        )
        digest = sha256(content)
        if to is None:
            if check.servers:
                self._known_servers[watched.name] = check.servers
            self._last_backed_up[watched.name] = digest if partial else entry.sha256
        return {
            "config": watched.name,
            "path": str(target),
            "snapshot": manifest.id,
            "kept_aside": kept,
            "only_server_map": partial,
            "reason": why,
        }

    async def restore_state(self, groups: list[str], snapshot_id: str | None = None) -> dict[str, Any]:
        """``state_dir/auth`` and/or ``state_dir/contracts`` from the vault (``state_files.py``)."""
        async with self._lock:
            result: dict[str, Any] = await asyncio.to_thread(self._restore_state_sync, groups, snapshot_id)
        log.warning("daemon state restored", **{r["group"]: r.get("restored", r.get("error")) for r in result["state"]})
        return result

    def _restore_state_sync(self, groups: list[str], snapshot_id: str | None) -> dict[str, Any]:
        store = self._open_store(create_key=False)
        check = daemon_check(load_key(self.key_file), self.key_file)
        return restore_groups(store, self.config.state_dir, groups, snapshot_id, check)

    # --- verify / repair -----------------------------------------------------------------------

    async def verify(self) -> dict[str, Any]:
        async with self._lock:
            try:
                bad = await asyncio.to_thread(lambda: self._open_store(create_key=False).verify())
            except NoBackupsYet:
                bad = []
        result = {"ok": not bad, "bad": [str(b) for b in bad]}
        self._emit("verify", **result)
        return result

    async def repair(self) -> dict[str, Any]:
        async with self._lock:
            repaired, bad = await asyncio.to_thread(lambda: self._open_store(create_key=False).repair())
        result = {"ok": not bad, "repaired": repaired, "bad": [str(b) for b in bad]}
        self._emit("repair", **result)
        return result

    def _judge(self, watched: WatchedConfig, check: FileCheck) -> LossVerdict | None:
        if check.validation is None or watched.format != "mcp-client-json":
            return None
        return judge_server_loss(self._known_servers.get(watched.name), check.validation, watched.on_server_loss)

    def _alert(self, events: Events, watched: WatchedConfig, verdict: LossVerdict, digest: str | None) -> None:
        """Say once per content which servers a kept edit removed, and how to bring them back."""
        name = watched.name
        if self._alerted.get(name) == digest:
            return
        self._alerted[name] = digest or ""
        snapshot = self._last_snapshot.get(name)
        events.append(("servers_removed", {
            "config": name,
            "path": str(watched.path),
            "removed": list(verdict.lost),
            "reason": verdict.reason,
            "snapshot": snapshot,
            "command": f"supervisorctl-mcp restore {name} --snapshot {snapshot}" if snapshot else None,
        }))
        log.warning("servers removed from a watched config; kept", config=name, removed=list(verdict.lost))
