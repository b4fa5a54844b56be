"""Who a spawned server runs as, and what environment it gets: least privilege by default.

Why a clean environment: the daemon's environment holds every server's tokens (the unit's
``EnvironmentFile``); passing it whole (``{**os.environ, **env}``) hands each server every other
server's secrets. A spawned server (stdio or managed) gets only a base (PATH, HOME/USER/LOGNAME
of the account it runs as, LANG, LC_ALL, TZ), the daemon variables its ``inherit_env`` names, and
its own ``env``.

Why ``nobody`` when the daemon is root and no ``user`` is named: a server is third-party code that
talks to the network; running it as root by accident would hand the host to whoever breaks it.
``user = "root"`` stays possible, deliberately. A daemon that is not root runs servers as itself
and can only accept ``user`` naming its own account (setuid needs root).
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from mcp_supervisor.config import ServerConfig

DEFAULT_USER = "nobody"
NOBODY_ID = 65534
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_VARIABLES = ("PATH", "LANG", "LC_ALL", "TZ")
"""Taken from the daemon's environment when set (PATH falls back to ``DEFAULT_PATH``)."""


class IdentityError(ValueError):
    """``user``/``group`` cannot be used; ``str()`` names the server, the field and the fix."""


@dataclass(frozen=True, slots=True)
class Identity:
    """The account a process runs as; ``switch`` is False when it is the daemon's own."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    switch: bool
    defaulted: bool = False
    """True when the root daemon chose ``nobody`` because no ``user`` was named."""


def _lookup_group(server: ServerConfig, value: str) -> int:
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        if value.isdigit():
            return int(value)
    raise IdentityError(
        f"server {server.name!r}: group = {value!r} is not a group on this host "
        "(check /etc/group, or use a number)"
    )


def resolve_identity(server: ServerConfig, daemon_euid: int | None = None) -> Identity:
    """The account ``server``'s process runs as, or IdentityError with the fix."""
    euid = os.geteuid() if daemon_euid is None else daemon_euid
    name = server.user
    defaulted = False
    if name is None:
        if euid != 0:
            entry = _pw_by_uid(euid)
            home = entry.pw_dir if entry else os.environ.get("HOME", "/")
            user = entry.pw_name if entry else str(euid)
            _same_group_or_fail(server, euid)
            return Identity(user, euid, os.getegid(), tuple(os.getgroups()), home, switch=False)
        name, defaulted = DEFAULT_USER, True
    entry = _pw_by_name(name)
    if entry is None:
        if name == DEFAULT_USER:  # a minimal image without the account: its well-known number
            uid, gid, home = NOBODY_ID, NOBODY_ID, "/nonexistent"
        elif name.isdigit():
            uid, gid, home = int(name), int(name), "/"
        else:
            raise IdentityError(
                f"server {server.name!r}: user = {name!r} is not an account on this host "
                "(check /etc/passwd, create it with useradd --system, or use a number)"
            )
    else:
        uid, gid, home = entry.pw_uid, entry.pw_gid, entry.pw_dir
    if server.group:
        gid = _lookup_group(server, server.group)
    if euid != 0:
        if uid == euid:
            _same_group_or_fail(server, euid)
            return Identity(name, uid, os.getegid(), tuple(os.getgroups()), home, switch=False)
        raise IdentityError(
            f"server {server.name!r}: user = {name!r} needs a daemon running as root (this one runs as uid "
            f"{euid}); remove 'user' to run the server as the daemon's own account"
        )
    groups = tuple(os.getgrouplist(entry.pw_name, gid)) if entry is not None else (gid,)
    return Identity(name, uid, gid, groups, home, switch=True, defaulted=defaulted)


def _same_group_or_fail(server: ServerConfig, euid: int) -> None:
    if server.group and _lookup_group(server, server.group) != os.getegid():
        raise IdentityError(
            f"server {server.name!r}: group = {server.group!r} needs a daemon running as root (this one runs as "
            f"uid {euid}, gid {os.getegid()}); remove 'group'"
        )


def _pw_by_name(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _pw_by_uid(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


def build_environment(
    server: ServerConfig, identity: Identity, daemon_env: Mapping[str, str], home: str | None = None
) -> dict[str, str]:
    """Base + ``inherit_env`` + the server's own ``env`` (pure: the caller passes the daemon's env).

    ``home`` is the HOME ``spawn/home.py`` chose (the account's, or a private one under the state
    directory); default: the account's home as written in passwd.
    """
    env = {key: daemon_env[key] for key in BASE_VARIABLES if daemon_env.get(key)}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(HOME=home or identity.home, USER=identity.name, LOGNAME=identity.name)
    for key in server.inherit_env:
        if key in daemon_env:
            env[key] = daemon_env[key]
    env.update(server.env)
    return env


def stop_signal(server: ServerConfig) -> signal.Signals:
    return signal.Signals[f"SIG{server.stop_signal}"]
