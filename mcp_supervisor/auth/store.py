"""The SDK's ``TokenStorage`` kept AES-256-GCM encrypted under ``state_dir/auth/`` (mode 0600).

Why encrypted although the directory is the daemon's own: ``state_dir`` is copied into backups
and read by support bundles; a token file that leaks there must be useless. The key is
``state_dir/auth/token.key`` when it exists (made on first use by a daemon that started before the
vault had a key, and kept: the first backup making a vault key must not orphan the stored tokens),
else the vault's (``[backup] key_file``); never a new key at the vault's path (a key made over a
lost vault key would orphan its snapshots).

One file per server holds one record: the tokens, when they were asked for, when the grant began
(``login``), the client a dynamic registration made, and the authorization server's metadata (so
the daemon can refresh after a restart without a person). Every write is a whole new file
(temp, fsync, rename, fsync-dir) owned by the directory's owner, so a ``login`` run as root hands
the daemon's user a file it can read, and a crash leaves the old record or the new, never half:
the new refresh token is on disk before the new access token is used. A file that does not
decrypt (tampered, other key) is set aside as ``NAME.token.bad-<time>`` (kept, never overwritten)
and ``problem`` says so.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from mcp_supervisor.logging import get_logger
from mcp_supervisor.vault.crypto import IntegrityError, KeyFileError, decrypt, encrypt, load_key
from mcp_supervisor.vault.fsutil import fsync_dir

log = get_logger("mcp_supervisor.auth")


def auth_dir(state_dir: Path) -> Path:
    path = Path(os.path.expanduser(str(state_dir))) / "auth"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.stat(path).st_uid == os.geteuid():
        os.chmod(path, 0o700)
    return path


def token_key(state_dir: Path, vault_key: Path | None) -> bytes:
    """This directory's own key if it has one (the stored tokens were made with it: a vault key
    that appears later, with the first backup, must not orphan them), else the vault's key if it
    can be read, else this directory's own (created 0600 on first use)."""
    directory = auth_dir(state_dir)
    own = directory / "token.key"
    if os.path.lexists(own):
        try:
            return load_key(own)
        except KeyFileError as exc:
            log.warning("auth: state_dir/auth/token.key is unusable", why=str(exc))
    if vault_key is not None and os.path.lexists(os.path.expanduser(str(vault_key))):
        try:
            return load_key(vault_key)
        except KeyFileError as exc:
            log.warning("auth: the vault key is unusable for tokens, using state_dir/auth/token.key", why=str(exc))
    key = load_key(own, create=True)
    owner = os.stat(directory)
    if os.geteuid() == 0 and owner.st_uid != 0:  # a root login made it: the daemon's user must read it
        os.chown(own, owner.st_uid, owner.st_gid, follow_symlinks=False)
    return key


@dataclass(frozen=True)
class Record:
    """What one token file holds. ``obtained_at``: wall time the token was asked for (a token is
    never older than its request); ``granted_at``: when ``login`` began the grant."""

    token: OAuthToken | None = None
    obtained_at: float | None = None
    granted_at: float | None = None
    refresh_expires_at: float | None = None
    client_info: OAuthClientInformationFull | None = None
    oauth_metadata: dict[str, Any] | None = None
    resource_metadata: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        data = {
            "token": self.token.model_dump(mode="json", exclude_none=True) if self.token else None,
            "obtained_at": self.obtained_at, "granted_at": self.granted_at,
            "refresh_expires_at": self.refresh_expires_at,
            "client_info": self.client_info.model_dump(mode="json", exclude_none=True) if self.client_info else None,
            "oauth_metadata": self.oauth_metadata, "resource_metadata": self.resource_metadata,
        }
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Record:
        data = json.loads(raw)
        token = OAuthToken.model_validate(data["token"]) if data.get("token") else None
        client = OAuthClientInformationFull.model_validate(data["client_info"]) if data.get("client_info") else None
        return cls(token=token, obtained_at=_num(data.get("obtained_at")), granted_at=_num(data.get("granted_at")),
                   refresh_expires_at=_num(data.get("refresh_expires_at")), client_info=client,
                   oauth_metadata=data.get("oauth_metadata"), resource_metadata=data.get("resource_metadata"))


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def token_aad(name: str) -> bytes:
    """The associated data binding a token file to its server's name (a file copied to another
    server's name does not decrypt)."""
    return f"mcp-supervisor oauth token {name}".encode()


def token_file_opens(key: bytes, name: str, blob: bytes) -> bool:
    """Whether ``key`` decrypts ``blob`` as server ``name``'s token file (a restore checks a file
    from the vault with the daemon's key before writing it)."""
    try:
        decrypt(key, blob, token_aad(name))
    except (IntegrityError, ValueError):
        return False
    return True


class EncryptedTokenStorage:
    """One server's record in ``state_dir/auth/<name>.token``, bound to the name (associated data)."""

    def __init__(self, state_dir: Path, name: str, key: bytes) -> None:
        directory = auth_dir(state_dir)
        self.path = directory / f"{name}.token"
        self.lock_path = directory / f"{name}.lock"
        self._name = name
        self._key = key
        self.requested_at: float | None = None
        """Set by the owner as a request starts: a token is never older than its request."""
        self.fixed_client: OAuthClientInformationFull | None = None
        """A configured client, answered by ``get_client_info`` when none was registered."""
        self.problem: str | None = None
        """Why the last read found no usable file (a tampered file), a sentence naming the fix."""

    @property
    def obtained_at(self) -> float | None:
        record = self.read()
        return record.obtained_at if record else None

    def signature(self) -> tuple[int, int, int] | None:
        """Changes whenever another process (``login``, a CLI refresh) writes the file."""
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def read(self) -> Record | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.problem = (f"the token file {self.path} cannot be read ({exc.strerror}); it must be a regular "
                            f"file of the daemon's user: remove it and run: supervisorctl-mcp login {self._name}")
            log.warning("auth: token file unreadable", server=self._name, why=exc.strerror)
            return None
        with os.fdopen(fd, "rb") as handle:
            blob = handle.read()
        try:
            record = Record.from_json(decrypt(self._key, blob, self._associated()))
        except (IntegrityError, ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(f"{self.path.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
            os.replace(self.path, aside)
            self.problem = (f"the token file of {self._name} does not decrypt (tampered, or made with another key); "
                            f"kept as {aside}; a new token is obtained (person grants: run "
                            f"supervisorctl-mcp login {self._name})")
            log.warning("auth: token file does not decrypt; set aside", server=self._name, file=str(aside),
                        why=type(exc).__name__)
            return None
        return record

    def write(self, record: Record) -> None:
        """Temp file, fsync, rename, fsync-dir; owned by the directory's owner (``login`` as root)."""
        blob = encrypt(self._key, record.to_json(), self._associated())
        owner = os.stat(self.path.parent)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                if os.geteuid() == 0 and owner.st_uid != 0:
                    os.fchown(handle.fileno(), owner.st_uid, owner.st_gid)
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.path.parent)
        self.problem = None

    def update(self, **changes: Any) -> Record:
        record = replace(self.read() or Record(), **changes)
        self.write(record)
        return record

    # the SDK's TokenStorage protocol
    async def get_tokens(self) -> OAuthToken | None:
        record = self.read()
        return record.token if record else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.update(token=tokens, obtained_at=self.requested_at or time.time())

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        record = self.read()
        return (record.client_info if record else None) or self.fixed_client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.update(client_info=client_info)

    def _associated(self) -> bytes:
        return token_aad(self._name)
