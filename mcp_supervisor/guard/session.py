"""One guarded run, from pre-check to stored report: the core of ``run -- CMD`` and ``guarded_run``.

Why one object with explicit steps (prepare, begin, end, conclude) rather than one function: the
CLI wraps a child process and signal handling around the middle, a Python job wraps a ``with``
block; both must pre-check, watch and report the same way.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp_supervisor.api.client import ClientError, DaemonUnreachable, SupervisorClient
from mcp_supervisor.guard.masking import command_line, redact_argv
from mcp_supervisor.guard.precheck import precheck, say, servers_of, standalone_precheck, take_backup
from mcp_supervisor.guard.report import RunFacts, build_run_report, exit_code_of
from mcp_supervisor.guard.store import new_run_id, post_run, runs_dir, save_report
from mcp_supervisor.guard.watch import EventWatcher

if TYPE_CHECKING:
    from mcp_supervisor.config import Config

EXIT_UNREACHABLE = 3
EXIT_NOT_STARTED = 75  # EX_TEMPFAIL: cron and systemd may try again later
DEFAULT_WAIT = 300.0


class NotReady(ClientError):
    """``guarded_run`` did not enter its block: ``exit_code`` 75 (required servers not ready) or 3
    (no daemon); ``report`` is the stored run report, ``not_ready`` the servers and why."""

    def __init__(self, message: str, exit_code: int, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.report = report
        run = report.get("run") or {}
        self.not_ready: list[dict[str, Any]] = list((run.get("precheck") or {}).get("not_ready", []))


class GuardUsageError(ValueError):
    """The run was asked for something impossible (an unknown server, --standalone without a config)."""


@dataclass
class Options:
    require: list[str] = field(default_factory=list)
    wait: float = DEFAULT_WAIT
    allow_fallback: bool = False
    standalone: bool = False


class GuardedRun:
    """prepare() -> begin() -> [the work] -> end(returncode) -> conclude(exit code)."""

    def __init__(self, argv: list[str], socket_path: Path, config: Config | None, options: Options) -> None:
        from mcp_supervisor.redact import collect_secrets  # not .logging: structlog costs a job start ~100 ms

        self.options = options
        self.config = config
        self.socket_path = socket_path
        self.client: SupervisorClient | None = SupervisorClient(socket_path, timeout=10.0)
        secret_values = sorted(collect_secrets(config)) if config is not None else []
        now = time.time()
        self.facts = RunFacts(run_id=new_run_id(now), argv=list(argv), started_at=now, finished_at=now, required=[],
                              precheck={}, servers_before={}, servers_after=None, secrets=secret_values)
        self.shown = command_line(redact_argv(argv, secret_values))
        self.watcher: EventWatcher | None = None
        self.report: dict[str, Any] | None = None
        self.report_path: Path | None = None
        self.proxy_env: dict[str, str] = {}

    @property
    def run_id(self) -> str:
        return self.facts.run_id

    @property
    def fallback(self) -> list[str]:
        """Required servers the job must reach directly (their API), not through MCP."""
        return list(self.facts.fallback)

    def environment(self) -> dict[str, str]:
        """What the job is told: fallback servers, the socket, the run id, the proxy's URLs."""
        return {
            "MCP_SUPERVISOR_FALLBACK": ",".join(self.facts.fallback),
            "MCP_SUPERVISOR_SOCKET": str(self.socket_path),
            "MCP_SUPERVISOR_RUN_ID": self.facts.run_id,
            **self.proxy_env,
        }

    def _read_proxy(self) -> None:
        """``MCP_SUPERVISOR_PROXY_URL_<NAME>`` and the token file's path, when the proxy listens."""
        from mcp_supervisor.proxy.exports import proxy_environment

        if self.client is None:
            return
        try:
            _status, info = self.client.request("GET", "/v1/proxy")
        except ClientError:
            return  # a daemon without the proxy: the job uses the servers directly
        self.proxy_env = proxy_environment(info)

    # --- before ------------------------------------------------------------------------------

    def prepare(self) -> int | None:
        """The pre-check. None: start the work. Otherwise the exit code for not starting it:
        3 (no daemon, and not --standalone), 75 (required servers not ready, no fallback allowed)."""
        facts = self.facts
        pre = self._precheck()
        if pre is None:
            facts.started, facts.not_started_reason = False, "the supervisor is unreachable"
            facts.finished_at = time.time()
            return EXIT_UNREACHABLE
        if pre["mode"] == "standalone":
            self.client = None
        facts.precheck = {k: v for k, v in pre.items() if k != "servers"}
        facts.servers_before = pre["servers"]
        go = pre["ready"] or self.options.allow_fallback
        facts.precheck["outcome"] = "ready" if pre["ready"] else ("fallback" if go else "not_ready")
        if not go:
            facts.started, facts.not_started_reason = False, "required servers not ready"
            facts.finished_at = time.time()
            return EXIT_NOT_STARTED
        facts.precheck["backup"] = (
            take_backup(self.client) if self.client is not None else {"taken": False, "reason": "standalone"}
        )
        facts.fallback = sorted({*pre["fallback"], *(str(e["name"]) for e in pre["not_ready"])})
        self._read_proxy()
        return None

    def _precheck(self) -> dict[str, Any] | None:
        assert self.client is not None
        started = self.facts.started_at
        try:
            status = _first_status(self.client, self.socket_path, min(self.options.wait, 5.0))
        except DaemonUnreachable as exc:
            self.facts.daemon = {"reachable": False, "socket": str(self.socket_path)}
            if not self.options.standalone:
                say(f"the job was NOT started: {exc}")
                say("start the supervisor (systemctl start mcp-supervisor), or pass --standalone to check the "
                    "servers from here and run without it")
                return None
            if self.config is None:
                raise GuardUsageError(
                    "--standalone needs the config (pass --config FILE or set MCP_SUPERVISOR_CONFIG)"
                ) from None
            say(f"no supervisor at {self.socket_path}: checking the servers from here (--standalone, no recovery)")
            configured = {s.name: {"name": s.name, "critical": s.critical} for s in self.config.servers}
            self.facts.required = self._required(configured)
            self.facts.daemon.update(standalone=True, runs_api="standalone")
            return standalone_precheck(self.config, self.facts.required, started)
        self.facts.required = self._required(servers_of(status))
        self.facts.daemon = {"reachable": True, "socket": str(self.socket_path)}
        try:
            return precheck(self.client, self.facts.required, self.options.wait, started)
        except DaemonUnreachable as exc:  # it went away during the pre-check
            self.facts.daemon["reachable"] = False
            say(f"the job was NOT started: the supervisor stopped answering during the pre-check: {exc}")
            return None

    def _required(self, servers: dict[str, dict[str, Any]]) -> list[str]:
        named: list[str] = []
        for item in self.options.require:
            named.extend(n.strip() for n in item.split(",") if n.strip())
        unknown = [n for n in named if n not in servers]
        if unknown:
            raise GuardUsageError(
                f"--require {unknown[0]}: no server of that name (configured: {', '.join(servers) or 'none'})"
            )
        return list(dict.fromkeys(named)) or [n for n, s in servers.items() if s.get("critical", True)]

    # --- during ------------------------------------------------------------------------------

    def begin(self) -> None:
        """Follow the daemon's events and tell its record a run started; the clock starts now."""
        if self.client is not None:
            before = {name: str(info.get("state")) for name, info in self.facts.servers_before.items()}
            self.watcher = EventWatcher(self.socket_path, self.facts.required, before)
            self.watcher.start()
            if not self.watcher.connected.wait(10.0):
                say("could not follow the supervisor's events; failures during the run may go unrecorded")
            self.facts.daemon["runs_api"] = post_run(
                self.client, {"event": "started", "run_id": self.run_id, "command": self.shown, "exit_code": None}
            )
        if self.facts.fallback:
            say(f"starting with {', '.join(self.facts.fallback)} in fallback (MCP_SUPERVISOR_FALLBACK)")
        self.facts.started_at = time.time()

    # --- after -------------------------------------------------------------------------------

    def end(self, returncode: int | None, not_started_reason: str | None = None) -> None:
        """The work is over (``returncode`` None: it could not be started)."""
        facts = self.facts
        facts.finished_at = time.time()
        facts.returncode = returncode
        if returncode is None:
            facts.started, facts.not_started_reason = False, not_started_reason
        if self.watcher is not None:
            self.watcher.stop()
        if self.client is not None:
            try:
                status = self.client.status()
            except ClientError:
                facts.daemon["reachable_at_end"] = False
            else:
                facts.servers_after = servers_of(status)
                if self.watcher is not None:
                    self.watcher.reconcile(status)
        if self.watcher is not None:
            facts.events = self.watcher.snapshot()

    def conclude(self, code: int) -> dict[str, Any]:
        """Build the report, save it (0600, atomic) and send it to the daemon's record."""
        from mcp_supervisor.proxy.exports import restart_sentences

        self.facts.guardian_exit = code
        report = build_run_report(self.facts)
        report["proxy"] = restart_sentences(self.facts.events)  # calls the proxy held across restarts
        try:
            self.report_path = save_report(report, runs_dir(self.config))
            report["run"]["report_path"] = str(self.report_path)
        except OSError as exc:
            say(f"could not save the run report: {exc.strerror or exc}")
        if self.facts.daemon.get("reachable") is not False:
            report["run"]["daemon"]["runs_api"] = post_run(
                self.client,
                {"event": "finished", "run_id": self.run_id, "command": self.shown,
                 "exit_code": report["run"]["exit_code"], "report": report},
            )
        self.report = report
        return report


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


