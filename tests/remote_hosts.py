"""Real off-host places for the vault tests, on loopback: an OpenSSH server and an rclone remote.

``SSHServer`` runs Debian's ``sshd`` in the foreground on a free loopback port with its own host
key, config and authorized key (key login only, internal-sftp), stopped by its pid. ``rclone_conf``
writes a temp ``rclone.conf`` whose remote is an ``alias`` of a local folder, so every rclone verb
the vault uses runs for real.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.live_daemon import free_port, stop, wait_for
from tests.servers.fixtures import port_open

SSHD = "/usr/sbin/sshd"


def keygen(path: Path) -> str:
    """An ed25519 key pair at ``path`` (+ ``.pub``); returns the public line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mcp-test", "-f", str(path)], check=True,
                   timeout=30)
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class SSHServer:
    directory: Path
    port: int
    user: str
    identity: Path
    known_hosts: Path
    proc: subprocess.Popen[bytes] | None = None

    def url(self, path: Path) -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        with open(self.directory / "sshd.log", "ab") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.directory / "sshd_config")],
                                         stdout=log, stderr=log)
        try:
            wait_for(lambda: port_open(self.port) or (self.proc is not None and self.proc.poll() is not None), 20,
                     "sshd listening")
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise AssertionError(f"sshd exited: {(self.directory / 'sshd.log').read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop sshd and its open sessions (a host that went down), each by its pid: a session
        process runs in its own session (setsid), so it would outlive the listener."""
        if self.proc is not None:
            sessions = psutil.Process(self.proc.pid).children(recursive=True)
            stop(self.proc)
            for child in sessions:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            psutil.wait_procs(sessions, timeout=5)
            self.proc = None


def start_sshd(directory: Path) -> SSHServer:
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server is not installed (Debian: apt-get install openssh-server); .ci/run installs it")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # sshd's StrictModes would refuse a group-writable home for keys
    port = free_port()
    host_public = keygen(directory / "host_ed25519")
    client_public = keygen(directory / "id_ed25519")
    (directory / "authorized_keys").write_text(client_public + "\n")
    (directory / "authorized_keys").chmod(0o600)
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public}\n")
    known_hosts.chmod(0o644)
    user = getpass.getuser()
    (directory / "sshd_config").write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {directory}/host_ed25519
PidFile {directory}/sshd.pid
AuthorizedKeysFile {directory}/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowUsers {user}
Subsystem sftp internal-sftp
LogLevel ERROR
""")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder (the unit makes it too)
    server = SSHServer(directory, port, user, directory / "id_ed25519", known_hosts)
    server.start()
    return server


def rclone_conf(directory: Path, remote: str = "vaultremote") -> tuple[Path, Path]:
    """(rclone.conf, the folder its remote stores into); skips when rclone is missing."""
    if shutil.which("rclone") is None:
        pytest.skip("rclone is not installed (Debian: apt-get install rclone); .ci/run installs it")
    data = directory / "rclone-data"
    data.mkdir(parents=True, exist_ok=True)
    conf = directory / "rclone.conf"
    conf.write_text(f"[{remote}]\ntype = alias\nremote = {data}\n")
    conf.chmod(0o600)
    return conf, data
