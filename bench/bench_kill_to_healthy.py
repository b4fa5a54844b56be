"""Kill-to-healthy through the whole daemon, beside supervisord in the same run.

The real ``mcp-supervisor`` binary manages ``examples/notes_server.py http PORT`` (``managed =
true``); supervisord (PyPI ``supervisor``, autorestart=true, startsecs=0) manages a second copy
on another port. The trials alternate between the two. Each trial waits until the server is
healthy and stable, SIGKILLs it and measures from the kill:
  ours (the daemon's own events on GET /v1/events, by the time the daemon stamps on each):
    - exit noticed    (``process_exit``),
    - restart started (``action`` rung=restart), restart done (``action_done``),
    - healthy         (``state`` -> healthy: the daemon reports the server ready again),
    - /v1/ready 200   (a ``/v1/ready?wait=`` long-poll started once the kill was noticed),
  both (the same external method):
    - MCP answering   (TCP connect polled every 2 ms, then a fresh mcp.Client connect + tools/list).
The server's cold start (spawn to MCP answer) is measured too, for scale: kill-to-healthy can
never beat it. supervisord has no notion of health: "MCP answering" is its best possible figure;
ours adds the daemon's probe after the restart. Figures only; nothing here passes or fails.

The daemon runs with ``stable_after = "1s"`` and ``max_attempts = 1000`` so that every trial is
a first crash after a stable period (no crash-loop backoff) and no attempt budget runs out: this
measures the restart path, not the backoff policy.

Usage: python bench/bench_kill_to_healthy.py [--trials 10] [--cold 3] [--no-supervisord]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_recovery import (  # a sibling script, not a package
    BIN,
    SERVER,
    SUPERVISORD_CONF,
    children_of,
    cold_starts,
    free_port,
    percentile,
    wait_answer,
    wait_new_child,
)

STABLE_S = 1.5
"""Healthy for this long before a kill (more than the daemon's ``stable_after``)."""

CONFIG = """\
[supervisor]
socket = "{dir}/s.sock"
state_dir = "{dir}/state"
log_level = "warning"

[[servers]]
name = "notes"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"
managed = true
user = "{user}"
critical = true
command = "{python}"
args = ["{server}", "http", "{port}"]

[servers.recovery]
max_attempts = 1000
stable_after = "1s"
"""


class Daemon:
    """The mcp-supervisor binary, its event stream and the pid of its managed server."""

    def __init__(self, work: Path, port: int) -> None:
        self.dir = work / "ours"
        self.dir.mkdir()
        self.port = port
        self.socket = self.dir / "s.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.events: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._session: Any = None

    async def start(self) -> None:
        import aiohttp

        config = self.dir / "bench.toml"
        config.write_text(CONFIG.format(user=pwd.getpwuid(os.geteuid()).pw_name, dir=self.dir, port=self.port, python=sys.executable, server=SERVER))
        self.proc = subprocess.Popen(
            [str(BIN / "mcp-supervisor"), "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "daemon.log", "wb"), start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not start; see {self.dir / 'daemon.log'}")
            await asyncio.sleep(0.05)
        self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.socket)))
        self._reader = asyncio.create_task(self._read_events())

    async def _read_events(self) -> None:
        async with self._session.get("http://localhost/v1/events", timeout=None) as response:
            data: list[str] = []
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    self.events.put_nowait((time.monotonic(), json.loads("\n".join(data))))
                    data = []

    async def ready_long_poll(self) -> float:
        """Monotonic time at which ``GET /v1/ready?wait=60`` answered 200."""
        async with self._session.get("http://localhost/v1/ready?wait=60") as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"/v1/ready answered {response.status}")
        return time.monotonic()

    async def wait_event(self, want: Any, timeout: float = 60.0) -> tuple[float, dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while True:
                at, event = await self.events.get()
                if event.get("server") == "notes" and want(event):
                    return at, event

    def server_pid(self) -> int:
        assert self.proc is not None
        kids = children_of(self.proc.pid, 0)
        if len(kids) != 1:
            raise RuntimeError(f"expected one managed server under the daemon, found {kids}")
        return kids[0]

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._session is not None:
            await self._session.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _healthy(event: dict[str, Any]) -> bool:
    return event.get("kind") == "state" and event.get("new") == "healthy"


async def trial_ours(daemon: Daemon, rows: dict[str, list[float]]) -> None:
    await wait_answer(daemon.port)
    async with daemon._session.get("http://localhost/v1/ready?wait=60") as response:
        await response.read()  # healthy before the kill
    await asyncio.sleep(STABLE_S)
    while not daemon.events.empty():
        daemon.events.get_nowait()
    pid = daemon.server_pid()
    killed, killed_wall = time.monotonic(), time.time()
    os.kill(pid, signal.SIGKILL)
    answering = asyncio.create_task(wait_answer(daemon.port))
    # the daemon stamps each event ("at", wall clock) when it happens: no delivery delay counted
    _, noticed = await daemon.wait_event(lambda e: e.get("kind") == "process_exit")
    ready = asyncio.create_task(daemon.ready_long_poll())
    _, started = await daemon.wait_event(lambda e: e.get("kind") == "action")
    _, done = await daemon.wait_event(lambda e: e.get("kind") == "action_done")
    _, healthy = await daemon.wait_event(_healthy)
    rows["exit noticed"].append(noticed["at"] - killed_wall)
    rows["restart started"].append(started["at"] - killed_wall)
    rows["restart done"].append(done["at"] - killed_wall)
    rows["healthy (event)"].append(healthy["at"] - killed_wall)
    rows["/v1/ready 200"].append(await ready - killed)
    rows["MCP answering"].append(await answering - killed)


class Supervisord:
    def __init__(self, work: Path, port: int) -> None:
        self.dir = work / "sd"
        self.dir.mkdir()
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def start(self) -> None:
        conf = self.dir / "supervisord.conf"
        conf.write_text(SUPERVISORD_CONF.format(dir=self.dir, python=sys.executable, server=SERVER, port=self.port))
        self.proc = subprocess.Popen(
            [str(BIN / "supervisord"), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        _, self.pid = wait_new_child(self.proc.pid, 0)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


async def trial_supervisord(sd: Supervisord, rows: dict[str, list[float]]) -> None:
    assert sd.proc is not None
    await wait_answer(sd.port)
    await asyncio.sleep(STABLE_S)
    killed = time.monotonic()
    os.kill(sd.pid, signal.SIGKILL)
    seen, sd.pid = wait_new_child(sd.proc.pid, sd.pid)
    answered = await wait_answer(sd.port)
    rows["respawn seen"].append(seen - killed)
    rows["MCP answering"].append(answered - killed)


def table(rows: list[tuple[str, str, list[float]]]) -> str:
    lines = [f"{'who':<12} {'kill -> ...':<17} {'n':>3} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}"]
    for who, what, values in rows:
        ms = [v * 1000 for v in values]
        if ms:
            lines.append(f"{who:<12} {what:<17} {len(ms):>3} {percentile(ms, 50):>9.1f} "
                         f"{percentile(ms, 95):>9.1f} {max(ms):>9.1f}")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    ours: dict[str, list[float]] = {k: [] for k in (
        "exit noticed", "restart started", "restart done", "healthy (event)", "/v1/ready 200", "MCP answering")}
    theirs: dict[str, list[float]] = {"respawn seen": [], "MCP answering": []}
    with tempfile.TemporaryDirectory(prefix="bench-k2h-", dir="/tmp") as tmp:
        work = Path(tmp)
        print(f"cold start x{args.cold} ...", file=sys.stderr)
        cold = await cold_starts(args.cold)
        daemon = Daemon(work, free_port())
        sd = Supervisord(work, free_port()) if not args.no_supervisord else None
        try:
            await daemon.start()
            if sd is not None:
                sd.start()
            for i in range(args.trials):
                print(f"trial {i + 1}/{args.trials} ...", file=sys.stderr)
                await trial_ours(daemon, ours)
                if sd is not None:
                    await trial_supervisord(sd, theirs)
        finally:
            await daemon.stop()
            if sd is not None:
                sd.stop()
    rows = [("(server)", "cold start", cold)]
    rows += [("ours", what, values) for what, values in ours.items()]
    rows += [("supervisord", what, values) for what, values in theirs.items()]
    print(f"Managed HTTP MCP server ({SERVER.name}) killed with SIGKILL, {args.trials} trials each, alternating; "
          f"daemon = the mcp-supervisor binary, default probe settings")
    print(table(rows))
    if theirs["MCP answering"]:
        gap = percentile(ours["healthy (event)"], 50) - percentile(theirs["MCP answering"], 50)
        print(f"ours healthy p50 minus supervisord MCP answering p50: {gap * 1000:+.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--cold", type=int, default=3)
    parser.add_argument("--no-supervisord", action="store_true")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
