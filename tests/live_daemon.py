"""The one home of end-to-end test helpers: a real `mcp-supervisor`, real servers, the real socket.

Every end-to-end test imports from here (never copies): paths of the interpreter and the console
scripts, ``free_port``, ``wait_for`` (and ``wait_until`` for coroutines), stopping a process by
pid, the control API over its Unix socket (``UnixHTTPConnection``, ``api``, ``cli``), the config
builders for a managed notes server, and ``LiveDaemon``: two real MCP servers, one the daemon
manages (killed by the tests, restarted by the daemon) and one external, whose header carries a
canary token that must never reach a screen or a page.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp_supervisor.config import Config, parse_config
from mcp_supervisor.events import Event
from mcp_supervisor.health.model import State
from mcp_supervisor.runtime.supervisor import Supervisor
from tests.servers.fixtures import NOTES_SERVER, RUN_AS, UNAUTHORIZED, free_port, wait_port_open

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(PY).parent
EXAMPLE = NOTES_SERVER
CLI = BIN / "supervisorctl-mcp"

__all__ = ["BIN", "CLI", "EXAMPLE", "PY", "ROOT", "RUN_AS", "LiveDaemon", "UnixHTTPConnection", "answering", "api", "cli",
           "daemon_env", "daemon_process", "free_port", "http_server", "live_daemon", "make_config", "make_config_text",
           "managed_notes", "managed_server", "notes_http", "notes_pair", "probe_table", "running", "server_status", "start_daemon", "state", "stop", "supervisor_table", "unauthorized", "until", "vault_watching",
           "wait_for", "wait_until"]


# --- waiting with a deadline (never sleep-and-hope) -----------------------------------------------


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.05,
             ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll ``condition`` until it returns something true (returned) or fail naming ``what``;
    an exception of a class in ``ignore`` (a daemon still starting) counts as "not yet"."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except ignore as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def wait_until(condition: Callable[[], Any | Awaitable[Any]], timeout: float = 5.0,
                     what: str = "the condition", every: float = 0.02) -> Any:
    """``wait_for`` on the event loop; ``condition`` may be a plain or an async callable."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# --- processes ----------------------------------------------------------------------------------


