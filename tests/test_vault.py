"""The config vault: encryption, snapshots in several locations, restore, verify/repair, watcher.

Fault injection is the point: every test damages something real on disk and checks that nothing
is lost and nothing bad is ever restored.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_supervisor.config import parse_config
from mcp_supervisor.vault.crypto import (
    IntegrityError,
    KeyFileError,
    VaultError,
    decrypt,
    encrypt,
    export_key,
    import_key,
    load_key,
)
from mcp_supervisor.vault.retention import select_keep
from mcp_supervisor.vault.service import RestoreError, VaultService
from mcp_supervisor.vault.validate import judge_server_loss, parse_json, validate
from tests.live_daemon import wait_until

CANARY = "tok-CANARY-7f3a9c"
MCP_JSON = {
    "mcpServers": {
        "jira": {"command": "npx", "args": ["-y", "jira-mcp"], "env": {"JIRA_TOKEN": "${env:JIRA_TOKEN}"}},
        "gitlab": {"url": "http://127.0.0.1:9000/mcp"},
    },
    "theme": "dark",
}


def configs_toml(root: Path) -> str:
    """The two watched configs (a client JSON and a dotenv with the canary) under ``root/home``."""
    return f"""
[[configs]]
name = "cursor"
path = "{root}/home/mcp.json"
format = "mcp-client-json"
[[configs]]
name = "secrets"
path = "{root}/home/.env"
format = "dotenv"
required_keys = ["JIRA_TOKEN", "GITLAB_TOKEN"]
"""


def write_config(root: Path, locations: int = 2, min_copies: int = 1) -> Any:
    locs = ", ".join(f'"{root}/backup{i}"' for i in range(locations))
    text = f"""
