"""Off-host vault locations for real: a Debian OpenSSH server on a loopback port (sftp://) and rclone
with an alias remote (rclone:REMOTE:path), beside a local folder.

What a user notices: the backup lands in both places; the remote never holds a plaintext byte or a
plaintext hash; a remote object corrupted is named by verify and repaired from the folder; sshd
stopped during the backups leaves the local copy and names the missing one; a wrong host key is
refused; a new host restores every config from the remote alone with the key.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_supervisor.config import ConfigError, parse_config
from mcp_supervisor.vault.remote import RemoteError, check_private_file
from mcp_supervisor.vault.service import VaultService
from tests.remote_hosts import SSHServer, rclone_conf, start_sshd
from tests.test_vault import CANARY, configs_toml, write_config
from tests.test_vault_cli import run

pytestmark = pytest.mark.timeout(120)


def config_text(root: Path, locations: list[str], extra: str = "") -> str:
    quoted = ", ".join(f'"{location}"' for location in locations)
    return f"""
[backup]
key_file = "{root}/keys/vault.key"
locations = [{quoted}]
{extra}
""" + configs_toml(root)


def sftp_settings(server: SSHServer, known_hosts: Path | None = None) -> str:
    return (f'[backup.sftp]\nidentity_file = "{server.identity}"\nknown_hosts = "{known_hosts or server.known_hosts}"\n'
            'timeout = "10s"\n')


def remote_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def assert_only_ciphertext(folder: Path, root: Path) -> None:
    """No plaintext byte of a config and no plaintext hash, in any name or content."""
    digests = {hashlib.sha256((root / "home" / name).read_bytes()).hexdigest() for name in ("mcp.json", ".env")}
    files = remote_files(folder)
    assert files
    for path in files:
        data = path.read_bytes()
        assert CANARY.encode() not in data and b"mcpServers" not in data and b"JIRA_TOKEN" not in data, path
        assert not any(d in str(path) or d.encode() in data for d in digests), path


@pytest.fixture(scope="module")
def sshd() -> Iterator[SSHServer]:
    directory = Path(tempfile.mkdtemp(prefix="mcpssh-", dir="/tmp"))
    server = start_sshd(directory / "ssh")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def test_sftp_backup_verify_repair_outage_and_a_new_host_restored_from_the_remote_alone(
    sshd: SSHServer, tmp_path: Path
) -> None:
    write_config(tmp_path)  # the watched files, with the canary token
    remote = tmp_path / "remote"
    url = sshd.url(remote)
    config = parse_config(config_text(tmp_path, [f"{tmp_path}/local", url], sftp_settings(sshd)), environ={})
    vault = VaultService(config)

    first = await vault.backup("test")
    assert first["copies"] == [f"{tmp_path}/local", url] and first["failed_locations"] == {}
    assert_only_ciphertext(remote, tmp_path)
    assert (await vault.verify())["ok"]

    blob = next(p for p in remote_files(remote / "objects"))
    blob.write_bytes(blob.read_bytes()[:-1] + bytes([blob.read_bytes()[-1] ^ 1]))
    verify = await vault.verify()
    assert not verify["ok"] and all(bad.startswith(url) for bad in verify["bad"]), verify
    repaired = await vault.repair()
    assert repaired["ok"] and repaired["repaired"] and all(r.startswith(url) for r in repaired["repaired"])

    sshd.stop()  # the remote is down: the local copy is made, the missing one is named
    try:
        (tmp_path / "home" / "mcp.json").write_text((tmp_path / "home" / "mcp.json").read_text() + "\n")
        outage = await vault.backup("while sshd is down")
        assert outage["copies"] == [f"{tmp_path}/local"] and list(outage["failed_locations"]) == [url]
        assert outage["failed_locations"][url]
    finally:
        sshd.start()
    listed = await vault.list_snapshots()
    assert [s["copies"] for s in listed] == [1, 2]
    (tmp_path / "home" / "mcp.json").write_text((tmp_path / "home" / "mcp.json").read_text() + "\n")
    assert len((await vault.backup("sshd is back"))["copies"]) == 2  # the same connection settings reconnect

    # a new host: the exported key and the remote alone bring every config back
    new = tmp_path / "newhost"
    (new / "keys").mkdir(parents=True)
    exported = run(write_cli_config(tmp_path, [f"{tmp_path}/local"]), "key", "export", str(new / "key.export"),
                   env={"MCP_SUPERVISOR_KEY_PASSPHRASE": "correct horse battery"})
    assert exported.returncode == 0, exported.stderr
    new_config = new / "sup.toml"
    new_config.write_text(config_text(new, [], sftp_settings(sshd)))
    imported = run(new_config, "key", "import", str(new / "key.export"),
                   env={"MCP_SUPERVISOR_KEY_PASSPHRASE": "correct horse battery"})
    assert imported.returncode == 0, imported.stderr
    (new / "home").mkdir()
    for name in ("cursor", "secrets"):
        restored = run(new_config, "restore", name, "--from", url)
        assert restored.returncode == 0, restored.stderr
        assert CANARY not in restored.stdout + restored.stderr
    assert (new / "home" / ".env").read_text() == (tmp_path / "home" / ".env").read_text()
    assert (new / "home" / "mcp.json").read_text() == (tmp_path / "home" / "mcp.json").read_text()


def write_cli_config(root: Path, locations: list[str]) -> Path:
    path = root / "cli.toml"
    path.write_text(config_text(root, locations))
    return path


async def test_a_wrong_host_key_is_refused_and_the_other_copies_still_made(sshd: SSHServer, tmp_path: Path) -> None:
    write_config(tmp_path)
    other = tmp_path / "other_host"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=30)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other.with_suffix('.pub').read_text()}")
    url = sshd.url(tmp_path / "remote")
    config = parse_config(config_text(tmp_path, [f"{tmp_path}/local", url], sftp_settings(sshd, known_hosts)),
                          environ={})
    result = await VaultService(config).backup("test")
    assert result["copies"] == [f"{tmp_path}/local"]
    reason = result["failed_locations"][url]
    assert "host key" in reason and "refused" in reason and "ssh-keyscan" in reason
    assert not (tmp_path / "remote").exists()  # nothing was sent to a host we could not verify


async def test_rclone_location_backup_repair_and_restore_from_it_alone(tmp_path: Path) -> None:
    conf, data = rclone_conf(tmp_path)
    write_config(tmp_path)
    spec = "rclone:vaultremote:vault"
    extra = f'[backup.rclone]\nconfig = "{conf}"\ntimeout = "60s"\n'
    vault = VaultService(parse_config(config_text(tmp_path, [f"{tmp_path}/local", spec], extra), environ={}))
    result = await vault.backup("test")
    assert result["copies"] == [f"{tmp_path}/local", spec], result
    assert_only_ciphertext(data, tmp_path)

    blob = next(p for p in remote_files(data / "vault" / "objects"))
    blob.write_bytes(b"\0" * len(blob.read_bytes()))
    verify = await vault.verify()
    assert not verify["ok"] and all(bad.startswith(spec) for bad in verify["bad"])
    assert (await vault.repair())["ok"]

    (tmp_path / "home" / ".env").unlink()
    alone = VaultService(parse_config(config_text(tmp_path, [spec], extra), environ={}))
    restored = await alone.restore("secrets")
    assert restored["path"] == str(tmp_path / "home" / ".env") and CANARY in (tmp_path / "home" / ".env").read_text()


def test_remote_locations_are_checked_at_load_and_loose_files_refused(tmp_path: Path) -> None:
    for bad, words in (("sftp://backup:hunter2@nas/srv/v", "key authentication"),
                       ("sftp://nas/srv/v", "sftp://user@host:port/absolute/path"),
                       ("rclone:nocolon", "rclone:REMOTE:path"),
                       ("s3://bucket/x", "off-host locations are")):
        with pytest.raises(ConfigError) as refused:
            parse_config(f'[backup]\nlocations = ["{bad}"]\n', tmp_path / "sup.toml", {})
        assert words in str(refused.value) and "hunter2" not in str(refused.value), refused.value
    loaded = parse_config('[backup]\nlocations = ["sftp://backup@nas.example/srv/v", "rclone:s3:bucket/v"]\n',
                          tmp_path / "sup.toml", {})
    assert loaded.backup.locations == ["sftp://backup@nas.example:22/srv/v", "rclone:s3:bucket/v"]

    identity = tmp_path / "id"
    identity.write_text("key")
    identity.chmod(0o644)
    with pytest.raises(RemoteError, match="chmod 600"):
        check_private_file(identity, "[backup.sftp] identity_file", secret=True)
    identity.chmod(0o600)
    assert check_private_file(identity, "[backup.sftp] identity_file", secret=True) == identity
    if os.geteuid() == 0:
        os.chown(identity, 65534, 65534)
        with pytest.raises(RemoteError, match="owned by uid 65534"):
            check_private_file(identity, "[backup.sftp] identity_file", secret=True)


async def test_locks_and_retention_on_the_remote_work_as_on_a_folder(sshd: SSHServer, tmp_path: Path) -> None:
    from mcp_supervisor.config.fleet import SFTPSettings
    from mcp_supervisor.vault.locks import LocationLocked, hold
    from mcp_supervisor.vault.remote import RemoteLocks, RemoteStore
    from mcp_supervisor.vault.remote_sftp import SFTPTransport

    write_config(tmp_path)
    remote = tmp_path / "remote"
    url = sshd.url(remote)
    text = config_text(tmp_path, [url], sftp_settings(sshd)).replace("[backup]\n", "[backup]\nkeep_last = 1\n", 1)
    config = parse_config(text, environ={})
    vault = VaultService(config)
    await vault.backup("one")
    (tmp_path / "home" / "mcp.json").write_text((tmp_path / "home" / "mcp.json").read_text() + "\n")
    await vault.backup("two")
    assert len(remote_files(remote / "snapshots")) == 1  # retention ran on the remote
    assert len(remote_files(remote / "objects")) == 2  # the replaced file's old blob was collected
    assert not remote_files(remote / "locks")  # every lock taken was released

    key = (tmp_path / "keys" / "vault.key").read_bytes()
    settings = SFTPSettings(identity_file=sshd.identity, known_hosts=sshd.known_hosts, timeout=10)
    holder, other = (RemoteStore(SFTPTransport(url, settings), key) for _ in range(2))
    with holder.exclusive():
        (lock,) = remote_files(remote / "locks")
        assert b"pid" not in lock.read_bytes()  # who holds it is encrypted too
        with pytest.raises(LocationLocked, match=f"{url} is locked: exclusive lock of pid {os.getpid()}"):
            with hold(RemoteLocks(other.transport, key), exclusive=False, wait=0.3):
                pass
    with other.shared():
        pass  # released: the next user gets in
    holder.transport.close()
    other.transport.close()
