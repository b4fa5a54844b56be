"""The SDK's ``TokenStorage`` kept AES-256-GCM encrypted under ``state_dir/auth/`` (mode 0600).

Why encrypted although the directory is the daemon's own: ``state_dir`` is copied into backups
and read by support bundles; a token file that leaks there must be useless. The key is
``state_dir/auth/token.key`` when it exists (made on first use by a daemon that started before the
vault had a key, and kept: the first backup making a vault key must not orphan the stored tokens),
else the vault's (``[backup] key_file``); never a new key at the vault's path (a key made over a
lost vault key would orphan its snapshots). A file that
does not decrypt (tampered, other key) is set aside and a fresh token obtained: for a machine grant
nothing is lost.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from mcp_supervisor.logging import get_logger
from mcp_supervisor.vault.crypto import IntegrityError, KeyFileError, decrypt, encrypt, load_key

log = get_logger("mcp_supervisor.auth")


def auth_dir(state_dir: Path) -> Path:
    path = Path(os.path.expanduser(str(state_dir))) / "auth"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def token_key(state_dir: Path, vault_key: Path | None) -> bytes:
    """This directory's own key if it has one (the stored tokens were made with it: a vault key
    that appears later, with the first backup, must not orphan them), else the vault's key if it
    can be read, else this directory's own (created 0600 on first use)."""
    own = auth_dir(state_dir) / "token.key"
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
    return load_key(auth_dir(state_dir) / "token.key", create=True)


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
    """One server's tokens in ``state_dir/auth/<name>.token``, bound to the name (associated data)."""

    def __init__(self, state_dir: Path, name: str, key: bytes) -> None:
        self.path = auth_dir(state_dir) / f"{name}.token"
        self._name = name
        self._key = key
        self.obtained_at: float | None = None
        """Wall time the stored token was asked for (for the 80 % renewal after a daemon restart)."""
        self.requested_at: float | None = None
        """Set by the owner as a request starts: a token is never older than its request."""

    async def get_tokens(self) -> OAuthToken | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("auth: token file unreadable, obtaining a new token", server=self._name, why=exc.strerror)
            return None
        with os.fdopen(fd, "rb") as handle:
            blob = handle.read()
        try:
            data = json.loads(decrypt(self._key, blob, self._associated()))
            token = OAuthToken.model_validate(data["token"])
        except (IntegrityError, ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_suffix(".token.bad")
            os.replace(self.path, aside)
            log.warning("auth: token file does not decrypt (tampered or another key); set aside, obtaining a new token",
                        server=self._name, file=str(aside), why=type(exc).__name__)
            return None
        self.obtained_at = float(data.get("obtained_at") or 0.0) or None
        return token

    async def set_tokens(self, tokens: OAuthToken) -> None:
        """Written to a temporary file and renamed: a crash leaves the old token or the new, never half."""
        self.obtained_at = self.requested_at or time.time()
        plain = json.dumps({"token": tokens.model_dump(mode="json"), "obtained_at": self.obtained_at})
        blob = encrypt(self._key, plain.encode(), self._associated())
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return None  # a configured client: the credentials live in the config, not here

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        return None

    def _associated(self) -> bytes:
        return token_aad(self._name)
