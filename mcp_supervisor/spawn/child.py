"""``spawn()``: start one child by its spec; ``Child``: wait for it, stop it, sweep what it left.

Why ``subprocess.Popen`` and a pidfd, not ``asyncio.create_subprocess_exec``: Popen does the
setgroups/setgid/setuid, ``umask``, ``setsid`` and ``cwd`` in C between fork and exec (no Python
runs in the child unless a limit needs it, see below), and on Python 3.11 asyncio's
``Process.wait()`` returns only once every pipe it made is closed, so a grandchild holding stdout
would hide the leader's death. The exit is noticed through a pidfd registered with the event
loop (no thread per child, no polling), and reaped with ``waitpid(pid, WNOHANG)`` for that pid only
(a kernel without pidfds, before 5.3, gets one thread per child blocked in ``waitpid``).

Limits: ``memory``/``tasks`` are a cgroup of the child's own (``spawn/cgroups.py``); the child
joins it between fork and exec by writing ``0`` to a ``cgroup.procs`` descriptor the parent
opened, and ``open_files`` is a ``setrlimit`` there too. That is the one case with a
``preexec_fn``: two system calls on prepared integers, no imports, no locks, no allocation worth
the name; everything that could block or take a lock (opening files, formatting) is done in the
parent before the fork. Without limits no Python runs in the child at all, and when the account
is the daemon's own CPython may even ``vfork``.

After the leader exits its process group is swept (TERM, grace, KILL): a child of the server that
ignores SIGTERM does not survive it. With a cgroup the sweep works on the cgroup's members, which
also holds what left the group with ``setsid``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from mcp_supervisor.logging import get_logger
from mcp_supervisor.spawn import cgroups
from mcp_supervisor.spawn.records import ProcessRecords, records_for
from mcp_supervisor.spawn.spec import SpawnSpec
from mcp_supervisor.spawn.sweep import sweep_group

log = get_logger("mcp_supervisor.spawn")

_KILL_WAIT = 2.0
_SWEEP_GRACE = 1.0


@dataclass(frozen=True)
class ExitInfo:
    """How a child ended, as an operator reads it (``text``)."""

    returncode: int | None
    signal: int | None
    oom: bool
    text: str
    limit: str | None = None
    """The memory limit in force (``"512M"``), for the OOM text."""


def exit_text(returncode: int | None, *, oom: bool = False, limit: str | None = None) -> str:
    """'exited with code 1', 'killed by SIGKILL', 'killed by the kernel: out of memory (limit 64M)'."""
    if oom:
        return "killed by the kernel: out of memory" + (f" (limit {limit})" if limit else "")
    if returncode is None:
        return "exited"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class Child:
    """One running child: its pid (= process group), its pipes (stdio), its exit."""

    def __init__(self, spec: SpawnSpec, popen: subprocess.Popen[bytes], *, stdin: int | None, stdout: int | None,
                 cgroup: cgroups.ChildCgroup | None, records: ProcessRecords | None) -> None:
        self.spec = spec
        self.pid = popen.pid
        self.pgid = popen.pid
        self.stdin = stdin
        """Parent's non-blocking write end of the child's stdin (stdio only; closed by the transport)."""
        self.stdout = stdout
        """Parent's non-blocking read end of the child's stdout (stdio only)."""
        self.started_at = time.monotonic()
        self._popen = popen
        self._cgroup = cgroup
        self._records = records
        self._oom = False
        self._returncode: int | None = None
        self._done = False
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[None] = loop.create_future()
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except OSError:  # a kernel before 5.3: one thread blocked in waitpid for this child
            self._pidfd = -1
            threading.Thread(target=self._wait_blocking, args=(loop,), daemon=True,
                             name=f"wait:{self.pid}").start()
            return
        loop.add_reader(self._pidfd, self._reap)
        self._reap()  # it may have died already

    # --- exit -------------------------------------------------------------------------------

    def _wait_blocking(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = 0
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(self._reaped, status)

    def _reap(self) -> None:
        if self._exited.done():
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid != 0:
            self._reaped(status)

    def _reaped(self, status: int) -> None:
        if self._exited.done():
            return
        self._returncode = os.waitstatus_to_exitcode(status)
        self._popen.returncode = self._returncode  # Popen must never wait for a recycled pid
        if self._cgroup is not None:
            self._oom = self._cgroup.oom_kills() > 0
        self._close_pidfd()
        self._exited.set_result(None)

    def _close_pidfd(self) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    @property
    def cgroup(self) -> cgroups.ChildCgroup | None:
        """The child's own cgroup (memory/tasks limits), if it has one."""
        return self._cgroup

    @property
    def returncode(self) -> int | None:
        return self._returncode

    @property
    def running(self) -> bool:
        return not self._exited.done()

    @property
    def exit_info(self) -> ExitInfo | None:
        """How it ended; None while it runs."""
        if not self._exited.done():
            return None
        code = self._returncode
        limit = self.spec.limits.memory_text
        return ExitInfo(code, -code if code is not None and code < 0 else None, self._oom,
                        exit_text(code, oom=self._oom, limit=limit), limit)

    async def wait(self) -> ExitInfo:
        """Until the leader exits (its group may live on until ``stop``)."""
        await asyncio.shield(self._exited)
        info = self.exit_info
        assert info is not None
        return info

    async def wait_for(self, seconds: float) -> bool:
        """True if the leader exited within ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), timeout=max(0.0, seconds))
        return self._exited.done()

    # --- stopping ---------------------------------------------------------------------------

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def kill(self) -> None:
        """Synchronous: SIGKILL the whole group (and the cgroup's members) now."""
        self.signal_group(signal.SIGKILL)
        if self._cgroup is not None:
            self._cgroup.kill_all()

    async def stop(self, grace: float | None = None, *, polite: bool = True) -> ExitInfo:
        """``stop_signal`` to the group, ``grace`` seconds, KILL; then sweep and clean up. Idempotent.

        ``polite=False`` kills at once (a server that failed its probe gets no time to hang in).
        """
        grace = self.spec.grace if grace is None else grace
        if self.running:
            if polite:
                self.signal_group(self.spec.stop_signal)
                if not await self.wait_for(grace):
                    log.warning(f"process ignored SIG{self.spec.stop_signal.name.removeprefix('SIG')}; "
                                "killing its group", server=self.spec.server, pid=self.pid, grace=grace)
            if self.running:
                self.kill()
                if not await self.wait_for(_KILL_WAIT):
                    log.error("process survived SIGKILL (uninterruptible?)", server=self.spec.server, pid=self.pid)
        await self.cleanup()
        info = self.exit_info
        if info is None:  # unkillable: report what we know
            return ExitInfo(None, None, False, "still running after SIGKILL")
        return info

    async def cleanup(self) -> None:
        """The leader is gone: sweep its group, read the OOM count again, drop cgroup and record."""
        if self._done:
            return
        self._done = True
        try:
            await self._sweep()
            if self._cgroup is not None:
                self._oom = self._oom or self._cgroup.oom_kills() > 0
                await self._remove_cgroup(self._cgroup)
        finally:
            if self._records is not None:
                self._records.forget(self.spec.server, self.pid)
            for fd in (self.stdin, self.stdout):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self.stdin = self.stdout = None

    async def _sweep(self) -> None:
        group = self._cgroup
        if group is not None:
            members = group.members()
            if members:
                for pid in members:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGTERM)
                for _ in range(int(_SWEEP_GRACE / 0.02)):  # not our children: no wait() to block on
                    if not group.members():
                        break
                    await asyncio.sleep(0.02)
                group.kill_all()
        try:
            os.killpg(self.pgid, 0)  # anything left in the group? (no process-table scan if not)
        except (ProcessLookupError, PermissionError):
            return
        await sweep_group(self.pgid, grace=_SWEEP_GRACE)

    @staticmethod
    async def _remove_cgroup(group: cgroups.ChildCgroup) -> None:
        deadline = time.monotonic() + _KILL_WAIT
        while not group.remove():
            if time.monotonic() >= deadline:
                log.warning("a child's cgroup still has members; left in place", cgroup=str(group.dirs[0]))
                return
            group.kill_all()
            await asyncio.sleep(0.02)


