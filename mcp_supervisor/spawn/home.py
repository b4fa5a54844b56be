"""HOME for a spawned server, and the state directory's modes: writable by the server, private to it.

Why: ``npx`` and ``uvx`` write their caches under HOME; ``nobody``'s home (``/nonexistent``)
does not exist, so a server run as ``nobody`` needs one. The account's own home is used when it
exists and the account can write it; otherwise ``<state_dir>/homes/<server>`` is created, mode
0700 and owned by that account.

Read as an attacker owning one directory would: every step below works on directory file
descriptors opened with ``O_NOFOLLOW``; ownership is changed with ``fchown`` on an fd of the
directory just opened, never through a path (a symlink swapped in could hand root's chown to any
file). ``homes`` itself belongs to the daemon and is mode 0711: a server can reach its own home
by name but cannot list or enter anyone else's. The state directory is 0711 for the same reason
(everything else in it is the daemon's, 0700/0600); under a daemon that is not root, whose
servers run as the daemon's own account, both are 0700.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

from mcp_supervisor.spawn.identity import Identity

HOMES_DIR = "homes"


def state_mode() -> int:
    """The state directory's mode: under a root daemon others may pass through to their home in
    ``homes`` (0711), never list or read; a user daemon's servers are the daemon's own account (0700)."""
    return 0o711 if os.geteuid() == 0 else 0o700


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_fallback_base: Path | None = None


class HomeError(OSError):
    """The private home cannot be made; ``str()`` names the directory and the fix."""


def choose_home(identity: Identity, server: str, state_dir: Path | None, *, create: bool = True) -> str:
    """HOME for ``server`` run as ``identity``: the account's own if usable, else a private one."""
    if own_home_usable(identity):
        return identity.home
    base = Path(state_dir) if state_dir is not None else _fallback()
    if not create:
        return str(base / HOMES_DIR / server)
    return private_home(base, server, identity.uid, identity.gid)


def own_home_usable(identity: Identity) -> bool:
    """Does the account's passwd home exist as a directory it can write and enter?"""
    try:
        info = os.stat(identity.home)
        if os.statvfs(identity.home).f_flag & os.ST_RDONLY:
            return False  # e.g. ProtectHome=read-only in the unit: npx/uvx could not write there
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or identity.home in ("", "/"):
        return False
    if identity.uid == 0:
        return True
    if info.st_uid == identity.uid:
        bits = (info.st_mode >> 6) & 0o7
    elif info.st_gid in (identity.gid, *identity.groups):
        bits = (info.st_mode >> 3) & 0o7
    else:
        bits = info.st_mode & 0o7
    return bits & 0o3 == 0o3


def prepare_state_dir(state_dir: Path) -> int:
    """Create the state directory (0711, the daemon's own) and return an fd of it (caller closes).

    An existing directory that is group/world writable or not the daemon's is refused: a root
    daemon must not create homes or logs inside a directory someone else controls.
    """
    path = Path(os.path.expanduser(str(state_dir)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, state_mode())
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise HomeError(exc.errno, f"cannot open the state directory {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        os.close(fd)
        raise HomeError(errno.EPERM, f"the state directory {path} must belong to uid {os.geteuid()} and be "
                        f"writable by nobody else (fix: chown {os.geteuid()} {path}; chmod {state_mode():o} {path})")
    if stat.S_IMODE(info.st_mode) != state_mode():
        os.fchmod(fd, state_mode())
    return fd


def private_dir(parent_fd: int, name: str, mode: int, *, parent: Path) -> int:
    """Open (creating) ``name`` under ``parent_fd`` as the daemon's own directory with ``mode``."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, mode, dir_fd=parent_fd)
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        raise HomeError(exc.errno, f"cannot open {parent / name}: {exc.strerror} (is it a symlink? remove it)") \
            from None
    info = os.fstat(fd)
    if info.st_uid != os.geteuid():
        os.close(fd)
        raise HomeError(errno.EPERM, f"{parent / name} must belong to uid {os.geteuid()} (remove it; the "
                        "supervisor makes it again)")
    if stat.S_IMODE(info.st_mode) != mode:
        os.fchmod(fd, mode)
    return fd


def private_home(state_dir: Path, server: str, uid: int, gid: int) -> str:
    """``<state_dir>/homes/<server>``, 0700 and owned by ``uid:gid`` (made through dir fds)."""
    if not server or server in (".", "..") or "/" in server or "\0" in server:
        raise ValueError(f"not a server name: {server!r}")
    state_fd = prepare_state_dir(state_dir)
    homes_fd = home_fd = -1
    try:
        homes_fd = private_dir(state_fd, HOMES_DIR, state_mode(), parent=Path(state_dir))
        with contextlib.suppress(FileExistsError):
            os.mkdir(server, 0o700, dir_fd=homes_fd)
        where = Path(state_dir) / HOMES_DIR / server
        try:
            home_fd = os.open(server, _DIR_FLAGS, dir_fd=homes_fd)
        except OSError as exc:
            raise HomeError(exc.errno, f"cannot open {where}: {exc.strerror} (remove it; the supervisor makes "
                            "it again)") from None
        info = os.fstat(home_fd)
        if (info.st_uid, info.st_gid) != (uid, gid) and os.geteuid() == 0:
            os.fchown(home_fd, uid, gid)  # on the fd just opened with O_NOFOLLOW: never through a link
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(home_fd, 0o700)
        return str(where)
    finally:
        for fd in (home_fd, homes_fd, state_fd):
            if fd >= 0:
                os.close(fd)


def _fallback() -> Path:
    """Without a state directory (a library caller, a test): one private temp base per process."""
    global _fallback_base
    if _fallback_base is None:
        _fallback_base = Path(tempfile.mkdtemp(prefix="mcp-supervisor-homes-"))
        os.chmod(_fallback_base, state_mode())
        atexit.register(shutil.rmtree, _fallback_base, True)  # caches of a one-off run go with it
    return _fallback_base
