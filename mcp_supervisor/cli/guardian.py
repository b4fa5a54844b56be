"""``supervisorctl-mcp run [--wait S] [--require NAME] [--allow-fallback] -- CMD ...``: the guarded run.

Why a guardian and not ``ready && job``: the unattended morning job must start only when its MCP
servers work, be told which of them it must reach directly (fallback), keep running when a server
dies mid-way (the daemon heals it, the guardian asks for that at once and writes it down), and
leave a report a person can read afterwards. The guardian never decides health itself: the daemon
does. It only asks (probe, recover, backup), waits, records and passes signals on.

Exit codes: the job's own (a signal N as 128+N); 75 (EX_TEMPFAIL) when the job was not started
because required servers were not ready; 3 when no daemon answers (the job is not started unless
``--standalone``); 2 for usage; 126/127 when CMD cannot be executed.

The shell is here (threads, a child process group, signals, the socket); what the report says is
decided by the pure ``cli/run_report.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from mcp_supervisor.api.client import ApiError, ClientError, DaemonUnreachable, SupervisorClient, _UnixHTTPConnection
from mcp_supervisor.cli.run_report import (
    GOOD_STATES,
    NO_RESTART_CLASSES,
    RECOVERABLE_STATES,
    RunFacts,
    build_run_report,
    command_line,
    exit_code_of,
    redact_argv,
    summary_lines,
)

if TYPE_CHECKING:
    from mcp_supervisor.config import Config

EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_STARTED = 75  # EX_TEMPFAIL: cron/systemd may retry later
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

GROUP_GRACE = 5.0
"""Seconds the job's leftover processes get between SIGTERM and SIGKILL after the job exits."""
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
STREAM_SILENCE = 60.0
"""The daemon sends an SSE heartbeat every 15 s; this much silence means it is gone or wedged."""


class Interrupted(Exception):
    """SIGINT/SIGTERM before the job started: do not start it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _say(text: str) -> None:
    print(f"supervisorctl-mcp run: {text}", file=sys.stderr, flush=True)


# --- the event watcher (a thread) --------------------------------------------------------------


class EventWatcher(threading.Thread):
    """Follows ``/v1/events`` during the run, keeps every event, and asks the daemon to recover a
    required server the moment it fails (once per incident). A daemon that goes away is noted
    (``guardian`` event ``daemon_lost``), retried, and its return noted with the states it shows
    then (so an incident that began or ended while nobody watched is still closed or opened)."""

    def __init__(self, socket_path: Path, required: list[str], states: dict[str, str]) -> None:
        super().__init__(name="guardian-events", daemon=True)
        self.socket_path = socket_path
        self.required = set(required)
        self.events: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self._states = dict(states)
        self._asked: set[str] = set()
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._sock: socket.socket | None = None
        self._lost = False

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def stop(self) -> None:
        self._stop_event.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.join(timeout=5.0)

    def _record(self, event: dict[str, Any]) -> None:
        event.setdefault("at", time.time())
        with self._lock:
            self.events.append(event)

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self._follow()
            except (OSError, ClientError, ValueError, http.client.HTTPException):
                pass
            if self._stop_event.is_set():
                return
            if not self._lost:
                self._lost = True
                self._record({"kind": "guardian", "event": "daemon_lost"})
            self._stop_event.wait(0.5)

    def _follow(self) -> None:
        conn = _UnixHTTPConnection(str(self.socket_path), STREAM_SILENCE)
        try:
            conn.connect()
            self._sock = conn.sock
            if self._stop_event.is_set():
                return
            conn.request("GET", "/v1/events", headers={"Accept": "text/event-stream"})
            response = conn.getresponse()
            if response.status != 200:
                return
            if self._lost:
                self._came_back()
            self.connected.set()
            data: list[str] = []
            while not self._stop_event.is_set():
                line = response.readline()
                if not line:
                    return
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                if text.startswith("data:"):
                    data.append(text[5:].lstrip(" "))
                elif text == "" and data:
                    try:
                        event = json.loads("\n".join(data))
                    except ValueError:
                        event = None
                    data = []
                    if isinstance(event, dict):
                        self._on_event(event)
        finally:
            self._sock = None
            conn.close()

    def _came_back(self) -> None:
        """The daemon answers again: note it, and what changed while nobody watched."""
        self._lost = False
        self._record({"kind": "guardian", "event": "daemon_back"})
        try:
            self.reconcile(SupervisorClient(self.socket_path, timeout=5.0).status())
        except ClientError:
            pass

    def reconcile(self, status: dict[str, Any]) -> None:
        """State changes the stream did not deliver (the daemon was away, or the job ended while
        the last events were in flight), as state events at the server's ``since`` time."""
        for server in status.get("servers", []):
            name, state = server.get("name"), server.get("state")
            if isinstance(name, str) and isinstance(state, str) and self._states.get(name, state) != state:
                since = server.get("since")
                self._on_event({"kind": "state", "server": name, "at": since if isinstance(since, int | float)
                                else time.time(), "old": self._states.get(name), "new": state,
                                "reason": server.get("reason") or "", "failure_class": server.get("failure_class"),
                                "synthetic": True}, act=False)

    def _on_event(self, event: dict[str, Any], act: bool = True) -> None:
        self._record(event)
        if event.get("kind") != "state" or not isinstance(event.get("server"), str):
            return
        name, new = event["server"], str(event.get("new"))
        self._states[name] = new
        if new in GOOD_STATES:
            self._asked.discard(name)
            return
        if (
            act
            and name in self.required
            and name not in self._asked
            and new in RECOVERABLE_STATES
            and event.get("failure_class") not in NO_RESTART_CLASSES
        ):
            self._asked.add(name)
            try:
                SupervisorClient(self.socket_path, timeout=10.0).recover(name)
            except ClientError:
                return
            self._record({"kind": "guardian", "event": "recover_requested", "server": name})


