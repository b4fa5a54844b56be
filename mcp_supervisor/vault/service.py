"""The vault as the daemon runs it: every watched config guarded, verify and backup on schedule.

Why on top of ``operations.py``: the API and the CLI need the operations (backup, restore, ...);
only the daemon watches files (inotify and a slow re-check), heals a damaged one from the newest
backup that validates, backs up a valid change, and learns at start-up what was backed up last.
Why ``heal`` never raises: one file in a strange state must not stop the watcher guarding the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mcp_supervisor.logging import get_logger
from mcp_supervisor.vault.crypto import IntegrityError, VaultError
from mcp_supervisor.vault.manifest import FileEntry
from mcp_supervisor.vault.opening import NoBackupsYet
from mcp_supervisor.vault.operations import Events, VaultOperations
from mcp_supervisor.vault.placement import RestoreError
from mcp_supervisor.vault.state_files import collect as collect_state
from mcp_supervisor.vault.validate import validate
from mcp_supervisor.vault.watcher import FolderWatcher, watch_loop

__all__ = ["NoBackupsYet", "RestoreError", "VaultService", "utc_stamp"]

log = get_logger("mcp_supervisor.vault")

RETRY_INTERVAL = 30.0
STATE_CHECK_INTERVAL = 60.0
"""How often the state directory's token store and contracts are compared with the last backup."""
STATE_RETRY_INTERVAL = 1800.0
"""A state backup that reached no location is tried again after this (or at the next change)."""


def utc_stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


class VaultService(VaultOperations):
    """The vault operations plus the watcher the daemon runs (``run()``)."""

    _state_tried: tuple[frozenset[tuple[str, str]], float] | None = None
    """The last state change a backup was tried for, and when (monotonic)."""

    async def heal(self, name: str, why: str = "watch") -> dict[str, Any] | None:
        """Check one file now: back up a valid change, restore a damaged one; never raises.

        Why it never raises: one file in a strange state (a folder where the file was, a folder
        that became a link) must not stop the watcher guarding the others; it is reported.
        """
        watched = self._config(name)
        async with self._lock:
            try:
                result: dict[str, Any] | None = await self._call(self._heal_sync, name, why)
                return result
            except Exception as exc:
                error = str(exc) or type(exc).__name__
                log.error("checking a watched config failed", config=name, error=error)
                self._emit("vault_error", config=name, path=str(watched.path), error=error)
                return {"config": name, "error": error}

    def _heal_sync(self, events: Events, name: str, why: str) -> dict[str, Any] | None:
        watched = self._config(name)
        check = self.check_file(watched)
        verdict = self._judge(watched, check)
        damaged = check.problem is not None
        problem = check.problem
        if verdict is not None:
            damaged = verdict.action == "restore"
            if damaged:
                problem = f"{verdict.reason} (if on purpose: supervisorctl-mcp backup --accept)"
        if not damaged:
            if verdict is not None and verdict.action == "alert":
                self._alert(events, watched, verdict, check.digest)
            if check.problem is not None or check.digest == self._last_backed_up.get(name):
                return None
            return self._backup_sync(events, f"change of {name}", False)
        events.append(("config_corrupt", {"config": name, "path": str(watched.path), "problem": problem}))
        log.warning("watched config is damaged", config=name, problem=problem)
        try:
            result = self._restore_sync(events, name, None, None, why, "corrupt")
        except VaultError as exc:
            events.append(("restore_failed", {"config": name, "path": str(watched.path), "error": str(exc)}))
            log.error("cannot restore watched config", config=name, error=str(exc))
            return {"config": name, "error": str(exc)}
        if verdict is not None and verdict.action == "restore":
            self._hold(self._open_store(create_key=False), watched, check, self._last_backed_up[name], verdict.reason)
        return result

    async def run(self) -> None:
        """Watch every file (inotify + a slow re-check), verify and back up on schedule; back up the
        daemon's state (token store, tool contracts) within a minute of a change."""
        watcher = FolderWatcher({name: w.path for name, w in self.watched.items()})
        inotify = asyncio.create_task(watcher.run(), name="vault-inotify")
        try:
            await watcher.started.wait()  # a change during the startup checks is not missed
            await self._start()
            await watch_loop(
                watcher,
                {name: w.check_interval for name, w in self.watched.items()},
                self.heal,
                [
                    (self.settings.verify_interval, lambda: self._scheduled("verify", self._verify_and_repair)),
                    (
                        self.settings.full_backup_interval,
                        lambda: self._scheduled("full backup", lambda: self.backup("scheduled full backup")),
                    ),
                    (STATE_CHECK_INTERVAL, lambda: self._scheduled("state backup", self._back_up_changed_state)),
                ],
            )
        finally:
            inotify.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await inotify

    async def _back_up_changed_state(self) -> None:
        """A renewed token or an accepted contract reaches the vault within ``STATE_CHECK_INTERVAL``:
        a rotating refresh token restored from an older snapshot would be refused as already used."""
        files, _ = await asyncio.to_thread(collect_state, self.config.state_dir)
        changed = frozenset((e.name, e.sha256) for e, _ in files if self._last_backed_up.get(e.name) != e.sha256)
        if not changed:
            return
        tried = self._state_tried
        if tried is not None and tried[0] == changed and time.monotonic() - tried[1] < STATE_RETRY_INTERVAL:
            return  # the same change failed to reach a location: not one failed backup (and alert) a minute
        self._state_tried = (changed, time.monotonic())
        await self.backup("change of daemon state (tokens, tool contracts)")

    async def _verify_and_repair(self) -> None:
        result = await self.verify()
        if not result["ok"]:
            log.error("vault verify found bad objects; repairing", bad=result["bad"][:10])
            await self.repair()

    async def _scheduled(self, what: str, work: Callable[[], Any]) -> None:
        try:
            await work()
        except Exception as exc:
            log.error(f"scheduled vault {what} failed", error=str(exc))
            self._emit("vault_error", error=f"scheduled {what}: {exc}")

    async def _start(self) -> None:
        """Learn what was backed up last; wait (and say why) while the vault cannot be opened."""
        reported = None
        while True:
            try:
                async with self._lock:
                    await asyncio.to_thread(self._load_state)
                break
            except VaultError as exc:
                if str(exc) != reported:
                    reported = str(exc)
                    log.error("vault unavailable: watched configs are not guarded until it is fixed", error=reported)
                    self._emit("vault_error", error=reported)
                await asyncio.sleep(RETRY_INTERVAL)
        for name in self.watched:
            await self.heal(name, why="startup check")

    def _load_state(self) -> None:
        try:
            store = self._open_store(create_key=False)
        except NoBackupsYet:
            return
        newest: dict[str, FileEntry] = {}
        held: dict[str, tuple[str, str]] = {}
        for snapshot_id, (manifest, _) in store.manifests().items():  # oldest first
            for entry in manifest.files:
                if manifest.held is not None:
                    held[entry.name] = (manifest.held, snapshot_id)
                    continue
                self._last_backed_up[entry.name] = entry.sha256
                self._last_snapshot[entry.name] = snapshot_id
                newest[entry.name] = entry
                if entry.name in held and entry.sha256 != held[entry.name][0]:
                    del held[entry.name]  # a change after the undo: nothing left to accept
        self._reverted.update(held)
        for name, watched in self.watched.items():
            if watched.format != "mcp-client-json" or name not in newest:
                continue
            try:
                content = store.read_file(newest[name])
            except IntegrityError:
                continue
            validation = validate(watched.format, content, watched.required_keys)
            if validation.ok:
                self._known_servers[name] = validation.servers
