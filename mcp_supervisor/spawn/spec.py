"""What one spawn will do, decided before anything runs: ``spec_for_server`` and ``SpawnRefused``.

Why a spec apart from the spawn: every refusal (unknown account, a directory on the way the
account cannot enter, a HOME that cannot be made) is found here, as text that names the field
and the fix, and ``check-config`` asks the same question without starting anything.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mcp_supervisor.config import LimitsConfig, ServerConfig
from mcp_supervisor.logging import get_logger
from mcp_supervisor.spawn import access
from mcp_supervisor.spawn.home import HomeError, choose_home
from mcp_supervisor.spawn.identity import Identity, IdentityError, build_environment, resolve_identity, stop_signal

log = get_logger("mcp_supervisor.spawn")

Role = Literal["probe", "warm", "managed", "backend", "standby"]


class SpawnRefused(Exception):
    """The server cannot be started as configured; ``str()`` names the field and the fix."""


@dataclass(frozen=True)
class SpawnSpec:
    """Everything ``spawn()`` needs; immutable, so one spec may serve several spawns."""

    server: str
    role: Role
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None
    identity: Identity
    home: str
    limits: LimitsConfig
    stop_signal: signal.Signals
    grace: float
    state_dir: Path | None
    record: bool
    """Put on record in ``<state_dir>/processes`` while it runs (managed servers)."""

    @property
    def switch(self) -> bool:
        """Does the child need setuid/setgid/setgroups? Not when it would get the daemon's own
        account and groups (the primary group counts as a membership either way): then no Python
        runs between fork and exec and CPython may use vfork, a fork of a big daemon costs ms."""
        ident = self.identity
        if not ident.switch:
            return False
        if ident.uid != os.geteuid() or ident.gid != os.getegid():
            return True
        return set(ident.groups) - {ident.gid} != set(os.getgroups()) - {ident.gid}


def spec_for_server(
    server: ServerConfig,
    *,
    state_dir: Path | None,
    role: Role,
    daemon_env: Mapping[str, str] | None = None,
    grace: float = 2.0,
    create_home: bool = True,
) -> SpawnSpec:
    """The spawn of ``server`` in ``role``, or SpawnRefused naming the field and the fix."""
    if not server.command:
        raise SpawnRefused(f"server {server.name!r} has no 'command' to start")
    try:
        identity = resolve_identity(server)
    except IdentityError as exc:
        raise SpawnRefused(str(exc)) from None
    try:
        home = choose_home(identity, server.name, state_dir, create=create_home)
    except (HomeError, OSError) as exc:
        raise SpawnRefused(f"server {server.name!r}: cannot make a HOME for {identity.name}: {exc.strerror or exc}") \
            from None
    if home != identity.home and create_home:
        _check_home(server.name, identity, home)
    environ = os.environ if daemon_env is None else daemon_env
    env = build_environment(server, identity, environ, home)
    cwd = str(server.cwd) if server.cwd else None
    try:
        access.check(identity, server.command, env.get("PATH", ""), cwd)
    except access.AccessProblem as exc:
        raise SpawnRefused(f"server {server.name!r}: {exc}; {_fix(identity)}") from None
    return SpawnSpec(
        server=server.name,
        role=role,
        argv=(server.command, *server.args),
        env=env,
        cwd=cwd,
        identity=identity,
        home=home,
        limits=server.limits,
        stop_signal=stop_signal(server),
        grace=server.stop_timeout if server.stop_timeout is not None else grace,
        state_dir=state_dir,
        record=role == "managed",
    )


_told_home: set[tuple[str, str]] = set()


def _check_home(server: str, identity: Identity, home: str) -> None:
    """A private HOME the account cannot reach (a state_dir under a 0700 directory) is said once:
    many servers never touch HOME, so it is a warning, not a refusal."""
    try:
        access.walk(identity, Path(home), "use its HOME", 0o3)
    except access.AccessProblem as exc:
        if (server, str(exc)) not in _told_home:
            _told_home.add((server, str(exc)))
            log.warning(f"{exc}; make the state directory's parents enterable (chmod o+x) or set user", server=server)


def _fix(identity: Identity) -> str:
    why = " (the default under a root daemon: 'user' is not set)" if identity.defaulted else ""
    return (f"it runs as {identity.name}{why}: set user = \"ACCOUNT\" to an account that can, or install the "
            f"server where {identity.name} can read it")


def root_warning(server: ServerConfig) -> str | None:
    """check-config: the text when a root daemon would run ``server`` as root; None otherwise.

    Unset ``user`` means ``nobody`` under a root daemon, so only a written root account warns.
    """
    if not server.spawned or server.container or server.user is None:
        return None
    if server.user != "0" and _uid_of(server.user) != 0:
        return None
    return (f"server {server.name!r}: a root daemon runs it as root (user = {server.user!r}), third-party code "
            "with every privilege; name an unprivileged account unless it truly needs root")


def _uid_of(name: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None
