"""Can this account execute that command? Answered before the spawn, with the reason and the fix.

Why: a server moved from root to ``nobody`` fails with a bare "Permission denied" from exec, or
worse with an interpreter's traceback about a module it cannot read. The usual cause is a
directory on the way: ``/root`` is 0700, so nothing under ``/root/.venv`` or ``/root/.npm`` runs as
``nobody``. This walks the path (and a script's ``#!`` interpreter, and ``cwd``) with the
account's uid and groups against the mode bits, and names the first directory or file in the way.
ACLs are not read: a directory an ACL opens passes the exec itself; one it closes fails at exec
with the kernel's own error.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mcp_supervisor.spawn.identity import Identity

_SHEBANG_MAX = 256


class AccessProblem(Exception):
    """``str()``: "cannot execute X as U: /root is 0700 (owner root)"; ``path`` the culprit."""


def _bits(identity: Identity, info: os.stat_result) -> int:
    if identity.uid == 0:
        return 0o7 if stat.S_ISDIR(info.st_mode) or info.st_mode & 0o111 else 0o6
    if info.st_uid == identity.uid:
        return (info.st_mode >> 6) & 0o7
    if info.st_gid == identity.gid or info.st_gid in identity.groups:
        return (info.st_mode >> 3) & 0o7
    return info.st_mode & 0o7


def _owner(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def walk(identity: Identity, path: Path, what: str, need: int) -> None:
    """Every directory above ``path`` must be enterable; ``path`` itself needs ``need`` bits."""
    current = Path("/")
    for part in path.parts[1:]:
        try:
            info = os.stat(current)
        except OSError:
            return  # let the spawn report what is missing
        if not _bits(identity, info) & 0o1:
            raise AccessProblem(f"cannot {what} {path} as {identity.name}: {current} is "
                                f"{stat.S_IMODE(info.st_mode):04o} (owner {_owner(info.st_uid)})")
        current = current / part
    try:
        info = os.stat(path)
    except OSError:
        return
    if _bits(identity, info) & need != need:
        raise AccessProblem(f"cannot {what} {path} as {identity.name}: it is {stat.S_IMODE(info.st_mode):04o} "
                            f"(owner {_owner(info.st_uid)})")


def resolve(command: str, path_var: str, cwd: str | None) -> Path | None:
    """The file ``command`` names, searched like exec does (``PATH`` of the child's environment)."""
    if "/" in command:
        candidate = Path(command) if os.path.isabs(command) else Path(cwd or os.getcwd()) / command
        return candidate
    for directory in path_var.split(os.pathsep):
        candidate = Path(directory or ".") / command
        if candidate.is_file() and os.access(candidate, os.X_OK, effective_ids=True):
            return candidate if candidate.is_absolute() else Path(cwd or os.getcwd()) / candidate
    return None


def _interpreter(path: Path) -> tuple[str, ...]:
    """The ``#!`` line of a regular file (never blocks on a FIFO, never reads past 256 bytes)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ()
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ()
        head = os.read(fd, _SHEBANG_MAX)
    except OSError:
        return ()
    finally:
        os.close(fd)
    if not head.startswith(b"#!"):
        return ()
    return tuple(head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split())


def check(identity: Identity, command: str, path_var: str, cwd: str | None) -> Path | None:
    """Raise AccessProblem if ``identity`` cannot run ``command`` (in ``cwd``); the resolved path."""
    if cwd:
        walk(identity, Path(cwd).resolve(), "enter the working directory", 0o1)
    found = resolve(command, path_var, cwd)
    if found is None:
        return None  # not found at all: the spawn's own error says so
    walk(identity, Path(os.path.abspath(found)), "execute", 0o1)
    real = Path(os.path.realpath(found))
    if real != Path(os.path.abspath(found)):
        walk(identity, real, "execute", 0o1)
    interpreter = _interpreter(real)
    if interpreter:
        walk(identity, real, "read the script", 0o4)
        program = interpreter[0]
        if os.path.basename(program) == "env" and len(interpreter) > 1:
            target = resolve(interpreter[-1], path_var, cwd) if not interpreter[-1].startswith("-") else None
            if target is not None:
                walk(identity, Path(os.path.realpath(target)), "execute", 0o1)
        elif program.startswith("/"):
            walk(identity, Path(os.path.realpath(program)), "execute", 0o1)
    return found