# --- the child job -----------------------------------------------------------------------------


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
    """Live (non-zombie) processes whose process group is ``pgid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


# --- saving and sending the report -------------------------------------------------------------


def runs_dir(config: Config | None) -> Path:
    """``<state_dir>/runs``; when that is not ours to write (a system daemon's state_dir), the
    user's ``$XDG_STATE_HOME/mcp-supervisor/runs``."""
    state = Path(os.path.expanduser(str(config.state_dir))) if config is not None else None
    if state is not None:
        candidate = state / "runs"
        try:
            candidate.mkdir(parents=True, exist_ok=True, mode=0o700)
            if os.access(candidate, os.W_OK | os.X_OK):
                return candidate
        except OSError:
            pass
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "mcp-supervisor" / "runs"


def save_report(report: dict[str, Any], directory: Path) -> Path:
    """Write ``<run_id>.json`` atomically with mode 0600, through a directory fd, following no
    symlink (the directory may sit in a home another user can write to)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"{report['run']['run_id']}.json"
    tmp = f".{name}.{secrets.token_hex(4)}.tmp"
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(json.dumps(report, indent=2, default=str).encode() + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return directory / name


def post_run(client: SupervisorClient | None, body: dict[str, Any]) -> str:
    """POST /v1/runs; "stored", "unsupported" (an older daemon: 404), or why it failed. Never raises."""
    if client is None:
        return "standalone"
    try:
        client.request("POST", "/v1/runs", body=body, timeout=10.0)
    except ApiError as exc:
        return "unsupported" if exc.status in (404, 405) else f"refused: {exc.message}"
    except ClientError as exc:
        return f"unreachable: {exc}"
    return "stored"


def new_run_id(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(3)


# --- the pre-check -----------------------------------------------------------------------------


def _servers(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(s.get("name")): s for s in status.get("servers", []) if isinstance(s, dict)}


def _enrich(not_ready: list[dict[str, Any]], servers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for entry in not_ready:
        info = servers.get(str(entry.get("name")), {})
        out.append({**entry, "failure_class": info.get("failure_class"), "hint": info.get("hint")})
    return out


def _probe_all(client: SupervisorClient, names: list[str]) -> dict[str, dict[str, Any]]:
    def one(name: str) -> tuple[str, dict[str, Any]]:
        try:
            return name, client.probe(name)
        except ClientError as exc:
            return name, {"name": name, "error": str(exc)}

    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        return dict(pool.map(one, names))


def _probe_ok(answer: dict[str, Any]) -> bool:
    return bool((answer.get("result") or {}).get("ok"))


def _recoverable(entry: dict[str, Any]) -> bool:
    if entry.get("state") in RECOVERABLE_STATES:
        return True
    return entry.get("state") in ("needs_human", "fallback") and entry.get("failure_class") not in NO_RESTART_CLASSES


def precheck(client: SupervisorClient, required: list[str], wait: float, started: float) -> dict[str, Any]:
    """Probe every server now, confirm doubtful required ones, ask for recovery of the failed ones,
    long-poll readiness until ``wait`` runs out. Raises DaemonUnreachable/ApiError to the caller."""
    deadline = time.monotonic() + wait
    servers = _servers(client.status())
    probes = _probe_all(client, list(servers))
    # a required server whose probe just failed may still read "healthy" (failure_threshold):
    # probe it again until the daemon's verdict catches up, so "ready" is not a stale answer
    for name in required:
        answer = probes.get(name, {})
        tries = 0
        while not _probe_ok(answer) and answer.get("state") in GOOD_STATES and tries < 5:
            if time.monotonic() >= deadline:
                break
            answer = _probe_all(client, [name])[name]
            tries += 1
        probes[name] = answer
    readiness = client.ready(required)
    asked: list[str] = []
    if not readiness.get("ready"):
        servers = _servers(client.status())
        for entry in _enrich(readiness.get("not_ready", []), servers):
            if _recoverable(entry):
                with contextlib.suppress(ApiError):
                    client.recover(str(entry["name"]))
                    asked.append(str(entry["name"]))
        remaining = max(0.0, deadline - time.monotonic())
        if remaining > 0:
            names = ", ".join(str(e.get("name")) for e in readiness.get("not_ready", []))
            _say(f"waiting up to {remaining:.0f} s for {names} (the supervisor is recovering)")
            readiness = client.ready_within(remaining, required)
    servers = _servers(client.status())
    return {
        "mode": "daemon",
        "ready": bool(readiness.get("ready")),
        "waited_s": round(time.time() - started, 3),
        "probed": {name: _probe_ok(answer) for name, answer in probes.items()},
        "recover_requested": asked,
        "not_ready": _enrich(list(readiness.get("not_ready", [])), servers),
        "fallback": list(readiness.get("fallback", [])),
        "servers": servers,
    }


def standalone_precheck(config: Config, required: list[str], started: float) -> dict[str, Any]:
    """No daemon: one cold probe of each required server, in this process (no recovery)."""
    import asyncio

    from mcp_supervisor.health.model import ProbeKind
    from mcp_supervisor.probes import ProbeContext, create_prober

    async def check() -> dict[str, Any]:
        context = ProbeContext(max_concurrent_cold=config.supervisor.max_concurrent_cold_probes)
        probers = [create_prober(config.server(name), context) for name in required]
        try:
            results = await asyncio.gather(*(p.probe(ProbeKind.COLD) for p in probers))
        finally:
            await asyncio.gather(*(p.aclose() for p in probers), return_exceptions=True)
            await context.aclose()
        return dict(zip(required, results, strict=True))

    results = asyncio.run(check())
    not_ready = [
        {"name": name, "state": "failed", "reason": r.message, "failure_class": str(r.failure) if r.failure else None,
         "hint": r.hint}
        for name, r in results.items() if not r.ok
    ]
    servers = {name: {"name": name, "state": "healthy" if r.ok else "failed",
                      "critical": config.server(name).critical} for name, r in results.items()}
    return {
        "mode": "standalone",
        "ready": not not_ready,
        "waited_s": round(time.time() - started, 3),
        "probed": {name: r.ok for name, r in results.items()},
        "recover_requested": [],
        "not_ready": not_ready,
        "fallback": [],
        "servers": servers,
    }


def take_backup(client: SupervisorClient) -> dict[str, Any]:
    """A fresh snapshot of the watched configs before the job (skipped when there is no vault)."""
    try:
        _, answer = client.request("POST", "/v1/backups", body={}, timeout=120.0)
    except ApiError as exc:
        if exc.code == "no_vault" or exc.status == 404:
            return {"taken": False, "reason": "no vault configured"}
        return {"taken": False, "reason": f"backup failed: {exc.message}"}
    except ClientError as exc:
        return {"taken": False, "reason": f"backup failed: {exc}"}
    return {"taken": True, "snapshot": answer.get("snapshot"), "safe": answer.get("safe"),
            "skipped": sorted((answer.get("skipped") or {}).keys())}


# --- the command -------------------------------------------------------------------------------


def _load_config(args: argparse.Namespace) -> Config | None:
    from mcp_supervisor.cli.main import UsageError
    from mcp_supervisor.config import ConfigError, find_config, load_config

    path = find_config(getattr(args, "config", None))
    if path is None:
        return None
    try:
        return load_config(path)
    except ConfigError as exc:
        if getattr(args, "config", None):
            raise UsageError(str(exc)) from None
        return None


def _required(args: argparse.Namespace, servers: dict[str, dict[str, Any]]) -> list[str]:
    from mcp_supervisor.cli.main import UsageError

    named: list[str] = []
    for item in args.require or []:
        named.extend(n.strip() for n in item.split(",") if n.strip())
    unknown = [n for n in named if n not in servers]
    if unknown:
        raise UsageError(
            f"--require {unknown[0]}: no server of that name (configured: {', '.join(servers) or 'none'})"
        )
    return list(dict.fromkeys(named)) or [n for n, s in servers.items() if s.get("critical", True)]


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Before the job starts, INT/TERM abort the pre-check (the job is then not started)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_run(args: argparse.Namespace) -> int:
    from mcp_supervisor.cli.main import UsageError, socket_path

    argv = list(args.cmd or [])
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError("no command to run: supervisorctl-mcp run [--wait S] -- CMD [ARGS...]")
    config = _load_config(args)
    from mcp_supervisor.logging import collect_secrets

    secret_values = sorted(collect_secrets(config)) if config is not None else []
    started = time.time()
    run_id = new_run_id(started)
    shown = command_line(redact_argv(argv, secret_values))
    sock = socket_path(args)
    client: SupervisorClient | None = SupervisorClient(sock, timeout=10.0)
    facts = RunFacts(run_id=run_id, argv=argv, started_at=started, finished_at=started, required=[],
                     precheck={}, servers_before={}, servers_after=None, secrets=secret_values)
    try:
        with _interruptible():
            pre = _precheck_or_standalone(args, client, config, sock, started, facts)
            if pre is None:
                return _finish(args, client, config, facts, EXIT_UNREACHABLE, shown)
            client = None if pre["mode"] == "standalone" else client
            facts.precheck = {k: v for k, v in pre.items() if k != "servers"}
            facts.servers_before = pre["servers"]
            go = pre["ready"] or args.allow_fallback
            facts.precheck["outcome"] = "ready" if pre["ready"] else ("fallback" if go else "not_ready")
            if not go:
                facts.started, facts.not_started_reason = False, "required servers not ready"
                facts.finished_at = time.time()
                return _finish(args, client, config, facts, EXIT_NOT_STARTED, shown)
            facts.precheck["backup"] = take_backup(client) if client is not None else {
                "taken": False, "reason": "standalone"}
            facts.fallback = sorted({*pre["fallback"], *(str(e["name"]) for e in pre["not_ready"])})
    except Interrupted as exc:
        facts.started, facts.not_started_reason = False, f"interrupted by {exc} before the job started"
        facts.finished_at = time.time()
        return _finish(args, client, config, facts, 128 + exc.signum, shown)
    return _guarded(args, client, config, facts, sock, shown)


def _precheck_or_standalone(
    args: argparse.Namespace, client: SupervisorClient | None, config: Config | None, sock: Path, started: float,
    facts: RunFacts,
) -> dict[str, Any] | None:
    from mcp_supervisor.cli.main import UsageError

    assert client is not None
    try:
        status = _first_status(client, sock, min(args.wait, 5.0))
    except DaemonUnreachable as exc:
        if not args.standalone:
            _say(f"the job was NOT started: {exc}")
            _say("start the supervisor (systemctl start mcp-supervisor), or pass --standalone to check the "
                 "servers from here and run without it")
            facts.started, facts.not_started_reason = False, "the supervisor is unreachable"
            facts.daemon = {"reachable": False, "socket": str(sock)}
            facts.finished_at = time.time()
            return None
        if config is None:
            raise UsageError("--standalone needs the config (pass --config FILE or set MCP_SUPERVISOR_CONFIG)") from None
        _say(f"no supervisor at {sock}: checking the servers from here (--standalone, no recovery)")
        configured = {s.name: {"name": s.name, "critical": s.critical} for s in config.servers}
        facts.required = _required(args, configured)
        facts.daemon = {"reachable": False, "standalone": True, "socket": str(sock)}
        return standalone_precheck(config, facts.required, started)
    facts.required = _required(args, _servers(status))
    facts.daemon = {"reachable": True, "socket": str(sock)}
    return precheck(client, facts.required, args.wait, started)


def _first_status(client: SupervisorClient, sock: Path, patience: float) -> dict[str, Any]:
    """The daemon's status; a socket that exists but does not answer yet (restarting) gets
    ``patience`` seconds; no socket at all means no daemon, at once."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return client.status()
        except DaemonUnreachable:
            if not sock.exists() or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def _guarded(
    args: argparse.Namespace, client: SupervisorClient | None, config: Config | None, facts: RunFacts, sock: Path,
    shown: str,
) -> int:
    env = dict(os.environ)
    env["MCP_SUPERVISOR_FALLBACK"] = ",".join(facts.fallback)
    env["MCP_SUPERVISOR_SOCKET"] = str(sock)
    env["MCP_SUPERVISOR_RUN_ID"] = facts.run_id
    if facts.fallback:
        _say(f"starting with {', '.join(facts.fallback)} in fallback (MCP_SUPERVISOR_FALLBACK)")
    job = Job(facts.argv, env)
    watcher: EventWatcher | None = None
    with job.forwarding():
        if client is not None:
            before = {name: str(info.get("state")) for name, info in facts.servers_before.items()}
            watcher = EventWatcher(sock, facts.required, before)
            watcher.start()
            if not watcher.connected.wait(10.0):
                _say("could not follow the supervisor's events; failures during the run may go unrecorded")
            facts.daemon["runs_api"] = post_run(
                client, {"event": "started", "run_id": facts.run_id, "command": shown, "exit_code": None}
            )
        facts.started_at = time.time()
        returncode: int | None = None
        code = 0
        try:
            returncode = job.run()
        except OSError as exc:
            code = EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_CANNOT_EXECUTE
            facts.started, facts.not_started_reason = False, f"cannot execute {facts.argv[0]}: {exc.strerror or exc}"
            _say(f"the job was NOT started: {facts.not_started_reason}")
        facts.finished_at = time.time()
        facts.leftovers_killed = job.clean_group()
    facts.signals_forwarded = job.forwarded
    if watcher is not None:
        watcher.stop()
    if client is not None:
        try:
            status = client.status()
            facts.servers_after = _servers(status)
            if watcher is not None:
                watcher.reconcile(status)
        except ClientError:
            facts.servers_after = None
            facts.daemon["reachable_at_end"] = False
    if watcher is not None:
        facts.events = watcher.snapshot()
    if returncode is None:
        return _finish(args, client, config, facts, code, shown)
    facts.returncode = returncode
    return _finish(args, client, config, facts, exit_code_of(returncode), shown)


def _finish(
    args: argparse.Namespace, client: SupervisorClient | None, config: Config | None, facts: RunFacts, code: int,
    shown: str,
) -> int:
    facts.guardian_exit = code
    report = build_run_report(facts)
    path: Path | None = None
    try:
        path = save_report(report, runs_dir(config))
        report["run"]["report_path"] = str(path)
    except OSError as exc:
        _say(f"could not save the run report: {exc.strerror or exc}")
    if facts.daemon.get("reachable") is not False or facts.started:
        stored = post_run(client, {"event": "finished", "run_id": facts.run_id, "command": shown,
                                   "exit_code": report["run"]["exit_code"], "report": report})
        report["run"]["daemon"]["runs_api"] = stored
    if args.json:
        sys.stdout.write(json.dumps(report, default=str) + "\n")
        sys.stdout.flush()
    else:
        _print_summary(report, path)
    return code


def _print_summary(report: dict[str, Any], path: Path | None) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    for style, text in summary_lines(report):
        console.print(Text(text, style=style or ""))  # Text, not markup: server text stays literal
    if path is not None:
        console.print(Text(f"  report: {path}", style="dim"))