def notes_http(port: int) -> subprocess.Popen[bytes]:
    """examples/notes_server.py over Streamable HTTP on ``port``, listening when this returns."""
    proc = subprocess.Popen([PY, str(EXAMPLE), "http", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port_open(port, 20, proc)
    except BaseException:
        stop(proc, signal.SIGKILL)
        raise
    return proc


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
    """Stop a process this test started, by pid: ``sig``, then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def daemon_env(**extra: str) -> dict[str, str]:
    """This environment without the variables that would point a daemon or CLI elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_SUPERVISOR_") and k != "NOTIFY_SOCKET"}
    env.update(extra)
    return env


def start_daemon(config: Path, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    """``mcp-supervisor --config CONFIG`` as a subprocess; stderr to ``log`` (default: daemon.log
    beside the config; a pipe nobody reads would block it). Stop it with ``stop``."""
    with open(log or config.parent / "daemon.log", "ab") as out:
        return subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(config)],
                                env=daemon_env() if env is None else env, stdout=subprocess.DEVNULL, stderr=out)


@contextlib.contextmanager
def daemon_process(config: Path, env: dict[str, str] | None = None,
                   log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``start_daemon`` for a ``with`` block: stopped with SIGTERM (SIGKILL after 15 s) at its end."""
    proc = start_daemon(config, env, log)
    try:
        yield proc
    finally:
        stop(proc, signal.SIGTERM, 15)


# --- the control API over its Unix socket -------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket: the control API as any script would reach it."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def api(sock: Path, path: str, method: str = "GET", timeout: float = 10.0) -> tuple[int, Any]:
    conn = UnixHTTPConnection(sock, timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else None
    finally:
        conn.close()


def answering(sock: Path) -> bool:
    """The daemon answers ``GET /v1/status`` on its socket: a cheap poll in this process (a CLI
    start per poll costs most of a second of CPU, which a daemon starting beside it needs)."""
    with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
        return api(sock, "/v1/status", timeout=5)[0] == 200
    return False


def server_status(sock: Path, name: str) -> dict[str, Any]:
    """One server's entry of ``GET /v1/status``."""
    status, body = api(sock, "/v1/status")
    assert status == 200, body
    found: dict[str, Any] = next(s for s in body["servers"] if s["name"] == name)
    return found


def cli(sock: Path, *args: str, timeout: float = 60, columns: int = 200) -> subprocess.CompletedProcess[str]:
    """``supervisorctl-mcp --socket SOCK ARGS`` (wide, colourless), as a user types it."""
    return subprocess.run([str(CLI), "--socket", str(sock), *args], capture_output=True, text=True,
                          timeout=timeout, env=daemon_env(COLUMNS=str(columns), NO_COLOR="1"))


# --- config builders ----------------------------------------------------------------------------


def probe_table(**settings: Any) -> str:
    """``{ interval = "250ms", failure_threshold = 2 }``: an inline TOML table from keywords."""
    return "{ " + ", ".join(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}"
                            for k, v in settings.items()) + " }"


def managed_server(name: str, port: int, args: list[str], extra: str = "", **probe: Any) -> str:
    """A [[servers]] table: ``python ARGS`` serving HTTP on ``port``, managed by the daemon, run as
    the test user (``RUN_AS``); ``extra`` adds TOML lines (headers, token_env, recovery, ...)."""
    return f"""
[[servers]]
name = "{name}"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"
managed = true
{RUN_AS}
command = "{PY}"
args = {json.dumps([str(a) for a in args])}
probe = {probe_table(**probe)}
{extra}
"""


def managed_notes(name: str, port: int, *, recovery: str = 'backoff_initial = "100ms", backoff_max = "1s"',
                  extra: str = "", **probe: Any) -> str:
    """A [[servers]] table: the notes server over HTTP on ``port``, managed by the daemon."""
    settings = {"interval": "250ms", "timeout": "800ms", "failure_threshold": 2, "start_period": "10s", **probe}
    settings = {k: v for k, v in settings.items() if v is not None}  # None: leave the key to its default
    return managed_server(name, port, [str(EXAMPLE), "http", str(port)], f"recovery = {{ {recovery} }}\n{extra}",
                          **settings)


def http_server(name: str, port: int, extra: str = "", **probe: Any) -> str:
    """A [[servers]] table: an HTTP MCP endpoint on ``port`` the daemon only watches (not managed)."""
    return f"""
[[servers]]
name = "{name}"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"
probe = {probe_table(**probe)}
{extra}
"""


def notes_pair(directory: Path, http_port: int, managed_port: int) -> str:
    """A daemon in ``directory`` watching ``notes-http`` (an external notes server on ``http_port``)
    and managing ``notes-managed`` (on ``managed_port``): the guardian's and the e2e story's setup."""
    return (supervisor_table(directory)
            + http_server("notes-http", http_port, interval="300ms", timeout="1s", failure_threshold=2)
            + managed_notes("notes-managed", managed_port, recovery='backoff_initial = "100ms"', interval="300ms",
                            timeout="1s", failure_threshold=2, start_period="10s"))


def vault_watching(root: Path, name: str, path: Path, fmt: str = "mcp-client-json", extra: str = "") -> str:
    """A config whose vault (key and one location under ``root``) watches one client file."""
    return f"""
[supervisor]
state_dir = "{root}/state"
[backup]
key_file = "{root}/keys/vault.key"
locations = ["{root}/backup0"]
[[configs]]
name = "{name}"
path = "{path}"
format = "{fmt}"
{extra}
"""


def supervisor_table(directory: Path, extra: str = "", shutdown_timeout: str = "2s") -> str:
    """The [supervisor] table of a daemon living in ``directory``: its socket, state and JSON log."""
    return f"""
[supervisor]
socket = "{directory}/ctl.sock"
state_dir = "{directory}/state"
log_format = "json"
shutdown_timeout = "{shutdown_timeout}"
{extra}
"""


def unauthorized(name: str, port: int, extra: str = "", echo: bool = False, **probe: Any) -> str:
    """A [[servers]] table: a managed endpoint that answers 401 to everything (tests/servers/unauthorized.py)."""
    args = [str(UNAUTHORIZED), str(port), *(["--echo"] if echo else [])]
    return managed_server(name, port, args, extra, **probe)


def make_config_text(tmp: Path, servers: str, extra: str = "") -> str:
    """A whole config: state under ``tmp``, a short shutdown, then ``extra`` and the servers."""
    return f'[supervisor]\nstate_dir = "{tmp}/state"\nshutdown_timeout = "2s"\n{extra}\n{servers}'


# --- an in-process Supervisor (the daemon's core without the process) -----------------------------


def make_config(tmp: Path, servers: str, extra: str = "") -> Config:
    """Write ``make_config_text`` to ``tmp/config.toml`` and parse it."""
    text = make_config_text(tmp, servers, extra)
    path = tmp / "config.toml"
    path.write_text(text)
    return parse_config(text, path)


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(config, config.source)
    async with asyncio.TaskGroup() as tg:
        await supervisor.start(tg)
        try:
            yield supervisor
        finally:
            async with asyncio.timeout(10):
                await supervisor.aclose()


async def until(
    supervisor: Supervisor, condition: Callable[[], bool], timeout: float, what: str, seen: list[Event] | None = None
) -> list[Event]:
    """Wait, event-driven, until ``condition()`` holds; returns the events seen meanwhile (also
    appended to ``seen`` as they come, so the condition can look at them)."""
    seen = [] if seen is None else seen
    with supervisor.bus.subscription() as queue:
        async with asyncio.timeout(timeout):
            try:
                while not condition():
                    seen.append(await queue.get())
            except TimeoutError:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None
        while not queue.empty():
            seen.append(queue.get_nowait())
    return seen


def state(supervisor: Supervisor, name: str) -> State:
    return supervisor.runners[name].state


# --- LiveDaemon: the real binary with a managed and an external server ---------------------------


CANARY = "canary-token-8c1f0b7e-do-not-show"


@dataclass
class LiveDaemon:
    directory: Path
    config: Path
    sock: Path
    web_port: int
    managed_port: int
    http: subprocess.Popen[bytes]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "MCP_TEST_CANARY": CANARY}
        env.pop("MCP_SUPERVISOR_SOCKET", None)
        with open(self.directory / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(self.config)], env=env,
                                         stderr=log)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def server(self, name: str) -> dict[str, Any]:
        return server_status(self.sock, name)

    def states(self) -> dict[str, str]:
        if not self.sock.exists():
            return {}
        with contextlib.suppress(OSError):
            status, body = api(self.sock, "/v1/status")
            if status == 200:
                return {s["name"]: s["state"] for s in body["servers"]}
        return {}

    def wait_all_healthy(self, timeout: float = 60) -> None:
        try:
            wait_for(lambda: set(self.states().values()) == {"healthy"} and len(self.states()) == 2, timeout,
                     "both servers healthy")
        except AssertionError:
            print(self.states(), (self.directory / "daemon.log").read_text()[-4000:])
            raise

    def kill_managed(self) -> int:
        pid = self.server("managed")["pid"]
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGKILL)
        return pid


@contextlib.contextmanager
def live_daemon(title: str = "Acme MCP status") -> Iterator[LiveDaemon]:
    directory = Path(tempfile.mkdtemp(prefix="mcplive-", dir="/tmp"))
    http_port, managed_port, web_port = free_port(), free_port(), free_port()
    http = notes_http(http_port)
    config = directory / "mcp-supervisor.toml"
    config.write_text(
        supervisor_table(directory)
        + f'\n[web]\nlisten = "127.0.0.1:{web_port}"\ntitle = "{title}"\n'
        + managed_notes("managed", managed_port, recovery='backoff_initial = "100ms"', interval="300ms", timeout="2s",
                        failure_threshold=2, start_period="20s")
        + http_server("external", http_port, 'headers = { Authorization = "Bearer ${MCP_TEST_CANARY}" }',
                      interval="500ms", timeout="2s"))
    daemon = LiveDaemon(directory, config, directory / "ctl.sock", web_port, managed_port, http)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        stop(http)
        shutil.rmtree(directory, ignore_errors=True)
