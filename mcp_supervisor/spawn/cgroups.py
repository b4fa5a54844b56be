"""Memory and task limits through a cgroup per spawned process tree, and the OOM kill read back.

Why a cgroup per child (not per server): a stdio server's warm instance and a cold probe run side
by side; each gets its own limit, and an OOM kill counted in a fresh cgroup is that child's for
certain. The cgroup is also the sweep's list of members: what is in it belongs to the child,
even a grandchild that called ``setsid``.

Which hierarchy: cgroup v2 when the unified hierarchy has the ``memory`` and ``pids``
controllers, else v1's ``memory`` and ``pids`` hierarchies (both exist on real hosts; this
project's CI has v1 controllers and an empty v2). Everything lives under the daemon's own
cgroup (``/proc/self/cgroup``), in ``mcp-supervisor.<daemon pid>``: under systemd the unit has
``Delegate=yes`` so that subtree is the daemon's to manage. In v2 the daemon first moves itself
to a leaf (``<own>/daemon``; "no internal processes"), but only when its own cgroup holds nothing
but its own processes. Directories are made by the daemon (root) only, never handed to a server.

The child joins its cgroup between fork and exec (``spawn/child.py`` writes ``0`` to a
``cgroup.procs`` descriptor opened here), so nothing it forks escapes the limit. Without usable
cgroups the daemon says once that memory and task limits are not enforced; it never pretends.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from mcp_supervisor.logging import get_logger

log = get_logger("mcp_supervisor.spawn")

_PREFIX = "mcp-supervisor."
_counter = itertools.count(1)


@dataclass(frozen=True)
class Hierarchy:
    """Where children go: one directory per controller (v1) or one for both (v2)."""

    version: int
    memory: Path
    pids: Path


@dataclass
class Support:
    hierarchy: Hierarchy | None = None
    problem: str | None = None
    told: bool = False


_support: Support | None = None


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` -> {controller: path}; the v2 entry is under ``""``."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            found[controller] = parts[2]
    return found


def parse_mountinfo(text: str) -> tuple[Path | None, dict[str, Path]]:
    """``/proc/self/mountinfo`` -> (the cgroup2 mount, {v1 controller: its mount})."""
    v2: Path | None = None
    v1: dict[str, Path] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, extra = left.split(), right.split()
        if len(fields) < 5 or len(extra) < 3:
            continue
        mount = Path(fields[4].replace("\\040", " "))
        if extra[0] == "cgroup2" and v2 is None:
            v2 = mount
        elif extra[0] == "cgroup":
            for option in extra[2].split(","):
                if option in ("memory", "pids"):
                    v1.setdefault(option, mount)
    return v2, v1


def parse_counter(text: str, key: str) -> int:
    """``key N`` from a flat-keyed file (``memory.events``, ``memory.oom_control``); 0 if absent."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def support() -> Support:
    """Detect (once per process) where per-child cgroups can be made, or why not."""
    global _support
    if _support is None:
        _support = _detect()
    return _support


def _read(path: Path | str) -> str:
    with open(path, encoding="ascii", errors="replace") as handle:
        return handle.read()


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _detect() -> Support:
    if os.geteuid() != 0:
        return Support(problem="the daemon is not root, so it cannot make cgroups for its servers")
    try:
        own = parse_proc_cgroup(_read("/proc/self/cgroup"))
        v2, v1 = parse_mountinfo(_read("/proc/self/mountinfo"))
    except OSError as exc:
        return Support(problem=f"cannot read /proc/self/cgroup or mountinfo: {exc.strerror}")
    if v2 is not None and "" in own:
        try:
            controllers = set(_read(v2 / "cgroup.controllers").split())
        except OSError:
            controllers = set()
        if {"memory", "pids"} <= controllers:
            try:
                return Support(_setup_v2(v2 / own[""].lstrip("/")))
            except OSError as exc:
                problem = f"cgroup v2 at {v2} is not delegated to the daemon ({exc.strerror or exc}; under " \
                          "systemd set Delegate=yes in the unit)"
                return Support(problem=problem)
    if "memory" in v1 and "pids" in v1 and "memory" in own and "pids" in own:
        base = f"{_PREFIX}{os.getpid()}"
        memory = v1["memory"] / own["memory"].lstrip("/") / base
        pids = v1["pids"] / own["pids"].lstrip("/") / base
        try:
            for path in (memory, pids):
                _clean_stale(path.parent)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path, 0o755)
        except OSError as exc:
            return Support(problem=f"cannot make a cgroup under {memory.parent}: {exc.strerror or exc}")
        return Support(Hierarchy(1, memory, pids))
    return Support(problem="no cgroup hierarchy with the memory and pids controllers is mounted")


def _setup_v2(own: Path) -> Hierarchy:
    """Move the daemon to ``<own>/daemon``, enable memory+pids below ``<own>``; children in servers."""
    members = set(_read(own / "cgroup.procs").split())
    if members - {str(os.getpid())}:  # a shell's scope, the root cgroup: not the daemon's to reorganise
        raise OSError(0, f"{own} also holds processes that are not the daemon itself")
    with contextlib.suppress(FileExistsError):
        os.mkdir(own / "daemon", 0o755)
    _write(own / "daemon" / "cgroup.procs", str(os.getpid()))  # "no internal processes": the daemon leaves
    _write(own / "cgroup.subtree_control", "+memory +pids")
    base = own / f"{_PREFIX}{os.getpid()}"
    _clean_stale(own)
    with contextlib.suppress(FileExistsError):
        os.mkdir(base, 0o755)
    _write(base / "cgroup.subtree_control", "+memory +pids")
    return Hierarchy(2, base, base)


