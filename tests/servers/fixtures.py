"""Helpers to run real MCP servers in tests, for the probe tests and for other helpers' tests.

Everything is stopped by pid, never by name. Servers get a free port and are waited for with a
deadline (no sleep-and-hope).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mcp_supervisor.spawn import procfs

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
NOTES_SERVER = ROOT / "examples" / "notes_server.py"
MISBEHAVE = ROOT / "tests" / "servers" / "misbehave.py"
HTTP_AUTH = ROOT / "tests" / "servers" / "http_auth.py"
UNAUTHORIZED = ROOT / "tests" / "servers" / "unauthorized.py"
MCP_SERVER_TIME = Path(PYTHON).parent / "mcp-server-time"
TEST_USER = pwd.getpwuid(os.geteuid()).pw_name
"""Managed and stdio servers in tests run as the account running the tests: under root, a server
without ``user`` runs as nobody, which cannot reach an interpreter installed under /root."""
RUN_AS = f'user = "{TEST_USER}"'
"""The TOML line for a managed or stdio [[servers]] table in a test config."""


def free_port() -> int:
    """A TCP port nobody listens on right now (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_port_open(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server pid {proc.pid} exited with {proc.returncode} before listening on {port}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    stat = procfs.read_stat(pid)
    return stat is not None and stat.alive


def wait_gone(pids: Sequence[int], timeout: float = 10.0) -> list[int]:
    """Wait with a deadline until every pid is gone; returns those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def children_of(pid: int | None = None) -> list[int]:
    """Live (non-zombie) direct children of ``pid`` (default: this process), through psutil."""
    import psutil

    try:
        children = psutil.Process(os.getpid() if pid is None else pid).children()
    except psutil.NoSuchProcess:
        return []
    alive = []
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def descendants_of(pid: int) -> dict[int, str]:
    """Live (non-zombie) descendants of ``pid``, read from /proc: {pid: command line}."""
    parents: dict[int, int] = {}
    info: dict[int, tuple[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # the command name may contain spaces or parentheses: split after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        info[int(entry.name)] = (fields[0], cmdline)
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                state, cmdline = info[child]
                if state != "Z":
                    found[child] = cmdline
                frontier.append(child)
    return found


def read_pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


def kill_pids(pids: Sequence[int]) -> None:
    """Last-resort cleanup of pids a test started (SIGKILL; ignores ones already gone)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class ServerProcess:
    """A server subprocess started by a test: stop it by pid with ``stop()``."""

    proc: subprocess.Popen[bytes]
    port: int
    url: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


RunningServer = ServerProcess
"""The name other tests use for a started server (pid, url, port, stop())."""


def start_http_server(
    transport: str = "http",
    *,
    port: int | None = None,
    argv: Sequence[str] | None = None,
    path: str | None = None,
    timeout: float = 20.0,
    log: Path | None = None,
) -> ServerProcess:
    """Start an SDK server (default: examples/notes_server.py) on a free port; wait until it listens.

    ``transport`` is ``http`` (Streamable HTTP, URL ends in /mcp) or ``sse`` (URL ends in /sse).
    ``argv`` replaces the command; ``{port}`` in it is replaced by the port.
    """
    port = free_port() if port is None else port
    if argv is None:
        cmd = [PYTHON, str(NOTES_SERVER), transport, str(port)]
    else:
        cmd = [a.replace("{port}", str(port)) for a in argv]
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=ROOT)
    finally:
        if log is not None and not isinstance(out, int):
            out.close()
    try:
        wait_port_open(port, timeout, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    suffix = path if path is not None else ("/sse" if transport == "sse" else "/mcp")
    return ServerProcess(proc=proc, port=port, url=f"http://127.0.0.1:{port}{suffix}")


@contextlib.contextmanager
def running_http_server(transport: str = "http", **kwargs: object) -> Iterator[ServerProcess]:
    server = start_http_server(transport, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
