"""The vault's watcher judging changes like a person, staying up when one file misbehaves, and the
vault's locations staying whole when several processes use them at once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.api.server import ApiServer, start_api_server
from mcp_supervisor.config import parse_config
from mcp_supervisor.vault import locks
from mcp_supervisor.vault.service import VaultService
from mcp_supervisor.vault.validate import parse_json, validate
from tests.live_daemon import vault_watching, wait_until
from tests.test_api import DrivenControl
from tests.test_vault import MCP_JSON

CLI = str(Path(sys.executable).parent / "supervisorctl-mcp")


def client_config(root: Path, policy: str | None = None, extra: str = "") -> Any:
    (root / "home").mkdir(parents=True, exist_ok=True)
    path = root / "home" / "claude_desktop_config.json"
    if not path.exists():
        path.write_text(json.dumps(MCP_JSON, indent=2))
    line = f'on_server_loss = "{policy}"' if policy else ""
    text = vault_watching(root, "claude", path, extra=f"{line}\n{extra}")
    (root / "sup.toml").write_text(text)
    return parse_config(text, environ={})


class Running:
    """A vault service whose watcher runs in the background, with the events it published."""

    def __init__(self, config: Any) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.vault = VaultService(config, on_event=lambda k, d: self.events.append((k, d)))
        self.task: asyncio.Task[None] | None = None

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [d for k, d in self.events if k == kind]

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.vault.run())
        await wait_until(lambda: bool(self.kinds("backup")), timeout=30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def without(name: str) -> str:
    return json.dumps({**MCP_JSON, "mcpServers": {k: v for k, v in MCP_JSON["mcpServers"].items() if k != name}})  # type: ignore[attr-defined]


async def test_one_server_deleted_by_hand_is_kept_deleted_and_named(tmp_path: Path) -> None:
    path = tmp_path / "home" / "claude_desktop_config.json"
    async with Running(client_config(tmp_path)) as running:
        first = running.kinds("backup")[0]["snapshot"]
        path.write_text(without("gitlab"))
        await wait_until(lambda: bool(running.kinds("servers_removed")) and len(running.kinds("backup")) >= 2, timeout=30)
    (event,) = running.kinds("servers_removed")
    assert event["removed"] == ["gitlab"] and event["snapshot"] == first
    assert event["command"] == f"supervisorctl-mcp restore claude --snapshot {first}"
    assert "gitlab" not in json.loads(path.read_text())["mcpServers"]
    assert not running.kinds("restore")
    # the command in the event does bring it back
    await running.vault.restore("claude", first)
    assert "gitlab" in json.loads(path.read_text())["mcpServers"]


async def test_claude_desktop_wipe_is_still_restored_and_policies_override(tmp_path: Path) -> None:
    path = tmp_path / "home" / "claude_desktop_config.json"
    async with Running(client_config(tmp_path)) as running:
        path.write_text(json.dumps({"theme": "light", "isUsingBuiltInNodeForMcp": True}))  # the app rewrote it
        await wait_until(lambda: bool(running.kinds("restore")), timeout=30)
    restored = json.loads(path.read_text())
    assert restored["mcpServers"] == MCP_JSON["mcpServers"] and restored["theme"] == "light"

    strict = tmp_path / "strict"
    async with Running(client_config(strict, "restore")) as running:
        (strict / "home" / "claude_desktop_config.json").write_text(without("jira"))
        await wait_until(lambda: bool(running.kinds("restore")), timeout=30)
    assert "jira" in json.loads((strict / "home" / "claude_desktop_config.json").read_text())["mcpServers"]

    relaxed = tmp_path / "relaxed"
    async with Running(client_config(relaxed, "alert")) as running:
        (relaxed / "home" / "claude_desktop_config.json").write_text('{"mcpServers": {}}')
        await wait_until(lambda: bool(running.kinds("servers_removed")), timeout=30)
    assert json.loads((relaxed / "home" / "claude_desktop_config.json").read_text()) == {"mcpServers": {}}
    assert not running.kinds("restore")


async def test_jsonc_strings_and_comments_survive_a_restore(tmp_path: Path) -> None:
    text = (
        "{\n  // VS Code keeps comments\n  \"servers\": {\n"
        '    "csv": {"type": "stdio", "command": "csvkit", "args": ["--sep=,]", "--x=,}"],},  /* trailing */\n'
        "  },\n}\n"
    )
    assert parse_json(text.encode(), jsonc=True)["servers"]["csv"]["args"] == ["--sep=,]", "--x=,}"]
    assert validate("mcp-client-json", text.encode()).ok
    (tmp_path / "home").mkdir()
    path = tmp_path / "home" / "mcp.json"
    path.write_text(text)
    config = parse_config(
        vault_watching(tmp_path, "vscode", path),
        environ={},
    )
    async with Running(config) as running:
        path.write_text(text[:50])
        await wait_until(lambda: bool(running.kinds("restore")), timeout=30)
    assert path.read_text() == text  # byte for byte: the string and the comments


async def test_one_broken_file_never_stops_the_watcher_guarding_the_others(tmp_path: Path) -> None:
    config = client_config(
        tmp_path,
        extra=f"""