def _preexec(join_fds: tuple[int, ...], nofile: int | None) -> Callable[[], None] | None:
    """The only Python that runs in a child: join the cgroup(s), set RLIMIT_NOFILE (see module doc)."""
    if not join_fds and nofile is None:
        return None
    write, setrlimit, limit = os.write, resource.setrlimit, resource.RLIMIT_NOFILE
    zero = b"0"
    pair = (nofile, nofile) if nofile is not None else None

    def child() -> None:
        for fd in join_fds:
            write(fd, zero)
        if pair is not None:
            setrlimit(limit, pair)

    return child


def _nofile(wanted: int | None) -> int | None:
    if wanted is None:
        return None
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def _popen(spec: SpawnSpec, options: dict[str, Any], preexec: Callable[[], None] | None) -> subprocess.Popen[bytes]:
    """fork + exec, synchronously as asyncio's own subprocess transport does it (returns once the
    exec happened or failed: an exec error is raised here, with its errno)."""
    return subprocess.Popen(list(spec.argv), env=dict(spec.env), cwd=spec.cwd, close_fds=True,
                            start_new_session=True, umask=0o077, preexec_fn=preexec, **options)


async def spawn(spec: SpawnSpec, *, stdio: bool = True, stderr: IO[Any] | int | None = None,
                output: int | None = None) -> Child:
    """Start ``spec``'s command. ``stdio``: stdin/stdout are pipes the caller speaks MCP over and
    ``stderr`` goes where given (default: discarded); otherwise stdin is /dev/null and stdout and
    stderr go to ``output`` (a pipe the caller reads into the server's log)."""
    limits = spec.limits
    group: cgroups.ChildCgroup | None = None
    if limits.memory is not None or limits.tasks is not None:
        group = cgroups.create(spec.server, spec.role, memory=limits.memory, tasks=limits.tasks)
    switch: dict[str, Any] = {}
    if spec.switch:  # extra_groups always: else the child keeps root's supplementary groups
        ident = spec.identity
        switch = {"user": ident.uid, "group": ident.gid, "extra_groups": list(ident.groups)}
    ours: list[int] = []
    theirs: list[int] = []
    try:
        if stdio:
            child_in, parent_in = os.pipe2(os.O_CLOEXEC)
            parent_out, child_out = os.pipe2(os.O_CLOEXEC)
            ours += [parent_in, parent_out]
            theirs += [child_in, child_out]
            streams: dict[str, Any] = {"stdin": child_in, "stdout": child_out,
                                       "stderr": stderr if stderr is not None else subprocess.DEVNULL}
        else:
            streams = {"stdin": subprocess.DEVNULL, "stdout": output if output is not None else subprocess.DEVNULL,
                       "stderr": subprocess.STDOUT if output is not None else subprocess.DEVNULL}
        popen = _popen(spec, streams | switch, _preexec(tuple(group.join_fds) if group else (),
                                                        _nofile(limits.open_files)))
    except BaseException:
        for fd in ours:
            os.close(fd)
        if group is not None:
            group.remove()
        raise
    finally:
        for fd in theirs:
            os.close(fd)
        if group is not None:
            group.close_join_fds()
    for fd in ours:
        os.set_blocking(fd, False)
    records = None
    if spec.record and spec.state_dir is not None:
        records = records_for(spec.state_dir)
        records.record(spec.server, popen.pid)
    return Child(spec, popen, stdin=ours[0] if stdio else None, stdout=ours[1] if stdio else None,
                 cgroup=group, records=records)
