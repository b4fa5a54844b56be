"""The control socket: a directory nobody else controls, a socket file, and who the peer is.

Why the directory is checked, not only created: a socket in a directory another user owns (or may
write) can be replaced by theirs, and the job would then ask an impostor "ready?". So every
directory from ``/`` down to the socket's must belong to root or to the daemon's user; only the
socket's own may not be writable by group or others, and the ones above it only when sticky
(``/tmp``), where nobody can rename what is ours. Anything else: the daemon refuses to start and
says which directory, whose it is and what to do.

Why the socket's mode depends on ``allowed_uids``/``allowed_gids``: with none, only root and the
daemon's user may talk to it (directory 0700, socket 0660); with some, others must be able to
reach and connect (directory 0711, socket 0666) and SO_PEERCRED, checked on every request, is the
gate. Supplementary groups count: a peer's groups are read from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from pathlib import Path

from mcp_supervisor.logging import get_logger

log = get_logger("mcp_supervisor.api")

PRIVATE_DIR_MODE = 0o700
SHARED_DIR_MODE = 0o711
"""Others may pass through (to reach the socket) but not list or write."""
PRIVATE_SOCKET_MODE = 0o660
SHARED_SOCKET_MODE = 0o666
_PEERCRED = struct.Struct("3i")
SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


def listen_backlog() -> int:
    """The longest accept queue the kernel allows (``net.core.somaxconn``; 4096 on recent kernels).

    Why the most: when hundreds of clients connect at once, a connection that finds the queue full
    is refused at once (EAGAIN); a job's ``ready`` must not fail because of someone else's flood.
    A queued connection costs the kernel a little memory and the daemon nothing until accepted.
    """
    try:
        return max(int(SOMAXCONN.read_text().strip()), socket.SOMAXCONN)
    except (OSError, ValueError):
        return socket.SOMAXCONN


class ApiStartError(RuntimeError):
    """The API cannot listen on its socket; ``str()`` says why and what to do."""


def _owner_ok(st: os.stat_result, euid: int) -> bool:
    return st.st_uid in (0, euid)


def check_directory(path: Path, st: os.stat_result, *, final: bool, euid: int) -> None:
    """Refuse a directory someone else controls (pure: decides from ``lstat`` results)."""
    fix = "remove it (or fix its owner and mode), or choose another path with --socket or [supervisor] socket"
    if stat.S_ISLNK(st.st_mode):
        raise ApiStartError(f"{path} became a symbolic link while the socket directory was checked; {fix}")
    if not stat.S_ISDIR(st.st_mode):
        raise ApiStartError(f"{path} is not a directory; {fix}")
    if not _owner_ok(st, euid):
        raise ApiStartError(
            f"the control socket's directory {path} belongs to uid {st.st_uid}, not to this daemon (uid {euid}) "
            f"or root: another user could replace the socket and answer for the daemon; {fix}"
        )
    writable_by_others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable_by_others and (final or not st.st_mode & stat.S_ISVTX):
        raise ApiStartError(
            f"the control socket's directory {path} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): another user could replace the socket; {fix}"
        )


def prepare_socket_dir(directory: Path, *, shared: bool) -> Path:
    """Create (mode 0700/0711) or verify the socket's directory and every one above it.

    Returns the resolved directory: the socket is bound there, so no symlink is followed later.
    """
    euid = os.geteuid()
    resolved = Path(os.path.realpath(directory))
    mode = SHARED_DIR_MODE if shared else PRIVATE_DIR_MODE
    chain = [Path(*resolved.parts[: i + 1]) for i in range(len(resolved.parts))]
    for path in chain:  # from / down: each one is trusted before anything is created inside it
        final = path == resolved
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            try:
                os.mkdir(path, mode if final else 0o755)
                os.chmod(path, mode if final else 0o755)  # mkdir applies the umask; the parent is trusted
            except FileExistsError:
                pass  # created meanwhile: checked below like any existing directory
            except OSError as exc:
                raise ApiStartError(
                    f"cannot create the control socket's directory {path}: {exc.strerror or exc} "
                    "(create it, or choose another path with --socket or [supervisor] socket)"
                ) from None
            st = os.lstat(path)
        check_directory(path, st, final=final, euid=euid)
    if shared and not os.stat(resolved).st_mode & stat.S_IXOTH:
        log.warning("allowed_uids/allowed_gids are set but others cannot enter the socket's directory; "
                    "give it o+x (systemd: RuntimeDirectoryMode=0711)", directory=str(resolved))
    return resolved


def _someone_listens(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        return True  # e.g. EAGAIN (backlog full) or a timeout: something is there
    finally:
        probe.close()
    return True


def bind_socket(path: Path, *, shared: bool = False) -> tuple[socket.socket, Path]:
    """A listening socket in a checked directory, replacing only a stale (dead) socket file.

    Returns the socket and the path it is bound at (the directory resolved).
    """
    path = prepare_socket_dir(path.parent, shared=shared) / path.name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise ApiStartError(
                f"{path} exists and is not a socket; refusing to replace it (remove it or choose "
                "another path with --socket or [supervisor] socket)"
            )
        if _someone_listens(path):
            raise ApiStartError(
                f"another mcp-supervisor is already listening on {path}; stop it first "
                "(or give this one another --socket)"
            )
        log.info("removing a stale control socket", socket=str(path))
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        # before listen() nobody can connect, so there is no window with a wider mode; a
        # process-wide umask change would race with other threads creating files
        os.chmod(path, SHARED_SOCKET_MODE if shared else PRIVATE_SOCKET_MODE)
        sock.listen(listen_backlog())
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ApiStartError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    return sock, path


def peer_credentials(sock: socket.socket | None) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the peer, from the kernel; None when the transport has no Unix socket."""
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


def parse_groups(status_text: str) -> frozenset[int]:
    """The ``Groups:`` line of ``/proc/<pid>/status`` (pure)."""
    for line in status_text.splitlines():
        if line.startswith("Groups:"):
            return frozenset(int(g) for g in line.split()[1:] if g.isdigit())
    return frozenset()


def peer_groups(pid: int, uid: int) -> frozenset[int]:
    """Supplementary groups of the peer, if it is still the process that connected."""
    try:
        status_path = f"/proc/{pid}/status"
        if os.stat(status_path).st_uid != uid:  # pid reused by someone else: trust nothing
            return frozenset()
        with open(status_path, encoding="ascii", errors="replace") as handle:
            return parse_groups(handle.read())
    except OSError:
        return frozenset()
