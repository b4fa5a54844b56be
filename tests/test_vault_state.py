"""The daemon's token store and tool contracts in the vault: backed up, restored, never followed.

The story: the state directory loses its ``auth/`` folder (a bad cleanup script, a disk error).
``supervisorctl-mcp restore --state auth`` puts the encrypted token files back from the newest
snapshot, atomically, 0600, owned by the daemon's user, and the daemon's own token storage reads the
token again. A token file the daemon's key cannot open is refused before anything is written,
naming the file and the fix. And an attacker who owns the state directory's neighbourhood cannot
make the vault read or write through a link.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.auth import OAuthToken

from mcp_supervisor.auth.store import EncryptedTokenStorage
from mcp_supervisor.vault.crypto import load_key

CLI = str(Path(sys.executable).parent / "supervisorctl-mcp")
ACCESS = "eyJhbGciOiJSUzI1NiJ9.access-token-text-4c1d.sig"
REFRESH = "refresh-token-text-9e0b"


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "--config", str(config), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"})


def setup(tmp_path: Path, state_owner: int | None = None) -> tuple[Path, Path, bytes]:
    """A vault without any [[configs]], a state dir with one token file and one contract."""
    config = tmp_path / "sup.toml"
    state = tmp_path / "state"
    config.write_text(f"""
[supervisor]
state_dir = "{state}"
socket = "{tmp_path}/ctl.sock"
[backup]
key_file = "{tmp_path}/keys/vault.key"
locations = ["{tmp_path}/backup0", "{tmp_path}/backup1"]
""")
    key = load_key(tmp_path / "keys" / "vault.key", create=True)
    state.mkdir(mode=0o700)
    storage = EncryptedTokenStorage(state, "jira", key)
    asyncio.run(storage.set_tokens(OAuthToken(access_token=ACCESS, refresh_token=REFRESH, expires_in=3600)))
    contracts = state / "contracts"
    contracts.mkdir(mode=0o700)
    (contracts / "jira.json").write_text(json.dumps({"seen": {"create_issue": {"description": "abc"}}}))
    (contracts / "jira.json").chmod(0o600)
    if state_owner is not None:
        for path in [state, *state.rglob("*")]:
            os.chown(path, state_owner, state_owner)
    return config, state, key


def read_back(state: Path, key: bytes) -> OAuthToken | None:
    """What the daemon's token owner reads at start (``TokenOwner.load``)."""
    return asyncio.run(EncryptedTokenStorage(state, "jira", key).get_tokens())