def load_optional_config(explicit: str | Path | None) -> Config | None:
    """The config (for state_dir, secrets to mask, --standalone); None when there is none.
    An explicitly named config that does not load is an error; a broken default one is not."""
    from mcp_supervisor.config import ConfigError, find_config, load_config

    path = find_config(explicit)
    if path is None:
        return None
    try:
        return load_config(path)
    except ConfigError as exc:
        if explicit is not None:
            raise GuardUsageError(str(exc)) from None
        return None


@contextlib.contextmanager
def guarded_run(
    require: list[str] | None = None,
    *,
    wait: float = DEFAULT_WAIT,
    allow_fallback: bool = False,
    socket: Path | str | None = None,
    config: Path | str | None = None,
) -> Iterator[GuardedRun]:
    """The guardian around a block of a Python job::

        with guarded_run(require=["jira"], wait=300) as run:
            use_direct_api = "jira" in run.fallback
            ...

    Raises NotReady (``exit_code`` 75, or 3 without a daemon) instead of entering the block. The
    block's outcome (an exception counts as exit 1, ``SystemExit(n)`` as n) is reported like a job's.
    """
    from mcp_supervisor.api.client import default_socket_path

    loaded = load_optional_config(config)
    sock = Path(socket) if socket is not None else default_socket_path(config)
    run = GuardedRun([sys.executable, *sys.argv], sock, loaded,
                     Options(require=list(require or []), wait=wait, allow_fallback=allow_fallback))
    code = run.prepare()
    if code is not None:
        report = run.conclude(code)
        why = "no supervisor answers" if code == EXIT_UNREACHABLE else "required MCP servers are not ready"
        names = ", ".join(str(e.get("name")) for e in report["run"]["precheck"].get("not_ready", []))
        raise NotReady(f"{why}{': ' + names if names else ''} (the block was not run)", code, report)
    run.begin()
    returncode = 1
    try:
        yield run
        returncode = 0
    except SystemExit as exc:
        returncode = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        raise
    except KeyboardInterrupt:
        returncode = -2
        raise
    finally:
        run.end(returncode)
        run.conclude(exit_code_of(returncode))