[[configs]]
name = "env"
path = "{tmp_path}/other/.env"
format = "dotenv"
required_keys = ["TOKEN"]
""",
    )
    (tmp_path / "other").mkdir()
    env = tmp_path / "other" / ".env"
    env.write_text("TOKEN=abc\n")
    path = tmp_path / "home" / "claude_desktop_config.json"
    original = path.read_bytes()
    async with Running(config) as running:
        # the file becomes a populated folder: kept aside whole, the file comes back
        path.unlink()
        path.mkdir()
        (path / "inside.txt").write_text("keep me")
        await wait_until(lambda: path.is_file() and path.read_bytes() == original, timeout=30)
        kept = [p for p in path.parent.iterdir() if p.name.startswith(path.name + ".corrupt-")]
        assert len(kept) == 1 and (kept[0] / "inside.txt").read_text() == "keep me"
        # its folder becomes a file: this one cannot be restored, which is reported ...
        for p in list(path.parent.iterdir()):
            if p.is_dir():
                for q in p.iterdir():
                    q.unlink()
                p.rmdir()
            else:
                p.unlink()
        path.parent.rmdir()
        path.parent.write_text("not a folder")
        await wait_until(lambda: bool(running.kinds("restore_failed")), timeout=30)
        # ... and the other file is still guarded
        env.write_text("TOKEN=\n")
        await wait_until(lambda: env.read_text() == "TOKEN=abc\n", timeout=30)
    failed = running.kinds("restore_failed")[0]
    assert failed["config"] == "claude" and "not a directory" in failed["error"].lower()


# --- accept through the daemon ----------------------------------------------------------------------


@pytest.fixture
async def daemon(short_tmp: Path, tmp_path: Path) -> AsyncIterator[tuple[Path, Running]]:
    running = Running(client_config(tmp_path, "restore"))
    sock = short_tmp / "v.sock"
    server: ApiServer = await start_api_server(DrivenControl({"a": "healthy"}, critical={"a"}), sock, vault=running.vault)
    try:
        async with running:
            yield sock, running
    finally:
        await server.close()


async def test_backup_accept_goes_through_the_daemon_and_the_watcher_respects_it(
    daemon: tuple[Path, Running], tmp_path: Path
) -> None:
    sock, running = daemon
    path = tmp_path / "home" / "claude_desktop_config.json"
    path.write_text(without("gitlab"))
    await wait_until(lambda: bool(running.kinds("restore")), timeout=30)  # on_server_loss = "restore"
    assert "gitlab" in json.loads(path.read_text())["mcpServers"]
    proc = await asyncio.create_subprocess_exec(
        CLI, "--config", str(tmp_path / "sup.toml"), "--socket", str(sock), "backup", "--accept", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert json.loads(out)["accepted"] is True
    assert running.kinds("accepted")[0]["config"] == "claude"
    assert "gitlab" not in json.loads(path.read_text())["mcpServers"]  # the user's removal is back
    restores = len(running.kinds("restore"))
    assert await running.vault.heal("claude") is None  # the watcher sees nothing to undo
    await asyncio.sleep(0)
    assert len(running.kinds("restore")) == restores
    assert "gitlab" not in json.loads(path.read_text())["mcpServers"]


async def test_the_version_the_watcher_undid_is_kept_in_the_vault_and_accepted_after_a_restart(
    tmp_path: Path,
) -> None:
    config = client_config(tmp_path, "restore")
    path = tmp_path / "home" / "claude_desktop_config.json"
    theirs = without("gitlab")
    async with Running(config) as running:
        path.write_text(theirs)
        await wait_until(lambda: bool(running.kinds("restore")), timeout=30)  # on_server_loss = "restore"
    assert "gitlab" in json.loads(path.read_text())["mcpServers"]
    for kept in path.parent.glob(path.name + ".corrupt-*"):
        kept.unlink()  # not from the folder: the accepted version must come from the vault
    # a new daemon (nothing in memory): the undone version is a held snapshot, never restored unasked
    vault = VaultService(config)
    listed = await vault.list_snapshots()
    held = [s for s in listed if s["held"]]
    assert len(held) == 1 and held[0]["reason"].startswith("held for backup --accept")
    await vault.restore("claude")
    assert "gitlab" in json.loads(path.read_text())["mcpServers"]
    events: list[tuple[str, dict[str, Any]]] = []
    vault = VaultService(config, on_event=lambda k, d: events.append((k, d)))
    await asyncio.to_thread(vault._load_state)  # what the daemon does at start (run() then watches)
    result = await vault.backup(accept=True)
    assert result["accepted"] is True
    assert [d for k, d in events if k == "accepted"] == [
        {"config": "claude", "path": str(path), "snapshot": held[0]["id"]}
    ]
    assert path.read_text() == theirs  # the user's removal, byte for byte, from the vault
    assert not [s for s in await vault.list_snapshots() if s["held"] and s["id"] != held[0]["id"]]


# --- several processes on one location ------------------------------------------------------------


def test_two_backups_and_a_cleanup_at_once_leave_every_listed_snapshot_restorable(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    entries = {}
    for name in ("a", "b"):
        (tmp_path / "home" / f"{name}.json").write_text(json.dumps(MCP_JSON))
        entries[name] = f'[[configs]]\nname = "{name}"\npath = "{tmp_path}/home/{name}.json"\nformat = "mcp-client-json"\n'
    base = f"""