[backup]
key_file = "{root}/keys/vault.key"
locations = [{locs}]
min_copies = {min_copies}
keep_last = 5
""" + configs_toml(root)
    (root / "home").mkdir(parents=True, exist_ok=True)
    (root / "home" / "mcp.json").write_text(json.dumps(MCP_JSON, indent=2))
    (root / "home" / ".env").write_text(f"JIRA_TOKEN={CANARY}\nGITLAB_TOKEN=glpat-abc\n")
    os.chmod(root / "home" / ".env", 0o600)
    return parse_config(text, environ={})


@pytest.fixture
def vault(tmp_path: Path) -> VaultService:
    return VaultService(write_config(tmp_path))


# --- crypto -----------------------------------------------------------------------------------------


def test_objects_authenticate_their_associated_data() -> None:
    key = os.urandom(32)
    blob = encrypt(key, b"hello", b"blob:abc")
    assert decrypt(key, blob, b"blob:abc") == b"hello"
    with pytest.raises(IntegrityError):
        decrypt(key, blob, b"blob:other")  # a swapped object
    with pytest.raises(IntegrityError):
        decrypt(os.urandom(32), blob, b"blob:abc")  # the wrong key
    flipped = bytearray(blob)
    flipped[-3] ^= 1
    with pytest.raises(IntegrityError):
        decrypt(key, bytes(flipped), b"blob:abc")
    with pytest.raises(IntegrityError, match="truncated"):
        decrypt(key, blob[:10], b"blob:abc")


def test_key_file_is_created_0600_and_loose_modes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "k" / "vault.key"
    with pytest.raises(KeyFileError, match="key import"):
        load_key(path)  # never made unless asked
    key = load_key(path, create=True)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path) == key
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match=f"chmod 600 {path}"):
        load_key(path)
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(KeyFileError, match="holds 5 bytes, expected 32"):
        load_key(path)


def test_key_export_import_round_trip_and_wrong_passphrase() -> None:
    key = os.urandom(32)
    exported = export_key(key, "correct horse")
    assert key.hex() not in exported.decode()
    assert import_key(exported, "correct horse") == key
    with pytest.raises(VaultError, match="wrong passphrase"):
        import_key(exported, "wrong")


# --- validation -----------------------------------------------------------------------------------


def test_jsonc_comments_and_trailing_commas_are_accepted() -> None:
    text = '{\n // VS Code\n "servers": {"a": {"type": "stdio", "command": "x // not a comment",},},\n}'
    assert parse_json(text.encode(), jsonc=True)["servers"]["a"]["command"] == "x // not a comment"
    assert validate("mcp-client-json", text.encode()).ok


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "not valid JSON"),
        (b'{"mcpServers": {"a": {"command": "x"}', "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"theme": "dark"}', "the server map is gone"),
        (b'{"mcpServers": {"a": {"args": []}}}', "mcpServers.a: has neither 'command' nor 'url'"),
        (bytes(range(256)), "not UTF-8"),
    ],
)
def test_client_json_damage_is_named(content: bytes, problem: str) -> None:
    result = validate("mcp-client-json", content)
    assert not result.ok and problem in "; ".join(result.problems)


def test_server_loss_is_judged_like_a_person_would() -> None:
    before = frozenset({"jira", "gitlab"})
    one_gone = validate("mcp-client-json", b'{"mcpServers": {"jira": {"command": "x"}}}')
    wiped = validate("mcp-client-json", b'{"mcpServers": {}}')
    gone = validate("mcp-client-json", b'{"theme": "dark"}')
    assert one_gone.ok
    edit = judge_server_loss(before, one_gone, None)
    assert edit is not None and edit.action == "alert" and edit.lost == ("gitlab",)
    assert judge_server_loss(before, wiped, None).action == "restore"  # type: ignore[union-attr]
    assert judge_server_loss(before, gone, None).action == "restore"  # type: ignore[union-attr]
    assert judge_server_loss(None, gone, None).action == "restore"  # type: ignore[union-attr]
    assert judge_server_loss(before, one_gone, "restore").action == "restore"  # type: ignore[union-attr]
    assert judge_server_loss(before, wiped, "alert").action == "alert"  # type: ignore[union-attr]
    assert judge_server_loss(before, gone, "ignore").action == "keep"  # type: ignore[union-attr]
    assert judge_server_loss(frozenset(), gone, None).action == "keep"  # type: ignore[union-attr]  # accepted as empty
    broken = validate("mcp-client-json", b'{"mcpServers": {"a": {}}}')
    assert judge_server_loss(before, broken, "ignore") is None  # damage of another kind is not a loss question


# --- snapshots, restore, verify, repair ----------------------------------------------------------


async def test_backup_writes_every_location_encrypted_and_deduplicated(vault: VaultService, tmp_path: Path) -> None:
    first = await vault.backup("test")
    second = await vault.backup("test again")
    assert first["safe"] and len(first["copies"]) == 2 and first["failed_locations"] == {}
    for loc in ("backup0", "backup1"):
        objects = list((tmp_path / loc / "objects").glob("*/*"))
        assert len(objects) == 2  # two files, stored once for both snapshots
        for path in objects:
            assert CANARY.encode() not in path.read_bytes()
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
    listed = await vault.list_snapshots()
    assert [s["id"] for s in listed] == [second["snapshot"], first["snapshot"]]
    assert all(s["copies"] == 2 for s in listed)
    assert CANARY not in json.dumps(listed)


async def test_restore_keeps_the_replaced_file_aside(vault: VaultService, tmp_path: Path) -> None:
    await vault.backup()
    env = tmp_path / "home" / ".env"
    env.write_text("JIRA_TOKEN=\n")
    result = await vault.restore("secrets")
    assert env.read_text() == f"JIRA_TOKEN={CANARY}\nGITLAB_TOKEN=glpat-abc\n"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    aside = Path(result["kept_aside"])
    assert aside.name.startswith(".env.corrupt-") and aside.read_text() == "JIRA_TOKEN=\n"
    assert CANARY not in json.dumps(result)


async def test_restore_to_another_path_and_unknown_names(vault: VaultService, tmp_path: Path) -> None:
    await vault.backup()
    out = tmp_path / "elsewhere" / "mcp.json"
    with pytest.raises(RestoreError, match=r"elsewhere does not exist \(restore --to creates no folders\)"):
        await vault.restore("cursor", to=out)
    assert not out.parent.exists()
    out.parent.mkdir()
    result = await vault.restore("cursor", to=out)
    assert json.loads(out.read_text()) == MCP_JSON and result["kept_aside"] is None
    again = await vault.restore("cursor", to=out)  # a valid file it replaces is "replaced", not "corrupt"
    assert Path(again["kept_aside"]).name.startswith("mcp.json.replaced-")
    out.write_text("{")
    third = await vault.restore("cursor", to=out)
    assert Path(third["kept_aside"]).name.startswith("mcp.json.corrupt-")
    assert len(list(out.parent.iterdir())) == 3  # nothing kept was overwritten
    with pytest.raises(RestoreError, match="no watched config named 'nope'"):
        await vault.restore("nope")
    with pytest.raises(RestoreError, match="snapshot x not found"):
        await vault.restore("cursor", snapshot_id="x")


async def test_restore_to_refuses_directories_devices_and_links(vault: VaultService, tmp_path: Path) -> None:
    await vault.backup()
    populated = tmp_path / "populated"
    populated.mkdir()
    (populated / "keep.txt").write_text("mine")
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    link = tmp_path / "link.json"
    link.symlink_to(victim)
    before = sorted(p.name for p in tmp_path.iterdir())
    for target, what in ((populated, "a directory"), (Path("/dev/null"), "a device node"), (link, "a symbolic link")):
        with pytest.raises(RestoreError, match=f"is {what}: restore --to writes only regular files"):
            await vault.restore("cursor", to=target)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing renamed, nothing created
    assert (populated / "keep.txt").read_text() == "mine" and victim.read_text() == "not yours"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and not list(Path("/dev").glob("null.*"))


async def test_corrupt_copies_are_never_restored_other_location_or_older_snapshot_used(
    vault: VaultService, tmp_path: Path
) -> None:
    original = (tmp_path / "home" / "mcp.json").read_bytes()
    await vault.backup()
    # corrupt location 0's blobs: every way
    blobs0 = sorted((tmp_path / "backup0" / "objects").glob("*/*"))
    data = bytearray(blobs0[0].read_bytes())
    data[40] ^= 0x10
    blobs0[0].write_bytes(bytes(data))
    blobs0[1].write_bytes(blobs0[1].read_bytes()[:20])
    (tmp_path / "home" / "mcp.json").write_text("{broken")
    await vault.restore("cursor")
    assert (tmp_path / "home" / "mcp.json").read_bytes() == original  # from location 1
    verify = await vault.verify()
    assert not verify["ok"] and any("backup0" in line for line in verify["bad"])
    repaired = await vault.repair()
    assert repaired["ok"] and repaired["repaired"]
    assert (await vault.verify())["ok"]


async def test_swapped_blobs_are_detected(vault: VaultService, tmp_path: Path) -> None:
    await vault.backup()
    for loc in ("backup0", "backup1"):
        a, b = sorted((tmp_path / loc / "objects").glob("*/*"))
        data_a, data_b = a.read_bytes(), b.read_bytes()
        a.write_bytes(data_b)
        b.write_bytes(data_a)
    (tmp_path / "home" / ".env").unlink()
    with pytest.raises(RestoreError, match="no valid backup"):
        await vault.restore("secrets")
    assert not (tmp_path / "home" / ".env").exists()  # nothing bad was written
    verify = await vault.verify()
    assert len(verify["bad"]) == 4  # two blobs in each of two locations, each named


async def test_flipped_manifest_falls_back_to_an_older_snapshot(vault: VaultService, tmp_path: Path) -> None:
    await vault.backup()
    good = (tmp_path / "home" / "mcp.json").read_bytes()
    changed = dict(MCP_JSON, theme="light")
    (tmp_path / "home" / "mcp.json").write_text(json.dumps(changed))
    newest = await vault.backup()
    for loc in ("backup0", "backup1"):
        manifest = tmp_path / loc / "snapshots" / newest["snapshot"]
        data = bytearray(manifest.read_bytes())
        data[-1] ^= 1
        manifest.write_bytes(bytes(data))
    (tmp_path / "home" / "mcp.json").write_text("")
    result = await vault.restore("cursor")
    assert result["snapshot"] != newest["snapshot"]
    assert (tmp_path / "home" / "mcp.json").read_bytes() == good


@pytest.mark.parametrize("loss", ["deleted", "wrong"])
async def test_a_lost_or_wrong_key_is_never_replaced_silently(vault: VaultService, tmp_path: Path, loss: str) -> None:
    await vault.backup()
    key_file = tmp_path / "keys" / "vault.key"
    if loss == "deleted":
        key_file.unlink()
    else:
        key_file.write_bytes(os.urandom(32))
    events: list[tuple[str, dict[str, Any]]] = []
    other = VaultService(vault.config, on_event=lambda k, d: events.append((k, d)))
    expected = "missing, but 1 snapshot" if loss == "deleted" else "decrypts none of the 1 snapshot"
    for call in (other.list_snapshots, other.backup, lambda: other.restore("cursor"), other.verify, other.repair):
        with pytest.raises(KeyFileError, match=expected) as caught:
            await call()
        assert str(key_file) in str(caught.value) and "supervisorctl-mcp key import" in str(caught.value)
    assert os.path.exists(key_file) == (loss == "wrong") and list(key_file.parent.iterdir()) == ([key_file] if loss == "wrong" else [])
    # the daemon's service: says so once, creates nothing, keeps waiting
    task = asyncio.create_task(other.run())
    try:
        await wait_until(lambda: any(k == "vault_error" for k, _ in events), 20)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert "key import" in next(d["error"] for k, d in events if k == "vault_error")
    assert os.path.exists(key_file) == (loss == "wrong")


async def test_only_a_backup_into_an_empty_vault_makes_a_key(tmp_path: Path) -> None:
    vault = VaultService(write_config(tmp_path))
    key_file = tmp_path / "keys" / "vault.key"
    assert await vault.list_snapshots() == []
    assert (await vault.verify())["ok"]
    with pytest.raises(VaultError, match="no backups yet"):
        await vault.restore("cursor")
    assert not key_file.exists()
    await vault.backup()
    assert key_file.exists() and stat.S_IMODE(key_file.stat().st_mode) == 0o600


async def test_backups_lists_snapshots_it_cannot_decrypt(vault: VaultService, tmp_path: Path) -> None:
    first = await vault.backup()
    second = await vault.backup()
    for loc in ("backup0", "backup1"):
        manifest = tmp_path / loc / "snapshots" / first["snapshot"]
        manifest.write_bytes(manifest.read_bytes()[:-2] + b"xx")
    listed = await VaultService(vault.config).list_snapshots()
    assert [(s["id"], s["readable"]) for s in listed] == [(second["snapshot"], True), (first["snapshot"], False)]
    assert "cannot decrypt" in listed[1]["problem"] and len(listed[1]["locations"]) == 2


async def test_read_only_location_does_not_stop_the_others(tmp_path: Path) -> None:
    vault = VaultService(write_config(tmp_path, locations=2, min_copies=2))
    (tmp_path / "backup1").mkdir()
    (tmp_path / "backup1").chmod(0o500)
    # root ignores directory modes: make it really unwritable with a file where a dir must go
    (tmp_path / "backup1").chmod(0o700)
    (tmp_path / "backup1" / "objects").write_text("not a directory")
    result = await vault.backup()
    assert result["copies"] == [str(tmp_path / "backup0")]
    assert str(tmp_path / "backup1") in result["failed_locations"]
    assert result["safe"] is False  # min_copies = 2


def test_full_disk_is_reported_and_leaves_no_torn_file(tmp_path: Path) -> None:
    """A disk that cannot take the write: RLIMIT_FSIZE in a child process makes writes fail (EFBIG)."""
    config_root = tmp_path
    write_config(config_root)
    (config_root / "home" / "big.json").write_text(json.dumps({"mcpServers": {"a": {"command": "x" * 20000}}}))
    script = f"""
