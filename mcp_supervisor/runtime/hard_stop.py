"""The last resort of a shutdown: kill every child process group and leave, now.

Why outside the event loop: the clean shutdown runs on the loop, and what makes a shutdown stuck
is usually something the loop waits on (a thread blocked reading a file, a close that never
returns, the interpreter joining worker threads at exit). So the deadline is a timer thread and
the second SIGINT/SIGTERM a plain ``signal.signal`` handler; both run while the loop is stuck,
kill the children's groups with SIGKILL and end the process with ``os._exit``.

What is killed: every process group on record in ``ProcessRecords`` (checked to still be ours,
so a recycled pid is never hit) and every direct child of the daemon (a stdio probe's server, a
managed server whose record could not be written): their whole group when the child leads one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from mcp_supervisor.spawn import procfs
from mcp_supervisor.spawn.records import ProcessRecord, kill_group


def kill_children(records: Callable[[], list[ProcessRecord]]) -> list[int]:
    """SIGKILL the recorded groups and every direct child's group; returns the pids hit."""
    hit: list[int] = []
    with contextlib.suppress(Exception):
        for record in records():
            hit += kill_group(record, signal.SIGKILL)
    me = os.getpid()
    for child in procfs.children_of(me):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if child.pgid == child.pid and child.pgid != os.getpgid(0):
                os.killpg(child.pgid, signal.SIGKILL)
            else:
                os.kill(child.pid, signal.SIGKILL)
            hit.append(child.pid)
    return hit


def _write_stderr(message: str) -> None:
    """One JSON line straight to fd 2: a signal handler must not take the logging locks (the
    interrupted code may hold them)."""
    line = json.dumps({"event": message, "level": "error", "logger": "mcp_supervisor.daemon",
                       "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    with contextlib.suppress(OSError):
        os.write(2, (line + "\n").encode())


class HardStop:
    """Arms the deadline of a shutdown and turns a second signal into an immediate exit."""

    def __init__(self, records: Callable[[], list[ProcessRecord]],
                 write: Callable[[str], None] = _write_stderr) -> None:
        self._records = records
        self._write = write
        self._timer: threading.Timer | None = None
        self._finished: int | None = None

    def arm(self, seconds: float) -> None:
        """From now on the process ends within ``seconds``, whatever is stuck; and a second
        SIGINT/SIGTERM ends it at once. Call from the main thread."""
        if self._timer is None:
            self._timer = threading.Timer(max(0.0, seconds), self._deadline)
            self._timer.daemon = True
            self._timer.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._second_signal)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def finished(self, code: int) -> None:
        """The daemon's own shutdown is done (children stopped) with ``code``; if the interpreter
        then fails to exit by the deadline (a worker thread stuck in a read), it exits with
        ``code`` rather than 1: the stop itself went right."""
        self._finished = code

    def _deadline(self) -> None:
        if self._finished is not None:
            self.exit_now(self._finished, "the process did not exit within shutdown_timeout after a clean stop "
                          "(a worker thread is stuck)")
        self.exit_now(1, "the shutdown did not finish within shutdown_timeout")

    def _second_signal(self, signum: int, frame: FrameType | None) -> None:
        self.exit_now(128 + signum, f"second {signal.Signals(signum).name} during shutdown")

    def exit_now(self, code: int, why: str) -> None:
        killed = kill_children(self._records)
        self._write(f"{why}: killed {len(killed)} child process(es); exiting now")
        os._exit(code)