[supervisor]
state_dir = "{tmp_path}/state"
[backup]
key_file = "{tmp_path}/keys/vault.key"
locations = ["{tmp_path}/backup0"]
keep_last = 2
keep_daily = 0
keep_weekly = 0
keep_monthly = 0
"""
    (tmp_path / "all.toml").write_text(base + entries["a"] + entries["b"])
    for name in ("a", "b"):
        (tmp_path / f"{name}.toml").write_text(base + entries[name])
    asyncio.run(VaultService(parse_config((tmp_path / "all.toml").read_text(), environ={})).backup())  # the key
    backup_loop = """
import asyncio, json, sys
from mcp_supervisor.config import parse_config
from mcp_supervisor.vault.service import VaultService
config = parse_config(open(sys.argv[1]).read(), environ={})
async def main():
    vault = VaultService(config)
    path = config.configs[0].path
    for i in range(25):
        data = json.loads(open(path).read())
        data["theme"] = f"{config.configs[0].name}{i}"
        open(path, "w").write(json.dumps(data))
        await vault.backup(f"round {i}")
asyncio.run(main())
"""
    cleanup_loop = """
import sys, time
from mcp_supervisor.config import parse_config
from mcp_supervisor.vault.service import VaultService
vault = VaultService(parse_config(open(sys.argv[1]).read(), environ={}))
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    vault.store.forget(keep_last=2, keep_daily=0, keep_weekly=0, keep_monthly=0)
"""
    workers = [
        subprocess.Popen([sys.executable, "-c", backup_loop, str(tmp_path / f"{n}.toml")]) for n in ("a", "b")
    ] + [subprocess.Popen([sys.executable, "-c", cleanup_loop, str(tmp_path / "all.toml"), "8"])]
    for worker in workers:
        assert worker.wait(timeout=170) == 0
    vault = VaultService(parse_config((tmp_path / "all.toml").read_text(), environ={}))
    listed = asyncio.run(vault.list_snapshots())
    assert listed and all(s["readable"] for s in listed)
    (tmp_path / "out").mkdir()
    for snapshot in listed:
        for name in (f["name"] for f in snapshot["files"]):
            asyncio.run(vault.restore(name, snapshot["id"], to=tmp_path / "out" / f"{snapshot['id']}-{name}.json"))
    assert asyncio.run(vault.verify())["ok"]
    assert not list((tmp_path / "backup0" / "locks").iterdir()), "every lock was released"


def test_temp_files_of_interrupted_writes_and_dead_locks_are_collected(tmp_path: Path) -> None:
    config = client_config(tmp_path)
    vault = VaultService(config)
    asyncio.run(vault.backup())
    location = tmp_path / "backup0"
    shard = next((location / "objects").iterdir())
    old, fresh = shard / ".abc.k3j4h5g6.tmp", location / "snapshots" / ".x.q1w2e3r4.tmp"
    stale_old = location / "snapshots" / ".y.old00000.tmp"
    for path in (old, fresh, stale_old):
        path.write_bytes(b"half a write")
    past = time.time() - 3600
    os.utime(old, (past, past))
    os.utime(stale_old, (past, past))
    # a lock left by a process killed -9 on this host
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = location / "locks" / "deadbeef"
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "time": time.time(), "exclusive": True}))
    (tmp_path / "home" / "claude_desktop_config.json").write_text(without("jira"))
    result = asyncio.run(VaultService(config).backup())
    assert result["copies"] == [str(location)]
    assert not old.exists() and not stale_old.exists() and fresh.exists()
    assert not lock.exists()


def test_a_live_lock_is_named_with_its_holder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = client_config(tmp_path)
    asyncio.run(VaultService(config).backup())
    monkeypatch.setattr(locks, "WAIT_S", 0.5)
    lock = tmp_path / "backup0" / "locks" / "cafe"
    lock.write_text(json.dumps({"pid": 1, "host": os.uname().nodename, "time": time.time(), "exclusive": True}))
    result = asyncio.run(VaultService(config).backup())
    assert result["copies"] == [] and result["safe"] is False
    problem = result["failed_locations"][str(tmp_path / "backup0")]
    assert "exclusive lock of pid 1 on" in problem and str(lock) in problem


CLAUDE_CODE = {
    "numStartups": 41,
    "mcpServers": {"time": {"type": "stdio", "command": "uvx", "args": ["mcp-server-time"]}},
    "projects": {
        "/home/ana/analysis": {"allowedTools": [], "mcpServers": {
            "jira": {"command": "npx", "args": ["-y", "mcp-atlassian"]},
            "sheets": {"command": "uvx", "args": ["mcp-google-sheets"]}}},
        "/home/ana/site": {"allowedTools": ["Bash"], "mcpServers": {
            "crawler": {"type": "http", "url": "http://127.0.0.1:9000/mcp"}}},
    },
}


def claude_code_config(root: Path) -> Any:
    path = root / "home" / ".claude.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(CLAUDE_CODE, indent=2))
    text = vault_watching(root, "claude-code", path)
    return parse_config(text, environ={})


async def test_claude_code_one_projects_map_wiped_is_restored_for_that_project_only(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".claude.json"
    async with Running(claude_code_config(tmp_path)) as running:
        # Claude Code rewrites the file: counters and another project change, one project's map is wiped
        rewritten = json.loads(json.dumps(CLAUDE_CODE))
        rewritten["numStartups"] = 42
        rewritten["projects"]["/home/ana/site"]["allowedTools"] = ["Bash", "Edit"]
        rewritten["projects"]["/home/ana/analysis"]["mcpServers"] = {}
        path.write_text(json.dumps(rewritten, indent=2))
        await wait_until(lambda: bool(running.kinds("restore")), timeout=30)
    restored = json.loads(path.read_text())
    assert restored["projects"]["/home/ana/analysis"]["mcpServers"] == CLAUDE_CODE["projects"]["/home/ana/analysis"]["mcpServers"]  # type: ignore[index]
    assert restored["numStartups"] == 42  # every other key as the app wrote it
    assert restored["projects"]["/home/ana/site"]["allowedTools"] == ["Bash", "Edit"]
    assert restored["mcpServers"] == CLAUDE_CODE["mcpServers"]
    assert running.kinds("restore")[-1]["only_server_map"] is True


def test_claude_code_file_without_a_top_level_map_is_valid_and_names_project_servers() -> None:
    data = {"numStartups": 1, "projects": {"/p": {"mcpServers": {"a": {"command": "x"}}}}}
    check = validate("mcp-client-json", json.dumps(data).encode())
    assert check.ok and check.servers == frozenset({"projects[/p].a"})