def test_deleted_token_store_comes_back_whole_and_the_daemon_reads_the_token(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else None
    config, state, key = setup(tmp_path, state_owner=nobody)
    original = (state / "auth" / "jira.token").read_bytes()
    backup = run(config, "backup", "--json")
    assert backup.returncode == 0, backup.stderr
    files = json.loads(backup.stdout)["files"]
    assert "auth/jira.token" in files and "contracts/jira.json" in files, files
    listed = run(config, "backups", "--json").stdout
    assert ACCESS not in listed and REFRESH not in listed
    assert "auth/ (1 file), contracts/ (1 file)" in run(config, "backups").stdout

    shutil.rmtree(state / "auth")
    (state / "contracts" / "jira.json").write_text("{ torn")
    restored = run(config, "restore", "--state", "all")
    assert restored.returncode == 0, restored.stderr
    assert "restored jira.token" in restored.stdout and "restored jira.json" in restored.stdout, restored.stdout
    token_file = state / "auth" / "jira.token"
    info = token_file.stat()
    assert token_file.read_bytes() == original and info.st_mode & 0o777 == 0o600
    assert (state / "auth").stat().st_mode & 0o777 == 0o700
    owner = os.geteuid() if nobody is None else nobody
    assert info.st_uid == owner and (state / "auth").stat().st_uid == owner  # the daemon's user, not root
    token = read_back(state, key)
    assert token is not None and token.access_token == ACCESS and token.refresh_token == REFRESH
    assert json.loads((state / "contracts" / "jira.json").read_text())["seen"]
    kept = [p.name for p in (state / "contracts").iterdir() if ".corrupt-" in p.name]
    assert len(kept) == 1 and (state / "contracts" / kept[0]).read_text() == "{ torn"  # never deleted
    assert not [p for p in state.rglob(".*.tmp")]


def test_a_newer_token_is_kept_unless_the_snapshot_is_named(tmp_path: Path) -> None:
    config, state, key = setup(tmp_path)
    snapshot = json.loads(run(config, "backup", "--json").stdout)["snapshot"]
    storage = EncryptedTokenStorage(state, "jira", key)  # a refresh since: the rotated token is the live one
    asyncio.run(storage.set_tokens(OAuthToken(access_token="newer-access", refresh_token="newer-refresh")))
    kept = run(config, "restore", "--state", "auth")
    assert kept.returncode == 0 and "kept (present and readable" in kept.stdout, kept.stdout
    assert read_back(state, key).refresh_token == "newer-refresh"  # type: ignore[union-attr]
    named = run(config, "restore", "--state", "auth", "--snapshot", snapshot, "--json")
    answer = json.loads(named.stdout)["state"][0]
    assert answer["restored"] == ["jira.token"] and ".replaced-" in answer["kept_aside"]["jira.token"]
    assert read_back(state, key).refresh_token == REFRESH  # type: ignore[union-attr]


def test_a_token_file_the_daemons_key_cannot_open_is_refused_naming_file_and_fix(tmp_path: Path) -> None:
    config, state, _ = setup(tmp_path)
    other = EncryptedTokenStorage(state, "gitlab", os.urandom(32))  # made under another key
    asyncio.run(other.set_tokens(OAuthToken(access_token="other-access")))
    assert run(config, "backup").returncode == 0
    shutil.rmtree(state / "auth")
    refused = run(config, "restore", "--state", "auth")
    assert refused.returncode == 1
    assert f"{state}/auth/gitlab.token" in refused.stderr and "key import" in refused.stderr, refused.stderr
    assert "supervisorctl-mcp login gitlab" in refused.stderr
    assert not (state / "auth").exists() or not list((state / "auth").iterdir())  # nothing half-restored


def test_links_in_the_state_directory_are_never_followed(tmp_path: Path) -> None:
    config, state, _ = setup(tmp_path)
    assert run(config, "backup").returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim"
    victim.write_text("not the vault's to touch")
    # the token file replaced by a link: restored as a regular file, the link kept aside, its target untouched
    token = state / "auth" / "jira.token"
    token.unlink()
    token.symlink_to(victim)
    restored = run(config, "restore", "--state", "auth")
    assert restored.returncode == 0, restored.stderr
    assert not token.is_symlink() and token.stat().st_mode & 0o777 == 0o600
    assert victim.read_text() == "not the vault's to touch"
    # the auth folder replaced by a link: a backup leaves it out saying why, a restore refuses to follow it
    shutil.rmtree(state / "auth")
    (state / "auth").symlink_to(elsewhere)
    backup = run(config, "backup", "--json")
    assert backup.returncode == 1 and "auth/" in json.loads(backup.stdout)["skipped"], backup.stdout
    refused = run(config, "restore", "--state", "auth")
    assert refused.returncode == 1 and "is not a directory" in refused.stderr and "move it aside" in refused.stderr
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim"]
    # a state directory others may write to: refused, with the fix
    (state / "auth").unlink()
    state.chmod(0o777)
    try:
        loose = run(config, "restore", "--state", "auth")
        assert loose.returncode == 1 and "writable by others" in loose.stderr and "chmod go-w" in loose.stderr
    finally:
        state.chmod(0o700)


@pytest.mark.parametrize("args", [["restore"], ["restore", "x", "--state", "auth"]])
def test_restore_needs_one_of_config_or_state(tmp_path: Path, args: list[str]) -> None:
    config, _, _ = setup(tmp_path)
    answer = run(config, *args)
    assert answer.returncode == 2 and "--state auth|contracts|all" in answer.stderr


def test_the_daemon_backs_up_changed_state_once_per_change(tmp_path: Path) -> None:
    """No [[configs]] at all: the daemon's vault still keeps a renewed token (its scheduled check)."""
    from mcp_supervisor.config import load_config
    from mcp_supervisor.vault.service import VaultService

    config, state, key = setup(tmp_path)

    async def story() -> list[dict[str, Any]]:
        vault = VaultService(load_config(config))
        await vault.backup("first")
        await vault._back_up_changed_state()  # nothing changed: no snapshot
        storage = EncryptedTokenStorage(state, "jira", key)
        await storage.set_tokens(OAuthToken(access_token="renewed-access", refresh_token="rotated-refresh"))
        await vault._back_up_changed_state()  # the renewal: one snapshot
        await vault._back_up_changed_state()
        return await vault.list_snapshots()

    snapshots = asyncio.run(story())
    assert [s["reason"] for s in snapshots] == ["change of daemon state (tokens, tool contracts)", "first"]


def test_tokens_made_before_the_vault_had_a_key_come_back_readable(tmp_path: Path) -> None:
    """A daemon that started before the first backup keeps its tokens under state_dir/auth/token.key;
    the vault key the first backup makes must not orphan them, before or after a restore."""
    from mcp_supervisor.auth.store import token_key

    config, state, _ = setup(tmp_path)
    vault_key = tmp_path / "keys" / "vault.key"
    shutil.rmtree(state / "auth")
    vault_key.unlink()  # no vault key yet: the token store makes its own
    own = token_key(state, vault_key)
    asyncio.run(EncryptedTokenStorage(state, "jira", own).set_tokens(OAuthToken(access_token=ACCESS)))
    assert run(config, "backup").returncode == 0 and vault_key.exists()  # the first backup made the vault key
    assert token_key(state, vault_key) == own  # ... and the daemon still reads its tokens with its own key
    shutil.rmtree(state / "auth")
    restored = run(config, "restore", "--state", "auth")
    assert restored.returncode == 0 and "token.key" in restored.stdout, restored.stderr
    assert read_back(state, token_key(state, vault_key)).access_token == ACCESS  # type: ignore[union-attr]
    assert (state / "auth" / "token.key").stat().st_mode & 0o777 == 0o600


def test_a_state_backup_that_reaches_no_location_is_not_retried_every_minute(tmp_path: Path) -> None:
    from mcp_supervisor.config import load_config
    from mcp_supervisor.vault.service import VaultService

    config, _, _ = setup(tmp_path)
    (tmp_path / "blocked").write_text("a file where the locations' folder should be")
    config.write_text(config.read_text().replace(f'["{tmp_path}/backup0", "{tmp_path}/backup1"]',
                                                 f'["{tmp_path}/blocked/backup0"]'))
    events: list[dict[str, Any]] = []

    async def story() -> None:
        vault = VaultService(load_config(config), on_event=lambda kind, data: events.append(data)
                             if kind == "backup" else None)
        for _ in range(3):
            await vault._back_up_changed_state()

    asyncio.run(story())
    assert len(events) == 1 and events[0]["copies"] == [] and events[0]["failed_locations"], events
