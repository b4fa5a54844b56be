"""File operations a root daemon can do in a directory somebody else owns, without being tricked.

Why each rule (read as an attacker who owns one home directory would):

* Paths are walked one component at a time from ``/`` with ``O_NOFOLLOW``: a symlink is followed
  only when nobody but root (or the daemon's own user) could have planted it, so a user cannot
  point the daemon at ``/etc`` by replacing a folder of her own with a link.
* Everything after the walk is relative to the directory's descriptor (``dir_fd``), so a folder
  renamed away mid-operation cannot redirect the rest.
* The watched file is opened with ``O_NOFOLLOW | O_NONBLOCK`` only after ``lstat`` says it is a
  regular file: a link to ``/etc/shadow`` is never read, a FIFO never blocks, a device never opens.
* New files are created ``O_EXCL | O_NOFOLLOW`` under a random name and renamed into place; kept
  copies are renamed with ``RENAME_NOREPLACE`` under a nanosecond + random name, so nothing
  planted at those names is followed and nothing kept is ever overwritten.
* In a directory owned by another user, a root daemon writes from a helper process
  (``owner_helper.py``, started with ``subprocess``: never ``os.fork()`` from a threaded daemon)
  that has dropped to that user (``setgroups``/``setgid``/``setuid``): whatever goes wrong, it
  cannot do more than the user could herself, and the files it creates are hers.

Stdlib only and free of daemon state, so the helper runs nothing but these functions.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from typing import Any

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 16
MAX_FILE_BYTES = 64 * 1024 * 1024
TEMP_GRACE_S = 60.0
"""A temp file older than this is left over from an interrupted write (ours take milliseconds)."""
_RENAME_NOREPLACE = 1


class PathRefused(OSError):
    """The path is not something the daemon will touch; ``str()`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EPERM, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def trusted_uids() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def _link_is_trusted(link: os.stat_result, parent: os.stat_result, trusted: frozenset[int]) -> bool:
    """A link only root (or we) could have put there: owned by us, in a folder others cannot write
    (or a sticky one like /tmp, where only a link's owner may replace it)."""
    if link.st_uid not in trusted or parent.st_uid not in trusted:
        return False
    return not parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or bool(parent.st_mode & stat.S_ISVTX)


def open_dir(path: str, trusted: frozenset[int] | None = None) -> int:
    """A descriptor of directory ``path``, reached without following links an untrusted user planted."""
    if not os.path.isabs(path):
        raise PathRefused(f"{path}: not an absolute path")
    trusted = trusted_uids() if trusted is None else trusted
    parts = [p for p in path.split("/") if p not in ("", ".")]
    fd = os.open("/", _DIR_FLAGS)
    walked = ""
    hops = 0
    try:
        while parts:
            part = parts.pop(0)
            try:
                new = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise OSError(exc.errno, exc.strerror, f"{walked}/{part}") from None
                info = os.stat(part, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(info.st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory", f"{walked}/{part}") from None
                parent = os.fstat(fd)
                if not _link_is_trusted(info, parent, trusted):
                    raise PathRefused(
                        f"{walked}/{part} is a symbolic link in a folder owned by uid {parent.st_uid}: "
                        "the daemon does not follow links a user could have planted (use the real path)"
                    ) from None
                hops += 1
                if hops > _MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links", path) from None
                target = os.readlink(part, dir_fd=fd)
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", _DIR_FLAGS)
                    walked = ""
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            os.close(fd)
            fd = new
            walked = f"{walked}/{part}"
        return fd
    except BaseException:
        os.close(fd)
        raise


@dataclass(frozen=True)
class ReadResult:
    content: bytes
    info: os.stat_result


def read_regular(dir_fd: int, name: str, limit: int = MAX_FILE_BYTES) -> ReadResult:
    """The content of regular file ``name``; PathRefused for links, folders, devices, pipes."""
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        raise PathRefused(
            "is a symbolic link: the daemon never reads or writes through links in watched folders "
            "(point [[configs]] path at the real file)"
        )
    if not stat.S_ISREG(info.st_mode):
        raise PathRefused("not a regular file (a directory, device or pipe took its place)")
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
            raise PathRefused("changed while being opened (try again)")
        owner = os.fstat(dir_fd).st_uid
        if now.st_nlink > 1 and now.st_uid not in (owner, os.geteuid()):
            raise PathRefused(
                f"is a hard link to a file of uid {now.st_uid}, not of the folder's owner (uid {owner}): refusing to read it"
            )
        if now.st_size > limit:
            raise PathRefused(f"is {now.st_size} bytes, more than the {limit} a config file may have")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise PathRefused(f"grew past the {limit} bytes a config file may have")
        return ReadResult(b"".join(chunks), now)
    finally:
        os.close(fd)


def kept_name(name: str, label: str) -> str:
    """``NAME.LABEL-<UTC second>.<nanoseconds>Z-<random>``: sorts by time, never repeats."""
    ns = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 1_000_000_000))
    return f"{name}.{label}-{stamp}.{ns % 1_000_000_000:09d}Z-{secrets.token_hex(3)}"


def _load_renameat2() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None


_renameat2 = _load_renameat2()


def rename_noreplace(dir_fd: int, old: str, new: str) -> None:
    """Rename within ``dir_fd``; FileExistsError rather than replacing whatever is at ``new``."""
    if _renameat2 is not None:
        if _renameat2(dir_fd, os.fsencode(old), dir_fd, os.fsencode(new), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), new)
    # file systems without RENAME_NOREPLACE: link() never replaces either (not for folders)
    os.link(old, new, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    os.unlink(old, dir_fd=dir_fd)


def set_aside(dir_fd: int, name: str, label: str) -> str | None:
    """Keep whatever is at ``name`` (file, link, folder) under a new unique name; None if nothing.

    A file or link is kept by a hard link, so ``name`` never disappears while its replacement is
    written (a reader sees the old file or the new one); a folder can only be renamed away.
    """
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    for _ in range(8):
        kept = kept_name(name, label)
        try:
            if not stat.S_ISDIR(info.st_mode):
                try:
                    os.link(name, kept, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                    return kept
                except PermissionError:
                    pass  # protected_hardlinks: not ours to link; rename it instead
            rename_noreplace(dir_fd, name, kept)
            return kept
        except FileExistsError:
            continue
    raise PathRefused(f"could not find a free name to keep {name} under")


def _temp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(6)}.tmp"


def temp_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{12}}\.tmp")


def write_replace(dir_fd: int, name: str, data: bytes, mode: int, uid: int | None = None, gid: int | None = None) -> None:
    """Atomically put ``data`` at ``name``: exclusive temp file, fsync, rename, fsync the folder."""
    tmp = _temp_name(name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if uid is not None or gid is not None:
                try:
                    os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
                except PermissionError:
                    pass  # not root, not a member of that group: the file stays ours
            os.fchmod(fd, mode)  # after chown, which clears set-id bits
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    os.fsync(dir_fd)


def collect_temp(dir_fd: int, name: str, older_than: float = TEMP_GRACE_S) -> list[str]:
    """Remove our own temp files for ``name`` left by a write that was killed midway."""
    pattern = temp_pattern(name)
    removed = []
    cutoff = time.time() - older_than
    for entry in os.listdir(dir_fd):
        if not pattern.fullmatch(entry):
            continue
        try:
            info = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                os.unlink(entry, dir_fd=dir_fd)  # unlink never follows a link
                removed.append(entry)
        except OSError:
            continue
    return removed


@dataclass(frozen=True)
class Put:
    """How ``put_file`` writes: the file's ``mode``, owner (None: ours), the label of the kept copy
    of what was there (None: not kept), and whether anything but a regular file there is refused."""

    mode: int
    uid: int | None = None
    gid: int | None = None
    aside_label: str | None = None
    only_regular: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "uid": self.uid, "gid": self.gid, "aside_label": self.aside_label,
                "only_regular": self.only_regular}


def put_file(dir_fd: int, name: str, data: bytes, how: Put) -> dict[str, Any]:
    """Set aside what is at ``name`` (when asked), then write ``data`` there; returns the kept name."""
    try:
        existing: os.stat_result | None = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        existing = None
    if existing is not None and how.only_regular and not stat.S_ISREG(existing.st_mode):
        raise PathRefused(f"{name} is {describe_mode(existing.st_mode)}, not a regular file: refusing to replace it")
    kept = set_aside(dir_fd, name, how.aside_label) if existing is not None and how.aside_label else None
    write_replace(dir_fd, name, data, how.mode, how.uid, how.gid)
    collect_temp(dir_fd, name)
    return {"kept": kept}


def describe_mode(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device node"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"
