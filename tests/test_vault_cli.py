"""``supervisorctl-mcp backup|backups|restore|verify|repair|key`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_vault import CANARY, write_config

CLI = str(Path(sys.executable).parent / "supervisorctl-mcp")


def run(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "--config", str(config), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def setup(tmp_path: Path) -> Path:
    write_config(tmp_path)
    config = tmp_path / "sup.toml"
    config.write_text(
        f"""
[backup]
key_file = "{tmp_path}/keys/vault.key"
locations = ["{tmp_path}/backup0", "{tmp_path}/backup1"]
[[configs]]
name = "secrets"
path = "{tmp_path}/home/.env"
format = "dotenv"
required_keys = ["JIRA_TOKEN"]
"""
    )
    return config


def test_backup_restore_and_listing_never_print_secrets(tmp_path: Path) -> None:
    config = setup(tmp_path)
    outputs = [run(config, "backup"), run(config, "backups"), run(config, "backups", "--json")]
    assert [o.returncode for o in outputs] == [0, 0, 0]
    (snapshot,) = json.loads(outputs[2].stdout)["snapshots"]
    (tmp_path / "home" / ".env").write_text("garbage without equals\n")
    restored = run(config, "restore", "secrets", "--snapshot", snapshot["id"])
    outputs.append(restored)
    assert restored.returncode == 0 and "kept as" in restored.stdout
    assert CANARY in (tmp_path / "home" / ".env").read_text()
    assert all(CANARY not in o.stdout + o.stderr for o in outputs)


def test_verify_names_each_bad_object_and_repair_fixes_it(tmp_path: Path) -> None:
    config = setup(tmp_path)
    assert run(config, "backup").returncode == 0
    (blob,) = list((tmp_path / "backup1" / "objects").glob("*/*"))
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    verify = run(config, "verify")
    assert verify.returncode == 1
    assert f"BAD {tmp_path}/backup1: snapshot" in verify.stdout and "file secrets" in verify.stdout
    repair = run(config, "repair")
    assert repair.returncode == 0 and "repaired" in repair.stdout
    assert run(config, "verify", "--json").stdout.strip() == '{"ok": true, "bad": []}'


def test_restore_of_unknown_config_and_missing_vault_are_explained(tmp_path: Path) -> None:
    config = setup(tmp_path)
    unknown = run(config, "restore", "nope")
    assert unknown.returncode == 1 and "no watched config named 'nope' (known: secrets)" in unknown.stderr
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "vault.key").write_bytes(os.urandom(32))
    (tmp_path / "keys" / "vault.key").chmod(0o644)
    loose = run(config, "backups")
    assert loose.returncode == 1 and f"chmod 600 {tmp_path}/keys/vault.key" in loose.stderr


def test_key_export_and_import_restore_access(tmp_path: Path) -> None:
    config = setup(tmp_path)
    env = {"MCP_SUPERVISOR_KEY_PASSPHRASE": "a long passphrase"}
    assert run(config, "backup").returncode == 0
    assert run(config, "key", "export", str(tmp_path / "offline.key"), env=env).returncode == 0
    (tmp_path / "keys" / "vault.key").unlink()
    assert run(config, "key", "import", str(tmp_path / "offline.key"), env=env).returncode == 0
    listing = run(config, "backups", "--json")
    assert listing.returncode == 0 and len(json.loads(listing.stdout)["snapshots"]) == 1
    wrong = run(config, "key", "import", str(tmp_path / "offline.key"), "--force", env={"MCP_SUPERVISOR_KEY_PASSPHRASE": "nope-nope"})
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr


def test_a_deleted_key_stops_every_command_and_no_new_key_appears(tmp_path: Path) -> None:
    config = setup(tmp_path)
    assert run(config, "backup").returncode == 0
    key_file = tmp_path / "keys" / "vault.key"
    key_file.unlink()
    for args in (("backups",), ("backup",), ("restore", "secrets"), ("verify",), ("backups", "--json")):
        out = run(config, *args)
        text = out.stdout + out.stderr
        assert out.returncode == 1, (args, text)
        assert str(key_file) in text and "supervisorctl-mcp key import" in text, (args, text)
        assert not key_file.exists() and list(key_file.parent.iterdir()) == []
    assert CANARY in (tmp_path / "home" / ".env").read_text()  # restore refused: nothing touched


def test_restore_to_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    config = setup(tmp_path)
    assert run(config, "backup").returncode == 0
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "dir" / "x")
    for target in (tmp_path / "dir", Path("/dev/null"), tmp_path / "link", tmp_path / "nope" / "f.env"):
        out = run(config, "restore", "secrets", "--to", str(target))
        assert out.returncode == 1 and ("writes only regular files" in out.stderr or "creates no folders" in out.stderr)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("dir", "link", "nope"))) == ["dir", "link"]
    assert (tmp_path / "dir" / "x").read_text() == "x" and not (tmp_path / "nope").exists()
