"""The token file: encrypted at rest, 0600, bound to its server; a tampered one is set aside.

And the sentence a refused renewal becomes: a person's fix for a refused client, a retry for the
rest, never the answer's body (it can echo what was sent).
"""

from __future__ import annotations

import asyncio
import os
import pwd
from pathlib import Path

import pytest
from mcp.client.auth import OAuthTokenError
from mcp.shared.auth import OAuthToken

from mcp_supervisor.auth.exchange import problem_text
from mcp_supervisor.auth.lock import refresh_lock
from mcp_supervisor.auth.store import EncryptedTokenStorage, token_key
from mcp_supervisor.config import ServerConfig

TOKEN = "eyJhbGciOiJSUzI1NiJ9.payload-4b1f.signature-9c2d"


def test_tokens_are_encrypted_0600_and_bound_to_the_server(tmp_path: Path) -> None:
    key = token_key(tmp_path, tmp_path / "no-vault.key")
    assert (tmp_path / "auth" / "token.key").stat().st_mode & 0o777 == 0o600
    store = EncryptedTokenStorage(tmp_path, "jira", key)
    asyncio.run(store.set_tokens(OAuthToken(access_token=TOKEN, token_type="Bearer", expires_in=60)))
    raw = store.path.read_bytes()
    assert TOKEN.encode() not in raw and b"signature-9c2d" not in raw
    assert store.path.stat().st_mode & 0o777 == 0o600
    again = asyncio.run(EncryptedTokenStorage(tmp_path, "jira", key).get_tokens())
    assert again is not None and again.access_token == TOKEN

    # the same file under another server's name does not authenticate: set aside, nothing used
    other = EncryptedTokenStorage(tmp_path, "gitlab", key)
    other.path.write_bytes(raw)
    assert asyncio.run(other.get_tokens()) is None
    assert not other.path.exists() and list(tmp_path.glob("auth/gitlab.token.bad-*"))
    assert other.problem is not None and "supervisorctl-mcp login gitlab" in other.problem

    # one flipped byte: the same
    store.path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    assert asyncio.run(store.get_tokens()) is None


def test_a_refused_client_is_a_persons_fix_and_the_body_is_never_repeated() -> None:
    server = ServerConfig(name="jira", transport="http", url="http://127.0.0.1:1/mcp",
                          auth={"type": "oauth", "client_id": "bot", "client_secret": "s"})
    refused = OAuthTokenError('Token exchange failed (401): {"error":"invalid_client","echo":"' + TOKEN + '"}')
    text, fatal = problem_text(server, refused)
    assert fatal and "invalid_client" in text and "supervisorctl-mcp reload" in text and TOKEN not in text
    text, fatal = problem_text(server, OAuthTokenError(f"Token exchange failed (503): <html>{TOKEN}</html>"))
    assert not fatal and "retrying" in text and TOKEN not in text
    text, fatal = problem_text(server, TimeoutError())
    assert not fatal and "TimeoutError" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can write files another user owns")
def test_a_root_login_leaves_files_the_daemons_user_owns(tmp_path: Path) -> None:
    """The daemon runs as its own user; ``login`` run as root writes the token file, the lock file
    and the key as that user (the owner of ``state_dir/auth``), never as root."""
    daemon_user = pwd.getpwnam("nobody")
    (tmp_path / "auth").mkdir(mode=0o700)
    os.chown(tmp_path / "auth", daemon_user.pw_uid, daemon_user.pw_gid)
    key = token_key(tmp_path, None)
    store = EncryptedTokenStorage(tmp_path, "notes", key)
    asyncio.run(store.set_tokens(OAuthToken(access_token=TOKEN, token_type="Bearer", expires_in=60)))

    async def locked() -> None:
        async with refresh_lock(store.lock_path):
            pass

    asyncio.run(locked())
    for path in (store.path, store.lock_path, tmp_path / "auth" / "token.key"):
        info = path.stat()
        assert (info.st_uid, info.st_mode & 0o777) == (daemon_user.pw_uid, 0o600), path
