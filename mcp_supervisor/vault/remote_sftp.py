"""``sftp://user@host:port/path`` vault locations, through asyncssh.

Why these choices: key authentication only (an identity file; no password, no agent: the daemon
is a service), the host key checked against a ``known_hosts`` file and refused when it is unknown
or different (never trust on first use: the error says how to add the key after checking its
fingerprint), and no ``~/.ssh/config`` (what the daemon connects to is what the config says).

Why a private event loop in its own thread: the snapshot store is synchronous and runs in worker
threads (the daemon's loop must not stall on a slow disk or network); asyncssh needs a loop. One
long-lived connection per location lives on that loop and is reused across operations; a failure
drops it, and the next operation connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import warnings
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import PurePosixPath
from typing import Any, TypeVar

from mcp_supervisor.config.fleet import SFTPSettings, parse_sftp
from mcp_supervisor.vault.remote import RemoteError, check_private_file

T = TypeVar("T")
_PARALLEL = 16


class _Portal:
    """One event loop in a daemon thread, shared by every sftp location of this process."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def loop(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="vault-sftp", daemon=True).start()
                cls._loop = loop
            return cls._loop

    @classmethod
    def call(cls, work: Callable[[], Awaitable[T]], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(_awaited(work), cls.loop())
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise RemoteError(f"no answer within {timeout:g}s") from None


async def _awaited(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


class SFTPTransport:
    def __init__(self, spec: str, settings: SFTPSettings) -> None:
        self.target = parse_sftp(spec)
        self.where = str(self.target)
        self.settings = settings
        self._conn: Any = None
        self._sftp: Any = None
        self._dirs: set[str] = set()

    # --- the connection (on the portal loop) -------------------------------------------------------

    async def _client(self) -> Any:
        if self._sftp is not None:
            return self._sftp
        asyncssh = _asyncssh()
        identity = check_private_file(self.settings.identity_file, "[backup.sftp] identity_file", secret=True)
        known_hosts = check_private_file(self.settings.known_hosts, "[backup.sftp] known_hosts", secret=False)
        try:
            self._conn = await asyncssh.connect(
                self.target.host, port=self.target.port, username=self.target.user,
                client_keys=[str(identity)], known_hosts=str(known_hosts), agent_path=None, config=[],
                password=None, kbdint_auth=False, preferred_auth="publickey",
                connect_timeout=self.settings.timeout,
            )
            self._sftp = await self._conn.start_sftp_client()
        except asyncssh.HostKeyNotVerifiable as exc:
            await self._drop()
            raise RemoteError(
                f"{self.where}: the host key is not in {known_hosts} or differs from it ({exc.reason}); refused. "
                f"If the host is new, check its key's fingerprint with its owner, then add it: "
                f"ssh-keyscan -p {self.target.port} {self.target.host} >> {known_hosts}"
            ) from None
        except asyncssh.PermissionDenied:
            await self._drop()
            raise RemoteError(f"{self.where}: the server refused the key {identity} (add its .pub to the "
                              f"server's ~{self.target.user}/.ssh/authorized_keys)") from None
        except (OSError, asyncssh.Error) as exc:
            await self._drop()
            raise RemoteError(f"{self.where}: cannot connect: {_reason(exc)}") from None
        return self._sftp

    async def _drop(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        self._dirs.clear()
        if conn is not None:
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), 2.0)
            except (TimeoutError, OSError, Exception):
                pass

    def _run(self, work: Callable[[Any], Awaitable[T]]) -> T:
        async def attempt() -> T:
            asyncssh = _asyncssh()
            lost = (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection, asyncssh.DisconnectError,
                    asyncssh.ChannelOpenError, OSError)
            for last_try in (False, True):
                reused = self._sftp is not None
                sftp = await self._client()
                try:
                    return await work(sftp)
                except asyncssh.SFTPNoSuchFile as exc:
                    raise FileNotFoundError(2, f"{self.where}: {exc.reason}") from None
                except lost as exc:
                    if isinstance(exc, RemoteError | FileNotFoundError):
                        raise
                    await self._drop()  # the connection is gone (a restarted server, an idle timeout)
                    if last_try or not reused:
                        raise RemoteError(f"{self.where}: {_reason(exc)}") from None
                except asyncssh.Error as exc:
                    raise RemoteError(f"{self.where}: {_reason(exc)}") from None
            raise AssertionError("unreachable")

        return _Portal.call(attempt, self.settings.timeout)

    def _path(self, name: str) -> str:
        return str(PurePosixPath(self.target.path) / name) if name else self.target.path

    # --- the Transport verbs ----------------------------------------------------------------------

    def check(self) -> None:
        self._run(lambda sftp: self._makedirs(sftp, self.target.path))

    async def _makedirs(self, sftp: Any, path: str) -> None:
        if path in self._dirs:
            return
        await sftp.makedirs(path, exist_ok=True)
        self._dirs.add(path)

    def put(self, name: str, data: bytes, *, atomic: bool) -> None:
        self.put_many([(name, data)])

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Upload side by side (at most ``_PARALLEL`` in flight), each atomic: a rename costs one
        round trip here, and a backup's blobs then cost about one round-trip time, not twenty."""

        async def upload(sftp: Any) -> None:
            finals = [(self._path(name), data) for name, data in items]
            for folder in sorted({str(PurePosixPath(final).parent) for final, _ in finals}):
                await self._makedirs(sftp, folder)
            gate = asyncio.Semaphore(_PARALLEL)
            await asyncio.gather(*(self._upload(sftp, gate, final, data) for final, data in finals))

        self._run(upload)

    @staticmethod
    async def _upload(sftp: Any, gate: asyncio.Semaphore, final: str, data: bytes) -> None:
        async with gate:
            path = PurePosixPath(final)
            temp = f"{path.parent}/.{path.name}.{secrets.token_hex(4)}.tmp"
            async with sftp.open(temp, "wb") as handle:
                await handle.write(data)
                with contextlib.suppress(Exception):  # fsync@openssh.com, where the server has it
                    await handle.fsync()
            await sftp.posix_rename(temp, final)

    def get(self, name: str) -> bytes:
        async def download(sftp: Any) -> bytes:
            async with sftp.open(self._path(name), "rb") as handle:
                data: bytes = await handle.read()
                return data

        return self._run(download)

    def list(self, folder: str) -> list[tuple[str, float]]:
        async def walk(sftp: Any) -> list[tuple[str, float]]:
            asyncssh = _asyncssh()
            found: list[tuple[str, float]] = []
            pending = [folder]
            while pending:
                relative = pending.pop()
                try:
                    entries = await sftp.readdir(self._path(relative))
                except asyncssh.SFTPNoSuchFile:
                    continue
                for entry in entries:
                    name = entry.filename if isinstance(entry.filename, str) else entry.filename.decode()
                    if name in (".", ".."):
                        continue
                    inside = f"{relative}/{name}" if relative else name
                    if entry.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                        pending.append(inside)
                    else:
                        found.append((inside, float(entry.attrs.mtime or 0)))
            return found

        return self._run(walk)

    def delete(self, name: str) -> None:
        try:
            self._run(lambda sftp: sftp.remove(self._path(name)))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self._conn is not None:
            try:
                _Portal.call(self._drop, 5.0)
            except OSError:
                pass


def _asyncssh() -> Any:
    """asyncssh, imported without the DSA deprecation warnings of the cryptography it uses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import asyncssh
    return asyncssh


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "reason", None) or (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    return str(text) or type(exc).__name__