import asyncio, json, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from mcp_supervisor.config import parse_config
from mcp_supervisor.vault.service import VaultService
from mcp_supervisor.vault.crypto import load_key
load_key({str(config_root / "keys" / "vault.key")!r}, create=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))
config = parse_config('''
[backup]
key_file = "{config_root}/keys/vault.key"
locations = ["{config_root}/backup0"]
[[configs]]
name = "big"
path = "{config_root}/home/big.json"
format = "mcp-client-json"
''', environ={{}})
async def main():
    try:
        print(json.dumps(await VaultService(config).backup()))
    except Exception as exc:
        print(json.dumps({{"error": str(exc)}}))
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["copies"] == [] and "File too large" in next(iter(result["failed_locations"].values()))
    assert not list((config_root / "backup0").glob("**/.*.tmp"))  # no temp file left behind


def test_kill_9_during_backups_leaves_only_complete_snapshots(tmp_path: Path) -> None:
    config = write_config(tmp_path, locations=2)
    script = f"""
import asyncio, json, os, sys
from mcp_supervisor.config import parse_config
from mcp_supervisor.vault.service import VaultService
config = parse_config(open({str(tmp_path / "sup.toml")!r}).read(), environ={{}})
async def main():
    vault = VaultService(config)
    i = 0
    while True:
        i += 1
        path = config.configs[0].path
        data = json.loads(open(path).read())
        data["theme"] = f"t{{i}}"
        open(path, "w").write(json.dumps(data))
        await vault.backup(f"round {{i}}")
asyncio.run(main())
"""
    (tmp_path / "sup.toml").write_text(_config_text(tmp_path))
    rng = random.Random(4)
    snapshots = tmp_path / "backup1" / "snapshots"
    for round_ in range(12):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if round_ == 0:  # a loaded machine may take seconds to start Python: kill only once it backs up
            deadline = time.monotonic() + 60
            while not (snapshots.is_dir() and any(snapshots.iterdir())) and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(0.7 + rng.random() * 0.4)
        child.kill()
        child.wait(timeout=10)
    vault = VaultService(config)
    listed = asyncio.run(vault.list_snapshots())
    assert len(listed) >= 1
    for snapshot in listed:  # every listed snapshot decrypts and verifies
        assert asyncio.run(vault.restore("cursor", snapshot["id"], to=tmp_path / "check.json"))
    # a kill between two locations leaves the newest snapshot in one of them only: repair copies it
    repaired = asyncio.run(vault.repair())
    assert repaired["ok"], repaired["bad"][:5]
    assert asyncio.run(vault.verify())["ok"]
    (tmp_path / "home" / "mcp.json").write_text("{")
    result = asyncio.run(vault.restore("cursor"))
    assert result["snapshot"] == listed[0]["id"]
    assert validate("mcp-client-json", (tmp_path / "home" / "mcp.json").read_bytes()).ok


