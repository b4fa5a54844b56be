"""Reading Linux ``/proc``: who a process is (start time, group, command) and who holds a port.

Why ``/proc`` and not psutil: these few fields are all the supervisor needs, the daemon is
Linux-only (process groups, SO_PEERCRED, sd_notify), and every call here must be cheap and must
never raise for a process that vanished meanwhile (it returns None instead).

Why the start time: a pid alone is not an identity, the kernel recycles pids. ``(pid, start time
in clock ticks since boot, boot id)`` is, so a record of a process from an earlier daemon life can
be checked against what runs now before anything is signalled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str
    ppid: int
    pgid: int
    session: int
    start_ticks: int

    @property
    def alive(self) -> bool:
        """A zombie has exited; only its parent's wait() is missing."""
        return self.state not in ("Z", "X")


def parse_stat(pid: int, text: str) -> ProcStat | None:
    """Fields of ``/proc/<pid>/stat``; the command name may hold spaces and ')' so split after
    the last ')'."""
    try:
        fields = text[text.rindex(")") + 2 :].split()
        return ProcStat(
            pid=pid,
            state=fields[0],
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            session=int(fields[3]),
            start_ticks=int(fields[19]),
        )
    except (ValueError, IndexError):
        return None


def read_stat(pid: int) -> ProcStat | None:
    try:
        text = (PROC / str(pid) / "stat").read_text(errors="replace")
    except OSError:
        return None
    return parse_stat(pid, text)


def read_cmdline(pid: int) -> tuple[str, ...] | None:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0")[:-1]) if raw else ()


def boot_id() -> str:
    try:
        return (PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return ""


def all_stats() -> list[ProcStat]:
    stats = []
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                stats.append(stat)
    return stats


def group_members(pgid: int, stats: list[ProcStat] | None = None) -> list[ProcStat]:
    """Live processes in process group ``pgid``."""
    return [s for s in (all_stats() if stats is None else stats) if s.pgid == pgid and s.alive]


def children_of(pid: int, stats: list[ProcStat] | None = None) -> list[ProcStat]:
    return [s for s in (all_stats() if stats is None else stats) if s.ppid == pid and s.alive]


def describe(pid: int) -> str:
    """``pid 4242 (python notes_server.py http 8123)`` for messages; the command shortened."""
    cmdline = read_cmdline(pid)
    if not cmdline:
        return f"pid {pid}"
    words = [os.path.basename(cmdline[0]), *cmdline[1:]]
    text = " ".join(words)
    return f"pid {pid} ({text[:117] + '...' if len(text) > 120 else text})"


# --- who listens on a TCP port ---------------------------------------------------------------


def parse_listeners(table: str, port: int) -> set[int]:
    """Socket inodes in LISTEN state (``0A``) on ``port`` from a ``/proc/net/tcp{,6}`` table."""
    inodes: set[int] = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A":
            continue
        try:
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            inode = int(fields[9])
        except (ValueError, IndexError):
            continue
        if local_port == port and inode:
            inodes.add(inode)
    return inodes


def port_listeners(port: int) -> list[int]:
    """Pids holding a listening TCP socket on ``port`` (any address), found through their fds.

    Only processes whose fds this daemon may read are seen (all of them when it runs as root).
    """
    inodes: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            inodes |= parse_listeners((PROC / "net" / name).read_text(), port)
        except OSError:
            continue
    if not inodes:
        return []
    wanted = {f"socket:[{inode}]" for inode in inodes}
    holders = []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(PROC / entry.name / "fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) in wanted:
                        holders.append(int(entry.name))
                        break
                except OSError:
                    continue
    return holders
