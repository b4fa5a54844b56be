"""Authenticated encryption for the vault: AES-256-GCM with random 96-bit nonces.

Why associated data: a blob is bound to the SHA-256 it claims and a manifest to its snapshot id,
so a blob swapped for another, or a manifest renamed, fails authentication instead of restoring
the wrong content (restic does the same with its content-addressed, MAC'd objects).
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"MCPV"
VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
_HEADER = MAGIC + bytes([VERSION])


class VaultError(Exception):
    """A vault problem a person can act on; ``str()`` says what and how to fix it."""


class KeyFileError(VaultError):
    pass


class IntegrityError(VaultError):
    """Ciphertext that does not authenticate: corrupt, truncated, swapped, or the wrong key."""


def encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return _HEADER + nonce + AESGCM(key).encrypt(nonce, plaintext, _HEADER + associated)


def decrypt(key: bytes, blob: bytes, associated: bytes) -> bytes:
    if len(blob) < len(_HEADER) + NONCE_BYTES + 16 or not blob.startswith(MAGIC):
        raise IntegrityError("not a vault object (bad header or truncated)")
    if blob[len(MAGIC)] != VERSION:
        raise IntegrityError(f"vault object format version {blob[len(MAGIC)]} is not supported (expected {VERSION})")
    nonce = blob[len(_HEADER) : len(_HEADER) + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(_HEADER) + NONCE_BYTES :], _HEADER + associated)
    except InvalidTag:
        raise IntegrityError("authentication failed (corrupt object, or a different key)") from None


def load_key(path: Path, *, create: bool = False) -> bytes:
    """The 256-bit key from ``path`` (mode 0600, like ssh refuses looser key modes).

    ``create`` only for a first backup into an empty vault (the caller checks that): a key made
    over a lost one would silently orphan every snapshot.
    """
    path = Path(os.path.expanduser(str(path)))
    if not os.path.lexists(path):
        if not create:
            raise KeyFileError(f"key file {path} does not exist (run 'supervisorctl-mcp key import' to restore it)")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return load_key(path, create=False)
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyFileError(f"key file {path} cannot be opened ({exc.strerror}; it must be a regular file, not a link)") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"key file {path} has mode {stat.S_IMODE(info.st_mode):04o}, readable by others; "
                f"fix it with: chmod 600 {path}"
            )
        key = handle.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise KeyFileError(
            f"key file {path} holds {len(key)} bytes, expected {KEY_BYTES} (a 256-bit key); "
            "restore it with 'supervisorctl-mcp key import FILE'"
        )
    return key


def export_key(key: bytes, passphrase: str) -> bytes:
    """The key wrapped with a passphrase (scrypt + AES-GCM), for an offline copy."""
    salt = os.urandom(16)
    wrapping = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode())
    wrapped = encrypt(wrapping, key, b"mcp-supervisor key export")
    document = {
        "format": "mcp-supervisor-key/1",
        "kdf": {"name": "scrypt", "n": 2**15, "r": 8, "p": 1, "salt": base64.b64encode(salt).decode()},
        "wrapped_key": base64.b64encode(wrapped).decode(),
    }
    return json.dumps(document, indent=2).encode() + b"\n"


def import_key(document: bytes, passphrase: str) -> bytes:
    try:
        data = json.loads(document)
        kdf = data["kdf"]
        salt = base64.b64decode(kdf["salt"])
        wrapped = base64.b64decode(data["wrapped_key"])
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
    except (ValueError, KeyError, TypeError) as exc:
        raise VaultError(f"not an exported mcp-supervisor key ({type(exc).__name__})") from None
    wrapping = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())
    try:
        key = decrypt(wrapping, wrapped, b"mcp-supervisor key export")
    except IntegrityError:
        raise VaultError("wrong passphrase, or the exported key file is damaged") from None
    if len(key) != KEY_BYTES:
        raise VaultError("the exported key has the wrong size")
    return key