def _config_text(root: Path) -> str:
    return f"""
[backup]
key_file = "{root}/keys/vault.key"
locations = ["{root}/backup0", "{root}/backup1"]
keep_last = 5
[[configs]]
name = "cursor"
path = "{root}/home/mcp.json"
format = "mcp-client-json"
"""


# --- retention ---------------------------------------------------------------------------------------

times = st.lists(st.integers(0, 400 * 24), min_size=0, max_size=60, unique=True)


@settings(max_examples=200, deadline=None)
@given(times, st.integers(1, 5), st.integers(0, 7), st.integers(0, 4), st.integers(0, 6))
def test_retention_keeps_the_newest_and_one_per_bucket(hours: list[int], last: int, daily: int, weekly: int, monthly: int) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    snaps = [(f"s{h:06d}", base + timedelta(hours=h)) for h in hours]
    keep = select_keep(snaps, keep_last=last, keep_daily=daily, keep_weekly=weekly, keep_monthly=monthly)
    ordered = sorted(snaps, key=lambda s: s[1], reverse=True)
    assert {sid for sid, _ in ordered[:last]} <= keep
    days = sorted({t.date() for _, t in snaps}, reverse=True)[:daily]
    for day in days:
        newest_that_day = max((s for s in snaps if s[1].date() == day), key=lambda s: s[1])
        assert newest_that_day[0] in keep
    assert len(keep) <= last + daily + weekly + monthly