def _clean_stale(parent: Path) -> None:
    """Remove empty child cgroups a previous daemon (now gone) left under ``parent``."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            name = entry.name
            if not name.startswith(_PREFIX) or not name[len(_PREFIX):].isdigit():
                continue
            pid = int(name[len(_PREFIX):])
            if pid == os.getpid() or Path(f"/proc/{pid}").exists():
                continue
            for sub in os.scandir(entry.path):
                if sub.is_dir(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        os.rmdir(sub.path)
            with contextlib.suppress(OSError):
                os.rmdir(entry.path)


def release() -> None:
    """The daemon is done: remove its (empty) base directories; a child still in one keeps it.
    The next spawn in this process (a test's next supervisor) detects and makes them again."""
    global _support
    state, _support = _support, None
    if state is None or state.hierarchy is None:
        return
    for directory in {state.hierarchy.memory, state.hierarchy.pids}:
        with contextlib.suppress(OSError):
            os.rmdir(directory)


def warn_unenforced(server: str) -> None:
    """Say once per daemon that limits are not enforced, and why (never pretend)."""
    state = support()
    if state.hierarchy is None and not state.told:
        state.told = True
        log.warning("memory and task limits are not enforced: " + (state.problem or "no cgroups"), server=server)


@dataclass
class ChildCgroup:
    """The cgroup(s) of one child: the join descriptors, the OOM read-back, the members, removal."""

    hierarchy: Hierarchy
    dirs: tuple[Path, ...]
    memory_limit: int | None
    join_fds: list[int] = field(default_factory=list)

    def close_join_fds(self) -> None:
        fds, self.join_fds = self.join_fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def _memory_dir(self) -> Path:
        return self.dirs[0]

    def oom_kills(self) -> int:
        """OOM kills inside this child's cgroup (v2 memory.events; v1 memory.oom_control, failcnt)."""
        try:
            if self.hierarchy.version == 2:
                return parse_counter(_read(self._memory_dir / "memory.events"), "oom_kill")
            control = _read(self._memory_dir / "memory.oom_control")
            if "\noom_kill " in "\n" + control:
                return parse_counter(control, "oom_kill")
            # kernels before 4.13 count no kills: a hit limit is the closest sign
            return 1 if int(_read(self._memory_dir / "memory.failcnt").strip() or 0) > 0 else 0
        except (OSError, ValueError):
            return 0

    def members(self) -> list[int]:
        """The processes in the child's cgroup (v1: the pids hierarchy's copy; both hold the same)."""
        try:
            return [int(x) for x in _read(self.dirs[-1] / "cgroup.procs").split()]
        except (OSError, ValueError):
            return []

    def kill_all(self) -> bool:
        """SIGKILL every member (v2: ``cgroup.kill``); True if any was there."""
        pids = self.members()
        if self.hierarchy.version == 2 and pids:
            with contextlib.suppress(OSError):
                _write(self._memory_dir / "cgroup.kill", "1")
                return True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return bool(pids)

    def remove(self) -> bool:
        """rmdir the cgroup(s); False while members remain (the caller kills and retries)."""
        self.close_join_fds()
        done = True
        for directory in self.dirs:
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                continue
            except OSError:
                done = False
        return done


def create(server: str, role: str, *, memory: int | None, tasks: int | None) -> ChildCgroup | None:
    """A fresh cgroup for one child with the limits written; None (said once) without cgroups."""
    state = support()
    hierarchy = state.hierarchy
    if hierarchy is None:
        warn_unenforced(server)
        return None
    name = f"{server}.{role}.{next(_counter)}"
    dirs = (hierarchy.memory / name,) if hierarchy.version == 2 else (hierarchy.memory / name, hierarchy.pids / name)
    made: list[Path] = []
    try:
        for directory in dirs:
            os.mkdir(directory, 0o755)
            made.append(directory)
        group = ChildCgroup(hierarchy, dirs, memory)
        if memory is not None:
            if hierarchy.version == 2:
                _write(dirs[0] / "memory.max", str(memory))
                with contextlib.suppress(OSError):  # "memory" bounds RAM and swap together
                    _write(dirs[0] / "memory.swap.max", "0")
            else:
                _write(dirs[0] / "memory.limit_in_bytes", str(memory))
                with contextlib.suppress(OSError):
                    _write(dirs[0] / "memory.memsw.limit_in_bytes", str(memory))
        if tasks is not None:
            _write(dirs[-1] / "pids.max", str(tasks))
        for directory in dirs:
            group.join_fds.append(os.open(directory / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW))
        return group
    except OSError as exc:
        for directory in made:
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        raise OSError(exc.errno, f"cannot make the cgroup {dirs[0]}: {exc.strerror or exc}") from None
