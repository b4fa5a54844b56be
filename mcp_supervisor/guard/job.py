"""The user's job as a child: its own session and process group, signals passed on, leftovers stopped.

Why its own group: when the job ends, whatever it started and left running (a forgotten helper, a
stuck browser) is found by its process group and stopped, so the next morning starts clean.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from types import FrameType

from mcp_supervisor.spawn import procfs

GROUP_GRACE = 5.0
"""Seconds the job's leftover processes get between SIGTERM and SIGKILL after the job exits."""
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


class Job:
    """CMD in its own session and process group; signals to the guardian are passed to the group
    (as a terminal or systemd would deliver them to a job run directly); a third INT/TERM kills it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv = argv
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.forwarded: list[str] = []
        self._pending: list[int] = []
        self._stops = 0

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if signum in (signal.SIGINT, signal.SIGTERM):
            self._stops += 1
        sig = signal.SIGKILL if self._stops >= 3 else signum
        self.forwarded.append(signal.Signals(sig).name)
        if self.proc is None:
            self._pending.append(sig)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    @contextlib.contextmanager
    def forwarding(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def run(self) -> int:
        """Start, wait, clean up the group; the job's returncode (negative: killed by a signal)."""
        self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
        for sig in self._pending:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        return self.proc.wait()

    def clean_group(self, grace: float = GROUP_GRACE) -> int:
        """Stop what the job left behind in its process group; how many processes that was."""
        if self.proc is None:
            return 0
        pgid = self.proc.pid
        left = group_members(pgid)
        if not left:
            return 0
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        return len(left)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    return [stat.pid for stat in procfs.group_members(pgid)]