# --- the watcher -------------------------------------------------------------------------------------


def _corrupt(kind: str, path: Path) -> None:
    if kind == "truncate":
        path.write_bytes(b"")
    elif kind == "cut":
        path.write_bytes(path.read_bytes()[:37])
    elif kind == "random":
        path.write_bytes(os.urandom(300))
    elif kind == "shape":
        path.write_text('{"mcpServers": ["jira", "gitlab"]}')
    elif kind == "wiped_map":  # what Claude Desktop does to its own file: an empty server map
        path.write_text('{"mcpServers": {}, "theme": "dark"}')
    elif kind == "map_gone":
        path.write_text('{"theme": "dark"}')
    elif kind == "delete":
        path.unlink()
    elif kind == "chmod000":
        path.chmod(0)
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "dotenv_missing_key":
        path.write_text(f"JIRA_TOKEN={CANARY}\n")


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        ("cursor", "truncate"),
        ("cursor", "cut"),
        ("cursor", "random"),
        ("cursor", "shape"),
        ("cursor", "wiped_map"),
        ("cursor", "map_gone"),
        ("cursor", "delete"),
        ("cursor", "chmod000"),
        ("cursor", "directory"),
        ("secrets", "dotenv_missing_key"),
        ("secrets", "delete"),
    ],
)
async def test_watcher_restores_every_kind_of_damage(tmp_path: Path, config: str, kind: str, capsys: Any) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    vault = VaultService(write_config(tmp_path), on_event=lambda k, d: events.append((k, d)))
    path = tmp_path / "home" / ("mcp.json" if config == "cursor" else ".env")
    original, mode = path.read_bytes(), stat.S_IMODE(path.stat().st_mode)
    task = asyncio.create_task(vault.run())
    try:
        await wait_until(lambda: any(k == "backup" for k, _ in events), 20)
        _corrupt(kind, path)
        await wait_until(
            lambda: path.is_file() and path.read_bytes() == original and stat.S_IMODE(path.stat().st_mode) & 0o400
            and any(k == "restore" for k, _ in events), 20, "the restore"
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert path.read_bytes() == original
    if kind != "chmod000":
        assert stat.S_IMODE(path.stat().st_mode) == mode
    aside = [p for p in path.parent.iterdir() if p.name.startswith(path.name + ".corrupt-")]
    if kind != "delete":
        assert len(aside) == 1, "the damaged copy is kept beside the original"
    restored = [d for k, d in events if k == "restore"]
    assert restored and restored[-1]["config"] == config
    assert CANARY not in json.dumps(events, default=str) + capsys.readouterr().out


async def test_a_valid_edit_is_backed_up_not_reverted(tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    vault = VaultService(write_config(tmp_path), on_event=lambda k, d: events.append((k, d)))
    path = tmp_path / "home" / "mcp.json"
    task = asyncio.create_task(vault.run())
    try:
        await wait_until(lambda: any(k == "backup" for k, _ in events), 20)
        edited = dict(MCP_JSON, mcpServers={**MCP_JSON["mcpServers"], "sheets": {"command": "uvx"}})  # type: ignore[dict-item]
        path.write_text(json.dumps(edited))
        await wait_until(lambda: sum(k == "backup" for k, _ in events) >= 2, 20)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert json.loads(path.read_text())["mcpServers"]["sheets"] == {"command": "uvx"}
    assert not [k for k, _ in events if k == "restore"]
    shutil.rmtree(tmp_path / "backup0")


async def test_only_the_server_map_is_restored_when_the_app_changed_the_rest(vault: VaultService, tmp_path: Path) -> None:
    """Claude Desktop style: the app rewrote its file (new settings) and dropped mcpServers."""
    await vault.backup()
    path = tmp_path / "home" / "mcp.json"
    path.write_text(json.dumps({"theme": "light", "windowSize": [800, 600]}))
    result = await vault.restore("cursor")
    restored = json.loads(path.read_text())
    assert result["only_server_map"] is True
    assert restored == {"theme": "light", "windowSize": [800, 600], "mcpServers": MCP_JSON["mcpServers"]}


def test_manifests_from_before_owners_were_recorded_still_read() -> None:
    from mcp_supervisor.vault.manifest import Manifest

    old = {"version": 1, "id": "s1", "created": "2026-01-01T00:00:00+00:00", "reason": "r",
           "files": [{"name": "c", "path": "/x", "sha256": "ab", "size": 1, "mode": 0o600, "mtime": 1.0}]}
    (entry,) = Manifest.from_bytes(json.dumps(old).encode()).files
    assert (entry.uid, entry.gid) == (None, None)  # restore then gives the file to the folder's owner
