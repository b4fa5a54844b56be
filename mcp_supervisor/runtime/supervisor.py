"""The running supervisor: owns the runners and shared resources; the control API's backend.

Why readiness and status are read from the ``Board`` (``runtime/snapshot.py``): the runners
publish a view of their server after every change, so ``/v1/ready`` and ``/v1/status`` answer from
prepared data at the same cost whatever the daemon is doing (``runtime/readiness.py``).
``wait_ready`` is event-driven: every state change wakes its waiters, nothing polls.

Start-up and reload are a queue, not a stampede: every runner's first probe falls at a random
point of its interval, handshakes take turns (``[supervisor] max_concurrent_handshakes``), and the
event loop's lateness is measured (``runtime/loop_lag.py``) so that a timeout the daemon's own load
caused is checked again rather than counted against the server (``runtime/observe.py``).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp_supervisor.config import Config, ConfigError, ServerConfig, load_config
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.health.model import Command, ProbeKind, Transition, UnknownServer
from mcp_supervisor.logging import REDACTOR, collect_secrets, get_logger
from mcp_supervisor.runtime.contracts import ContractKeeper
from mcp_supervisor.runtime.docker_events import DockerEvents, event_facts, is_trigger
from mcp_supervisor.runtime.env import RunnerEnv
from mcp_supervisor.runtime.executor import Executor
from mcp_supervisor.runtime.loop_lag import LoopLag
from mcp_supervisor.runtime.readiness import Phase, Roster, readiness, summary
from mcp_supervisor.runtime.reload_plan import plan_reload
from mcp_supervisor.runtime.runner import ServerRunner
from mcp_supervisor.runtime.shared import SharedResources
from mcp_supervisor.runtime.snapshot import Board, ServerView
from mcp_supervisor.runtime.standby import attach_standby, with_standby
from mcp_supervisor.runtime.status import DriftStats, result_json, server_status
from mcp_supervisor.spawn import cgroups
from mcp_supervisor.spawn.home import prepare_state_dir
from mcp_supervisor.spawn.records import ProcessRecords, kill_group, records_for

log = get_logger("mcp_supervisor.supervisor")


class Supervisor:
    """Implements ``mcp_supervisor.api.control.SupervisorControl``."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        *,
        rng: random.Random | None = None,
        on_change: Callable[[Supervisor], None] | None = None,
        vault: Any = None,
    ) -> None:
        self.config = config
        self.config_path = config_path or config.source
        self.bus = EventBus()
        self.vault = vault
        self.runners: dict[str, ServerRunner] = {}
        self._rng = rng or random.Random()
        self._on_change = on_change
        self._waiters: set[asyncio.Future[None]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._shared: SharedResources | None = None
        self._docker_events = DockerEvents(self._get_docker, self._on_docker_event)
        self.board = Board(self._render)
        self.roster = Roster.of([(s.name, s.critical) for s in config.servers])
        self._ready_cache: tuple[Board, Roster, tuple[int, str, bool], dict[str, Any]] | None = None
        self.lag = LoopLag()
        self._lag_task: asyncio.Task[None] | None = None
        self._drift = DriftStats()
        self._env: RunnerEnv | None = None
        self._reload_lock = asyncio.Lock()
        self.started_at = time.time()
        self._started = False
        self._closing: list[ServerRunner] = []
        self.phase: Phase = "starting"
        self._replacing: dict[str, bool] = {}
        """Servers a reload is stopping or starting right now, with whether each is critical."""
        self._retiring: asyncio.Future[Any] | None = None
        self._retiring_runners: list[ServerRunner] = []
        self.records: ProcessRecords | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, tg: asyncio.TaskGroup) -> None:
        self._tg = tg
        self._lag_task = tg.create_task(self.lag.run(), name="loop-lag")
        shared = self._shared = SharedResources(lambda: self.config, pressure=self.lag.pressure)
        log_dir = Path(self.config.state_dir) / "logs"
        executor = Executor(self._get_docker, self.vault, shared.get_http)
        self.contracts = ContractKeeper(Path(self.config.state_dir))  # tool contracts (api/contract_routes.py)
        self._env = RunnerEnv(
            bus=self.bus,
            executor=executor,
            probe_context=shared.probe_context,
            log_dir=log_dir,
            on_transition=self._transition,
            docker=self._get_docker,
            process_grace=min(2.0, max(0.2, self.config.supervisor.shutdown_timeout * 0.5)),
            can_restore=self._can_restore,
            rng=self._rng,
            on_view=self._on_view,
            lag=self.lag,
            contracts=self.contracts,
        )
        try:
            self._prepare_state_dir()
            if any(s.limits.memory is not None or s.limits.tasks is not None for s in self.config.servers):
                cgroups.support()  # before any child: in cgroup v2 the daemon must move to a leaf alone
            if any(s.managed for s in self.config.servers):
                log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            await self._stop_previous_life()
            for server in self.config.servers:
                if self.phase == "stopping":
                    break
                await self._add(server)
        except BaseException:
            # a runner that cannot start must not leave the ones already started running
            log.error("starting the servers failed; stopping every managed process already started")
            try:
                await asyncio.shield(self.aclose())
            finally:
                self.kill_now()
            raise
        self._started = True
        if self.phase == "starting":
            self._set_phase("running")
        self._restart_docker_events()
        self.bus.publish(Event(kind="daemon", data={"event": "started", "servers": len(self.runners)}))

    def _render(self, view: ServerView) -> dict[str, Any]:
        return server_status(view, self._wall_offset())

    def _on_view(self, view: ServerView) -> None:
        if view.name in self.runners:  # a runner a reload took out may still say something
            self.board.put(with_standby(view, self.runners[view.name]))  # runtime/standby.py

    def _prepare_state_dir(self) -> None:
        """The state directory is the daemon's own, 0711: servers reach their HOME in ``homes``, no more."""
        try:
            os.close(prepare_state_dir(Path(self.config.state_dir)))
        except OSError as exc:  # supervising matters more; the spawns that need it say why
            log.error("the state directory is not safe to use", error=str(exc))

    async def _stop_previous_life(self) -> None:
        """Stop what a daemon that died left running, before starting anything of ours."""
        self.records = records_for(Path(self.config.state_dir))
        if not self.records.directory.is_dir() and not any(s.managed for s in self.config.servers):
            return  # no managed server now or in a previous life: nothing to look for
        assert self._env is not None
        try:
            stopped = await self.records.stop_leftovers(grace=max(self._env.process_grace, 1.0))
        except OSError as exc:  # supervising now matters more than the sweep
            log.error("cannot check for a previous daemon's processes", error=f"{type(exc).__name__}: {exc}")
            return
        if stopped:
            log.warning("stopped managed processes left by a previous daemon", processes=stopped)
            self.bus.publish(Event(kind="daemon", data={"event": "orphans_stopped", "processes": stopped}))

    def begin_stop(self) -> None:
        """Shutdown starts: from now on nothing is ready, and parked long-polls hear it at once."""
        if self.phase != "stopping":
            self._set_phase("stopping")

    @property
    def stopping(self) -> bool:
        return self.phase == "stopping"

    def _set_phase(self, phase: Phase) -> None:
        self.phase = phase
        self.bus.publish(Event(kind="daemon", data={"event": "phase", "phase": phase}))
        self._transition_all()

    async def aclose(self) -> None:
        """Stop every runner concurrently (closing probers and managed processes)."""
        self.begin_stop()
        await self._docker_events.aclose()
        self._closing = list(self.runners.values())
        self.runners.clear()
        self.board = Board(self._render)
        retiring = [self._retiring] if self._retiring is not None else []  # a reload's stops in flight
        await asyncio.gather(*(r.stop() for r in self._closing), *retiring, return_exceptions=True)
        await self._close_shared()
        cgroups.release()  # every child is stopped: the daemon's (now empty) cgroup subtree goes too

    def kill_now(self) -> None:
        """The clean stop ran out of time: SIGKILL every managed process group still there."""
        for runner in [*self._closing, *self._retiring_runners, *self.runners.values()]:
            runner.kill_now()
        if self.records is not None:
            for record in self.records.live():
                kill_group(record, signal.SIGKILL)

    async def _close_shared(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            self._lag_task = None
        if self._shared is not None:
            await self._shared.aclose()

    async def _add(self, server: ServerConfig) -> None:
        assert self._env is not None and self._tg is not None
        if self.phase == "stopping":
            return  # a reload racing the shutdown must not start what nobody will stop
        runner = ServerRunner(server, self._env)
        self.runners[server.name] = runner
        await runner.start(self._tg)  # publishes its first view
        attach_standby(runner, self._tg)  # standby = 1 (managed http/sse): its second instance

    def _can_restore(self, server: ServerConfig) -> bool:
        return self.vault is not None and server.config is not None

    async def _get_docker(self) -> Any:
        return await self._shared.get_docker() if self._shared is not None else None

    # --- Docker events: a dead container is noticed at once -------------------------------

    def _restart_docker_events(self) -> None:
        self._docker_events.restart(self._tg, [s.container for s in self.config.servers if s.container])

    def _on_docker_event(self, event: Any) -> None:
        name, action = event_facts(event)
        for runner in self.runners.values():
            if runner.server.container and runner.server.container == name:
                self.bus.publish(Event(kind="container", server=runner.server.name, data={"action": action}))
                if is_trigger(action):
                    runner.request_probe(ProbeKind.CONTAINER)
                    runner.request_probe(ProbeKind.WARM)

    # --- state changes ---------------------------------------------------------------------

    def _transition(self, transition: Transition) -> None:
        self._wake_waiters()

    def summary(self) -> str:
        """One line for systemd's STATUS=: '3/3 ready' or '2/3 ready; jira failed'."""
        return summary(self.board)

    # --- SupervisorControl -----------------------------------------------------------------

    def _wall_offset(self) -> float:
        return time.time() - asyncio.get_running_loop().time()

    def status(self) -> dict[str, Any]:
        """Prepared entries from the board; the drift figures are recomputed at most once a second."""
        env = self._env
        context = self._shared.probe_context if self._shared is not None else None
        return {
            "ready": self.readiness()["ready"],
            "servers": list(self.board.rendered.values()),
            "daemon": {
                "pid": os.getpid(),
                "state": self.phase,
                "ready_waiters": len(self._waiters),
                "config": str(self.config_path) if self.config_path else None,
                "started_at": round(self.started_at, 3),
                "summary": self.summary(),
                "probes": env.counters["probes"] if env else 0,
                "actions": env.counters["actions"] if env else 0,
                "timeouts_rerun": env.counters["reruns"] if env else 0,
                "handshakes_queued": getattr(context, "turns_waited", 0),
                "drift_ms": self._drift.of(env.drift_ms if env else ()),
                "loop_lag": self.lag.stats(),
            },
        }

    def readiness(self, servers: list[str] | None = None) -> dict[str, Any]:
        """The ``/v1/ready`` answer; the one for every critical server is kept until the board,
        the phase or a reload changes it (the same dict: callers never modify it)."""
        if servers or self._replacing:
            return readiness(self.board, self.roster, phase=self.phase, started=self._started,
                             replacing=self._replacing, servers=servers)
        key = (self.board.ready_version, self.phase, self._started)
        cache = self._ready_cache
        if cache is None or cache[0] is not self.board or cache[1] is not self.roster or cache[2] != key:
            cache = self._ready_cache = (self.board, self.roster, key, readiness(
                self.board, self.roster, phase=self.phase, started=self._started, replacing=self._replacing))
        return cache[3]

    async def wait_ready(self, servers: list[str] | None, timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            answer = self.readiness(servers)
            remaining = deadline - loop.time()
            if answer["ready"] or remaining <= 0 or answer["daemon"] == "stopping":
                return answer  # a stopping daemon answers "no" now rather than at the deadline
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return self.readiness(servers)
            finally:
                self._waiters.discard(waiter)

    def _runner(self, name: str) -> ServerRunner:
        runner = self.runners.get(name)
        if runner is None:
            raise UnknownServer(name)
        return runner

    async def probe_now(self, name: str) -> dict[str, Any]:
        runner = self._runner(name)
        result = await runner.probe_now(ProbeKind.WARM)
        return {"name": name, "state": str(runner.state), "result": result_json(result)}

    async def command(self, name: str | None, cmd: Command) -> dict[str, Any]:
        if name is None:
            if cmd is not Command.EMERGENCY:
                raise UnknownServer("(a server name is required)")
            targets = list(self.runners.values())
        else:
            targets = [self._runner(name)]
        results = []
        for runner in targets:
            actions = runner.command(cmd)
            self.bus.publish(Event(kind="command", server=runner.server.name, data={"command": str(cmd)}))
            log.info("command", server=runner.server.name, command=str(cmd), actions=len(actions))
            results.append({"name": runner.server.name, "state": str(runner.state)})
        return {"accepted": True, "command": str(cmd), "servers": results}

    async def reload(self) -> dict[str, Any]:
        """Add, remove or replace only the servers whose definition changed."""
        async with self._reload_lock:
            path = self.config_path
            if path is None:
                return {"ok": False, "error": "the daemon was started without a config file"}
            try:
                new = await asyncio.to_thread(load_config, path)
            except ConfigError as exc:
                problem = str(exc).replace("\n", " ")
                log.error("reload rejected; the old config keeps running", error=problem)
                self.bus.publish(Event(kind="config", data={"event": "reload_rejected", "error": str(exc)}))
                return {"ok": False, "error": str(exc)}
            if self.phase == "stopping":
                return {"ok": False, "error": "the daemon is stopping; the reload was not applied"}
            plan = plan_reload(self.config, new)
            for warning in plan.warnings:
                log.warning(warning)
            self.config = new
            self.roster = Roster.of([(s.name, s.critical) for s in new.servers])
            REDACTOR.update(collect_secrets(new))
            if self._shared is not None:
                self._shared.require_env(new)
            # the affected servers are "reloading" (not ready) until their new runner exists; then
            # "starting" until its first probe
            removed, added, changed, new_servers = plan.removed, plan.added, plan.changed, plan.new_servers
            self._replacing = dict(plan.replacing)
            if self._replacing:
                self._set_phase("reloading")
            try:
                stopping = [self.runners.pop(n) for n in removed + changed if n in self.runners]
                for runner in stopping:
                    self.board.remove(runner.server.name)
                # shielded (and awaited by aclose): a stop cut short would leave a managed process
                # that nobody supervises
                self._retiring_runners = stopping
                self._retiring = asyncio.ensure_future(asyncio.gather(*(r.stop() for r in stopping),
                                                                      return_exceptions=True))
                await asyncio.shield(self._retiring)
                # keep the config's order for status output
                for name in added + changed:
                    await self._add(new_servers[name])
                    self._replacing.pop(name, None)
                if not self.stopping:
                    self.runners = {n: self.runners[n] for n in new_servers if n in self.runners}
                    self.board.reorder(self.runners)
            finally:
                self._replacing = {}
                if self.phase == "reloading":
                    self._set_phase("running")
            self._restart_docker_events()
            log.info("config reloaded", added=added, removed=removed, changed=changed)
            self.bus.publish(
                Event(kind="config", data={"event": "reloaded", "added": added, "removed": removed, "changed": changed})
            )
            self._transition_all()
            return {"ok": True, "added": added, "removed": removed, "changed": changed}

    def _transition_all(self) -> None:
        """Membership changed: readiness may have changed without any state change."""
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._on_change is not None:
            self._on_change(self)
