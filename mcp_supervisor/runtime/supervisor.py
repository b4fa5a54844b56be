"""The running supervisor: owns the runners and shared resources; the control API's backend.

Why readiness is computed from the machines on demand: ``/v1/ready`` is the hot path a job polls,
and the truth is the machines' states; there is no second copy to get out of sync. ``wait_ready``
is event-driven: every state change wakes its waiters, nothing polls.

Why the daemon's own ``phase`` (starting, running, reloading, stopping) is part of readiness:
"ready" must be true or it must be "no". While the daemon starts, nothing has been checked; while
it stops, the servers are going away; while a reload replaces a server, the old runner is gone and
the new one has not probed yet. In each case the affected servers answer not ready and say why,
and an empty set of runners is never read as "all ready".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import aiohttp

from mcp_supervisor.config import Config, ConfigError, ServerConfig, load_config
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.health.model import Command, ProbeKind, State, Transition, UnknownServer
from mcp_supervisor.logging import REDACTOR, collect_secrets, get_logger
from mcp_supervisor.runtime.executor import Executor
from mcp_supervisor.runtime.process_records import ProcessRecords, kill_group, records_for
from mcp_supervisor.runtime.runner import RunnerEnv, ServerRunner, result_json

log = get_logger("mcp_supervisor.supervisor")

_READY_STATES = frozenset({State.HEALTHY, State.DEGRADED})
Phase = Literal["starting", "running", "reloading", "stopping"]
_PHASE_REASON = {"starting": "daemon starting", "reloading": "reloading", "stopping": "daemon stopping"}
_DOCKER_TRIGGERS = ("die", "oom", "kill", "stop", "unhealthy", "health_status: unhealthy", "destroy")


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


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
        self._http: aiohttp.ClientSession | None = None
        self._docker: Any = None
        self._docker_task: asyncio.Task[None] | None = None
        self._probe_context: Any = None
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
        from mcp_supervisor.probes import ProbeContext

        self._tg = tg
        self._probe_context = ProbeContext(max_concurrent_cold=self.config.supervisor.max_concurrent_cold_probes)
        log_dir = Path(self.config.state_dir) / "logs"
        executor = Executor(self._get_docker, self.vault, self._get_http)
        self._env = RunnerEnv(
            bus=self.bus,
            executor=executor,
            probe_context=self._probe_context,
            log_dir=log_dir,
            on_transition=self._transition,
            docker=self._get_docker,
            process_grace=min(2.0, max(0.2, self.config.supervisor.shutdown_timeout * 0.5)),
            can_restore=self._can_restore,
            rng=self._rng,
        )
        try:
            if any(s.managed for s in self.config.servers):
                log_dir.mkdir(parents=True, exist_ok=True)
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
        if self._docker_task is not None:
            self._docker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._docker_task
        self._closing = list(self.runners.values())
        self.runners.clear()
        retiring = [self._retiring] if self._retiring is not None else []  # a reload's stops in flight
        await asyncio.gather(*(r.stop() for r in self._closing), *retiring, return_exceptions=True)
        await self._close_shared()

    def kill_now(self) -> None:
        """The clean stop ran out of time: SIGKILL every managed process group still there."""
        for runner in [*self._closing, *self._retiring_runners, *self.runners.values()]:
            runner.kill_now()
        if self.records is not None:
            for record in self.records.live():
                kill_group(record, signal.SIGKILL)

    async def _close_shared(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._docker is not None:
            with contextlib.suppress(Exception):
                await self._docker.aclose()
            self._docker = None
        close = getattr(self._probe_context, "aclose", None)
        if callable(close):
            with contextlib.suppress(Exception):
                await close()

    async def _add(self, server: ServerConfig) -> None:
        assert self._env is not None and self._tg is not None
        if self.phase == "stopping":
            return  # a reload racing the shutdown must not start what nobody will stop
        runner = ServerRunner(server, self._env)
        self.runners[server.name] = runner
        await runner.start(self._tg)

    def _can_restore(self, server: ServerConfig) -> bool:
        return self.vault is not None and server.config is not None

    async def _get_http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def _get_docker(self) -> Any:
        if self._docker is None and any(s.container for s in self.config.servers):
            from mcp_supervisor.actuators.container import DockerActuator

            required: dict[str, Iterable[str]] = {s.container: tuple(s.env) for s in self.config.servers if s.container}
            self._docker = DockerActuator(os.environ.get("DOCKER_HOST") or self.config.docker.host, required_env=required)
        return self._docker

    # --- Docker events: a dead container is noticed at once -------------------------------

    def _restart_docker_events(self) -> None:
        if self._docker_task is not None:
            self._docker_task.cancel()
            self._docker_task = None
        names = [s.container for s in self.config.servers if s.container]
        if names and self._tg is not None:
            self._docker_task = self._tg.create_task(self._follow_docker(names), name="docker-events")

    async def _follow_docker(self, names: list[str]) -> None:
        """Follow the engine's events; ``since`` makes it replay whatever happened while the
        stream was not yet (or no longer) connected, so a death is never missed."""
        since = time.time()
        while True:
            try:
                docker = await self._get_docker()
                async for event in docker.events(names, since=since):
                    since = max(since, time.time() - 1.0)  # a replayed duplicate only costs a check
                    self._on_docker_event(event)
                log.info("docker event stream ended; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("docker event stream failed; retrying in 2s", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(2.0)

    def _on_docker_event(self, event: Any) -> None:
        def get(key: str) -> Any:
            return event.get(key) if isinstance(event, dict) else getattr(event, key, None)

        name = get("name") or get("container")
        action = str(get("action") or get("status") or get("kind") or "")
        for runner in self.runners.values():
            if runner.server.container and runner.server.container == name:
                self.bus.publish(Event(kind="container", server=runner.server.name, data={"action": action}))
                if any(action.startswith(t) for t in _DOCKER_TRIGGERS) or "unhealthy" in action:
                    runner.request_probe(ProbeKind.CONTAINER)
                    runner.request_probe(ProbeKind.WARM)

    # --- state changes ---------------------------------------------------------------------

    def _transition(self, runner: ServerRunner, transition: Transition) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._on_change is not None:
            self._on_change(self)

    def summary(self) -> str:
        """One line for systemd's STATUS=: '3/3 ready' or '2/3 ready; failed: jira'."""
        total = len(self.runners)
        ok = [r for r in self.runners.values() if self._counts_ready(r)]
        line = f"{len(ok)}/{total} ready"
        bad = [f"{r.server.name} {r.state}" for r in self.runners.values() if not self._counts_ready(r)]
        if bad:
            line += "; " + ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        return line

    @staticmethod
    def _counts_ready(runner: ServerRunner) -> bool:
        state = runner.state
        if state in _READY_STATES:
            return True
        fallback = runner.server.fallback
        return state is State.FALLBACK and fallback is not None and fallback.allowed

    # --- SupervisorControl -----------------------------------------------------------------

    def _wall_offset(self) -> float:
        return time.time() - asyncio.get_running_loop().time()

    def status(self) -> dict[str, Any]:
        offset = self._wall_offset()
        drift = list(self._env.drift_ms) if self._env else []
        return {
            "ready": self.readiness()["ready"],
            "servers": [r.status(offset) for r in self.runners.values()],
            "daemon": {
                "pid": os.getpid(),
                "state": self.phase,
                "ready_waiters": len(self._waiters),
                "config": str(self.config_path) if self.config_path else None,
                "started_at": round(self.started_at, 3),
                "summary": self.summary(),
                "probes": self._env.counters["probes"] if self._env else 0,
                "actions": self._env.counters["actions"] if self._env else 0,
                "drift_ms": {
                    "samples": len(drift),
                    "p50": _percentile(drift, 0.5),
                    "p99": _percentile(drift, 0.99),
                    "max": max(drift) if drift else None,
                },
            },
        }

    def readiness(self, servers: list[str] | None = None) -> dict[str, Any]:
        phase = self.phase
        known = {s.name: s.critical for s in self.config.servers} | self._replacing
        if servers:
            unknown = [n for n in servers if n not in known and n not in self.runners]
            if unknown:
                raise UnknownServer(unknown[0])
        if phase in ("starting", "stopping") or not self._started:
            names = servers or [n for n, critical in known.items() if critical]
            reason = _PHASE_REASON["stopping" if phase == "stopping" else "starting"]
            state = "stopping" if phase == "stopping" else "starting"
            items = [{"name": n, "state": state, "reason": reason} for n in names]
            return {"ready": False, "daemon": phase, "not_ready": items or [{"name": "*", "state": state,
                    "reason": reason}], "fallback": []}
        wanted = servers or [n for n, critical in known.items() if critical]
        not_ready = []
        fallback = []
        for name in wanted:
            runner = self.runners.get(name)
            if name in self._replacing or runner is None:
                not_ready.append({"name": name, "state": "reloading" if name in self._replacing else "starting",
                                  "reason": _PHASE_REASON["reloading"] if name in self._replacing else
                                  "no runner for this server"})
                continue
            if self._counts_ready(runner):
                if runner.state is State.FALLBACK:
                    fallback.append(runner.server.name)
                continue
            not_ready.append({"name": runner.server.name, "state": str(runner.state), "reason": runner.reason()})
        if not self.runners and self.config.servers and not not_ready:
            not_ready.append({"name": "*", "state": "starting", "reason": "no server is running"})
        return {"ready": not not_ready, "daemon": phase, "not_ready": not_ready, "fallback": fallback}

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
            old_servers = {s.name: s for s in self.config.servers}
            new_servers = {s.name: s for s in new.servers}
            removed = [n for n in old_servers if n not in new_servers]
            added = [n for n in new_servers if n not in old_servers]
            changed = [n for n in new_servers if n in old_servers and new_servers[n] != old_servers[n]]
            for what, before, after in (
                ("the socket path", self.config.supervisor.socket, new.supervisor.socket),
                ("[backup] and [[configs]]", (self.config.backup, self.config.configs), (new.backup, new.configs)),
                ("[supervisor] logging", self.config.supervisor.log_level, new.supervisor.log_level),
            ):
                if before != after:
                    log.warning(f"{what} changed; this takes effect at the next daemon restart")
            self.config = new
            REDACTOR.update(collect_secrets(new))
            if self._docker is not None:
                for server in new.servers:
                    if server.container:
                        self._docker.require_env(server.container, tuple(server.env))
            # the affected servers are "reloading" (not ready) until their new runner exists; then
            # "starting" until its first probe
            self._replacing = {n: old_servers[n].critical for n in removed} | {
                n: new_servers[n].critical or (n in old_servers and old_servers[n].critical) for n in added + changed
            }
            if self._replacing:
                self._set_phase("reloading")
            try:
                stopping = [self.runners.pop(n) for n in removed + changed if n in self.runners]
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
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._on_change is not None:
            self._on_change(self)
