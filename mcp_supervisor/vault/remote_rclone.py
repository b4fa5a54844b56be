"""``rclone:REMOTE:path`` vault locations, through the ``rclone`` binary (S3, GCS, Azure, WebDAV, ...).

Why the binary and not a library: rclone is how people already reach every kind of storage, with
their own ``rclone.conf``; the vault needs only five verbs of it (``rcat``, ``cat``, ``lsjson``,
``deletefile``, ``moveto``). Each runs as a short child with a clean environment, the config
file named explicitly and checked like ssh checks its files (the daemon runs as root: a config
another user can edit would choose where root writes), and a deadline.

Why only the manifest goes through a temporary name and ``moveto``: on object stores every upload
is atomic already; on a folder-like backend a blob torn by a crash fails authentication (verify
names it, repair replaces it), while the manifest is what makes a snapshot exist, so it must
appear whole or not at all.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path, PurePosixPath

from mcp_supervisor.config.fleet import RcloneSettings, parse_rclone
from mcp_supervisor.vault.remote import RemoteError, check_private_file

_NOT_FOUND = (3, 4)
"""rclone's exit codes for "directory not found" and "file not found"."""


class RcloneTransport:
    def __init__(self, spec: str, settings: RcloneSettings) -> None:
        self.remote = parse_rclone(spec)
        self.where = "rclone:" + self.remote
        self.settings = settings

    def _command(self) -> list[str]:
        binary = shutil.which(self.settings.binary)
        if binary is None:
            raise RemoteError(f"{self.where}: the rclone binary {self.settings.binary!r} is not installed "
                              "(Debian: apt-get install rclone)")
        command = [binary, "--ask-password=false", "--retries", "1", "--low-level-retries", "2"]
        if self.settings.config is not None:
            conf = check_private_file(self.settings.config, "[backup.rclone] config", secret=True)
            command += ["--config", str(conf)]
        return command

    def _run(self, *args: str, data: bytes | None = None, missing_ok: bool = False) -> bytes | None:
        env = {key: os.environ[key] for key in ("PATH", "HOME", "TMPDIR") if key in os.environ}
        try:
            done = subprocess.run([*self._command(), *args], input=data, capture_output=True, env=env,
                                  timeout=self.settings.timeout, check=False, stdin=None if data is not None else
                                  subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.where}: rclone {args[0]} gave no answer within "
                              f"{self.settings.timeout:g}s") from None
        except OSError as exc:
            raise RemoteError(f"{self.where}: cannot run rclone: {exc.strerror or exc}") from None
        if done.returncode in _NOT_FOUND:
            if missing_ok:
                return None
            raise FileNotFoundError(2, f"{self.where}: not found ({args[-1]})")
        if done.returncode != 0:
            lines = [line for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
            raise RemoteError(f"{self.where}: rclone {args[0]} failed (exit {done.returncode}): "
                              f"{lines[-1][-300:] if lines else 'no message'}")
        return done.stdout

    def _path(self, name: str) -> str:
        if not name:
            return self.remote
        base = self.remote if self.remote.endswith(":") else self.remote + "/"
        return base + name

    # --- the Transport verbs ----------------------------------------------------------------------

    def check(self) -> None:
        self._run("mkdir", self.remote)

    def put(self, name: str, data: bytes, *, atomic: bool) -> None:
        if not atomic:
            self._run("rcat", self._path(name), data=data)
            return
        path = PurePosixPath(name)
        temp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        self._run("rcat", self._path(temp), data=data)
        self._run("moveto", self._path(temp), self._path(name))

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Many blobs in one rclone run: staged in a private temp folder, then ``rclone copy``
        (each rclone start costs tens of milliseconds; a backup's blobs would pay it each)."""
        if len(items) == 1:
            self.put(items[0][0], items[0][1], atomic=False)
            return
        with tempfile.TemporaryDirectory(prefix="mcp-vault-rclone-") as staging:
            root = Path(staging)
            for name, data in items:
                target = root / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            self._run("copy", "--no-traverse", str(root), self.remote)

    def get(self, name: str) -> bytes:
        data = self._run("cat", self._path(name))
        assert data is not None
        return data

    def list(self, folder: str) -> list[tuple[str, float]]:
        raw = self._run("lsjson", "-R", "--files-only", self._path(folder), missing_ok=True)
        if not raw:
            return []
        try:
            entries = json.loads(raw)
        except ValueError:
            raise RemoteError(f"{self.where}: rclone lsjson answered something that is not JSON") from None
        prefix = f"{folder}/" if folder else ""
        return [(prefix + entry["Path"], _mtime(entry.get("ModTime"))) for entry in entries]

    def delete(self, name: str) -> None:
        try:
            self._run("deletefile", self._path(name), missing_ok=True)
        except RemoteError as exc:
            if "doesn't exist" not in str(exc):  # rclone's words (exit 1) for a file already gone
                raise

    def close(self) -> None:
        pass


def _mtime(value: object) -> float:
    if not isinstance(value, str):
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
