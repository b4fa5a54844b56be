"""The vault as a root daemon meets a user who owns one folder and wants to abuse it.

Run as root (the suite is); the user's moves (symlinks, renames) are made by a child process that
dropped to uid 65534, as they would be on a real machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.config import parse_config
from mcp_supervisor.vault.service import VaultService, utc_stamp
from tests.live_daemon import vault_watching, wait_until
from tests.test_vault import MCP_JSON

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the daemon's view of a user's folder")


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A scratch folder the user (65534) can reach: pytest's own is root-only (0700)."""
    root = Path(tempfile.mkdtemp(prefix="vault-root-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_nobody(*argv: str) -> None:
    """Run a command as uid/gid 65534 (the user making her moves)."""
    subprocess.run(list(argv), check=True, user=NOBODY, group=NOBODY, extra_groups=[], timeout=30)


def tree(root: Path, skip: set[Path]) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root`` (not under ``skip``) with type, owner, mode, size, mtime and hash."""
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in dirnames + filenames:
            path = here / name
            info = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else None
            link = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
            found[str(path)] = (info.st_mode, info.st_uid, info.st_size, info.st_mtime_ns, digest, link)
    return found


def foreign_setup(root: Path) -> tuple[Any, Path, Path]:
    """A folder of uid 65534 holding a watched client config, and a vault owned by root."""
    home = root / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    home.chmod(0o755)
    path = home / "mcp.json"
    path.write_text(json.dumps(MCP_JSON, indent=2))
    os.chown(path, NOBODY, NOBODY)
    path.chmod(0o640)
    outside = root / "outside"
    outside.mkdir()
    (outside / "root-config.json").write_text('{"mcpServers": {"evil": {"command": "/bin/sh"}}}')
    (outside / "root-config.json").chmod(0o600)
    config = parse_config(
        vault_watching(root, "cursor", path, extra='check_interval = "1h"'),
        environ={},
    )
    return config, home, outside


async def test_a_user_cannot_turn_the_root_daemon_against_files_outside_her_folder(tmp_path: Path) -> None:
    config, home, outside = foreign_setup(tmp_path)
    path = home / "mcp.json"
    original = path.read_bytes()
    events: list[tuple[str, dict[str, Any]]] = []
    vault = VaultService(config, on_event=lambda k, d: events.append((k, d)))
    task = asyncio.create_task(vault.run())
    try:
        await wait_until(lambda: any(k == "backup" for k, _ in events), timeout=30)
        skip = {home, tmp_path / "backup0", tmp_path / "state", tmp_path / "keys"}
        before = tree(tmp_path, skip)
        victims = [outside / f"victim-{i}" for i in range(8)]
        # the old lock name, temp names and kept-copy names of this second and the next few: all links out
        stamps = {utc_stamp()} | {time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() + s)) for s in range(1, 6)}
        planted = [".mcp.json.lock", ".mcp.json.tmp", "mcp.json.tmp"] + [f"mcp.json.corrupt-{s}" for s in stamps]
        for name, victim in zip(planted, victims * 2, strict=False):
            as_nobody("ln", "-s", str(victim), str(home / name))
        # the watched file itself becomes a link to a root-only file with a valid-looking config
        as_nobody("ln", "-sfn", str(outside / "root-config.json"), str(path))
        await wait_until(lambda: path.is_file() and not path.is_symlink() and path.read_bytes() == original, timeout=30)
        await wait_until(lambda: sum(k == "restore" for k, _ in events) >= 1, timeout=30)
        # and an ordinary damage afterwards, restored the same way
        as_nobody("truncate", "-s", "0", str(path))
        await wait_until(lambda: sum(k == "restore" for k, _ in events) >= 2, timeout=30)
        await wait_until(lambda: path.read_bytes() == original, timeout=30)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    info = path.lstat()
    assert stat.S_ISREG(info.st_mode) and (info.st_uid, info.st_gid) == (NOBODY, NOBODY)
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert tree(tmp_path, skip) == before, "nothing outside the user's folder was created or changed"
    assert not any(v.exists() for v in victims)
    kept = sorted(p for p in home.iterdir() if ".corrupt-" in p.name and p.name not in planted)
    assert len(kept) == 2 and kept[0].is_symlink() and os.readlink(kept[0]) == str(outside / "root-config.json")
    assert all(p.lstat().st_uid == NOBODY for p in home.iterdir()), "everything the daemon made there is hers"
    # the link was never read: its "evil" server is in no snapshot and no event
    assert "evil" not in json.dumps(events, default=str)
    problem = next(d["problem"] for k, d in events if k == "config_corrupt")
    assert "symbolic link" in problem


async def test_a_folder_replaced_by_a_link_is_refused_with_a_reason(tmp_path: Path) -> None:
    config, home, outside = foreign_setup(tmp_path)
    vault = VaultService(config)
    await vault.backup()
    skip = {tmp_path / "backup0", tmp_path / "state", tmp_path / "keys", home}
    before = tree(tmp_path, skip)
    as_nobody("mv", str(home / "mcp.json"), str(home / "moved.json"))
    # the user swaps her whole folder for a link to a root folder: /home/alice -> /etc style
    sub_config = parse_config(
        vault_watching(tmp_path, "cursor", home / "app" / "mcp.json"),
        environ={},
    )
    as_nobody("ln", "-s", str(outside), str(home / "app"))
    events: list[tuple[str, dict[str, Any]]] = []
    other = VaultService(sub_config, on_event=lambda k, d: events.append((k, d)))
    result = await other.heal("cursor")
    assert result is not None and "is a symbolic link in a folder owned by uid 65534" in result["error"]
    assert [k for k, _ in events] == ["config_corrupt", "restore_failed"]
    assert tree(tmp_path, skip) == before
    assert sorted(p.name for p in outside.iterdir()) == ["root-config.json"]


async def test_restore_as_root_into_a_root_folder_gets_the_recorded_owner_back(tmp_path: Path) -> None:
    config, home, _ = foreign_setup(tmp_path)
    os.chown(home, 0, 0)  # a root-owned folder holding a user's file (e.g. /etc/xdg/...)
    vault = VaultService(config)
    await vault.backup()
    path = home / "mcp.json"
    path.unlink()
    await vault.restore("cursor")
    info = path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY, NOBODY, 0o640)


async def test_two_damages_in_one_second_keep_both_copies(tmp_path: Path) -> None:
    config, home, _ = foreign_setup(tmp_path)
    vault = VaultService(config)
    await vault.backup()
    path = home / "mcp.json"
    for junk in (b"{first", b"{second"):
        path.write_bytes(junk)
        result = await vault.heal("cursor")
        assert result is not None and result["kept_aside"]
    kept = sorted(p for p in home.iterdir() if ".corrupt-" in p.name)
    assert sorted(p.read_bytes() for p in kept) == [b"{first", b"{second"]
    # the names never collide within a second (each heal's write now takes a helper process, so
    # the same-second case is checked on the naming itself, microseconds apart)
    from mcp_supervisor.vault.safefs import open_dir, set_aside

    folder = open_dir(str(home))
    try:
        (home / "again.json").write_bytes(b"1")
        first = set_aside(folder, "again.json", "corrupt")
        (home / "again.json").unlink()  # a new file in its place, as an app's save makes it
        (home / "again.json").write_bytes(b"2")
        second = set_aside(folder, "again.json", "corrupt")
    finally:
        os.close(folder)
    assert first and second and first != second
    assert first[: len("again.json.corrupt-YYYYmmddTHHMMSS")] == second[: len("again.json.corrupt-YYYYmmddTHHMMSS")]
    assert {(home / first).read_bytes(), (home / second).read_bytes()} == {b"1", b"2"}


def test_writes_in_a_users_folder_run_with_her_rights_only(tmp_path: Path) -> None:
    from mcp_supervisor.vault.owner_helper import put_file_as_owner
    from mcp_supervisor.vault.safefs import PathRefused, Put, open_dir

    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    folder = open_dir(str(home))
    try:  # root asks for a root-owned file: the helper, being her, cannot give it away
        put_file_as_owner(folder, "mcp.json", b"{}", Put(0o640, uid=0, gid=0))
    finally:
        os.close(folder)
    info = (home / "mcp.json").stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY, NOBODY, 0o640)
    home.chmod(0o500)  # her folder, but she took away her own write right: root would write anyway
    folder = open_dir(str(home))
    try:
        with pytest.raises(PathRefused, match=r"as uid 65534: .*Permission denied"):
            put_file_as_owner(folder, "other.json", b"{}", Put(0o600))
    finally:
        os.close(folder)
    assert not (home / "other.json").exists()


async def test_a_restore_into_a_users_folder_never_forks_the_threaded_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, home, _ = foreign_setup(tmp_path)
    vault = VaultService(config)
    await vault.backup()
    original = (home / "mcp.json").read_bytes()
    (home / "mcp.json").write_bytes(b"{broken")

    def no_fork() -> int:
        raise AssertionError("os.fork() called from the daemon's worker thread")

    monkeypatch.setattr(os, "fork", no_fork)
    result = await vault.heal("cursor")  # the vault's work runs in a worker thread
    assert result is not None and result.get("kept_aside"), result
    assert (home / "mcp.json").read_bytes() == original
    assert (home / "mcp.json").stat().st_uid == NOBODY
