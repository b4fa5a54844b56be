"""One server's runner: schedule -> probe -> health machine -> actions, in one task.

Why one task per server and a wake-up event: every input (a grid tick, a machine timer, a managed
process exiting, a Docker event, an operator command, a finished recovery action) just wakes the
loop; the loop alone decides what to do next. So probes of one server never overlap, and a
recovery action runs in its own task while the machine (``busy()``) holds back any second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mcp_supervisor.config import ServerConfig
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.health.machine import ServerMachine
from mcp_supervisor.health.model import (
    Action,
    Command,
    EnterFallback,
    FailureClass,
    Notify,
    ProbeKind,
    ProbeNow,
    ProbeResult,
    Recreate,
    Restart,
    RestoreConfig,
    State,
    Transition,
)
from mcp_supervisor.health.policy import Policy
from mcp_supervisor.logging import get_logger
from mcp_supervisor.runtime.executor import Executor
from mcp_supervisor.runtime.port_conflict import exit_port_conflict, managed_answer
from mcp_supervisor.runtime.schedule import ProbeSchedule

log = get_logger("mcp_supervisor.runner")

_RUNG = {Restart: "restart", RestoreConfig: "restore_config", Recreate: "recreate", EnterFallback: "fallback"}
_WEIGHT = {ProbeKind.WARM: 0, ProbeKind.CONTAINER: 1, ProbeKind.TOOLS: 2, ProbeKind.COLD: 3}
_PROBE_SAFETY_MARGIN = 5.0
"""The prober enforces its own deadlines; this outer one only guards against a prober bug."""


@dataclass
class RunnerEnv:
    """What every runner shares with the supervisor."""

    bus: EventBus
    executor: Executor
    probe_context: Any
    log_dir: Any
    on_transition: Callable[[ServerRunner, Transition], None]
    docker: Callable[[], Awaitable[Any]] = field(default=lambda: _no_docker())
    process_grace: float = 2.0
    can_restore: Callable[[ServerConfig], bool] = lambda server: False
    rng: random.Random = field(default_factory=random.Random)
    drift_ms: deque[float] = field(default_factory=lambda: deque(maxlen=8192))
    counters: dict[str, int] = field(default_factory=lambda: {"probes": 0, "actions": 0})


async def _no_docker() -> None:
    return None


def _clock() -> float:
    return asyncio.get_running_loop().time()


def result_json(result: ProbeResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "ok": result.ok,
        "kind": str(result.kind),
        "failure_class": str(result.failure) if result.failure else None,
        "message": result.message,
        "latency_ms": round(result.latency_ms, 2),
        "phases_ms": {k: round(v, 2) for k, v in result.phases_ms.items()},
        "degraded": result.degraded,
        "server_name": result.server_name,
        "server_version": result.server_version,
        "protocol_version": result.protocol_version,
        "tool_count": result.tool_count,
        "hint": result.hint,
    }


class ServerRunner:
    def __init__(self, server: ServerConfig, env: RunnerEnv) -> None:
        from mcp_supervisor.probes import create_prober

        self.server = server
        self.env = env
        now = _clock()
        self.machine = ServerMachine(Policy.from_config(server, can_restore=env.can_restore(server)), now, rng=env.rng)
        self.prober = create_prober(server, env.probe_context)
        self.process: Any = None
        self.last_result: ProbeResult | None = None
        self.last_probe_wall: float | None = None
        self._wake = asyncio.Event()
        self._urgent: ProbeKind | None = None
        self._probe_lock = asyncio.Lock()
        self._action_task: asyncio.Task[None] | None = None
        self._pending_actions: deque[Action] = deque()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._fired_deadline: float | None = None
        self._log = log.bind(server=server.name)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, tg: asyncio.TaskGroup) -> None:
        if self.server.managed:
            from mcp_supervisor.actuators.process import ManagedProcess

            self.process = ManagedProcess(
                self.server, self.env.log_dir, grace=self.env.process_grace, on_exit=self._on_process_exit
            )
            try:
                await self.process.start()
                self._log.info("managed process started", pid=self.process.pid)
            except Exception as exc:  # a bad command is a config failure of this server, not a daemon crash
                self._log.error("managed process could not start", error=str(exc))
                self.observe(
                    ProbeResult(
                        ok=False,
                        failure=FailureClass.CONFIG,
                        message=str(exc)[:300],
                        hint="fix 'command', 'args' or 'cwd' of this server, then: supervisorctl-mcp recover "
                        + self.server.name,
                    )
                )
        if self.server.container:
            self.request_probe(ProbeKind.CONTAINER)  # the engine's view first: it is cheap and certain
        self._task = tg.create_task(self._run(), name=f"runner:{self.server.name}")

    async def stop(self) -> None:
        """Cancel the loop and any action, close the prober (no child left), stop the process."""
        self._stopping = True
        for task in (self._task, self._action_task):
            if task is not None and not task.done():
                task.cancel()
        for task in (self._task, self._action_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        try:
            await self.prober.aclose()
        except Exception as exc:
            self._log.warning("prober close failed", error=f"{type(exc).__name__}: {exc}")
        if self.process is not None:
            try:
                await self.process.stop()
            except Exception as exc:
                self._log.warning("managed process stop failed", error=f"{type(exc).__name__}: {exc}")

    def kill_now(self) -> None:
        """Last resort at shutdown when the clean stop ran out of time."""
        process = self.process
        if process is not None:
            kill = getattr(process, "kill", None)
            if callable(kill):
                with contextlib.suppress(Exception):
                    kill()

    # --- inputs ----------------------------------------------------------------------------

    def request_probe(self, kind: ProbeKind = ProbeKind.WARM) -> None:
        if self._urgent is None or _WEIGHT[kind] > _WEIGHT[self._urgent]:
            self._urgent = kind
        self._wake.set()

    def _on_process_exit(self, *args: Any) -> None:
        """The managed process died: act now instead of at the next tick.

        A probe failure may be a blip, hence the threshold; a dead process is a fact, so the exit
        counts as the whole threshold and recovery (a respawn) starts within the same loop turn.
        """
        if self._stopping or self.machine.busy():
            return  # our own stop/restart is in progress; its outcome drives the machine
        code = args[-1] if args else None
        self._log.warning("managed process exited", returncode=code)
        self.env.bus.publish(Event(kind="process_exit", server=self.server.name, data={"returncode": code}))
        conflict = exit_port_conflict(self.server.name, self.server.url, self.process)  # i7life: names a port holder
        self._certain_failure(
            ProbeResult(
                ok=False,
                failure=FailureClass.CRASHED,
                kind=ProbeKind.WARM,
                message=f"{conflict} (the process exited, code {code})" if conflict
                else f"managed process exited (code {code})",
            )
        )
        self.request_probe(ProbeKind.WARM)

    def _certain_failure(self, result: ProbeResult) -> None:
        """A dead process or container is a fact, not a blip: it counts as the whole threshold."""
        for _ in range(self.server.probe.failure_threshold):
            before = self.machine.state
            self.observe(result)
            if self.machine.state is not before or before not in (State.STARTING, State.HEALTHY, State.DEGRADED):
                break

    def observe(self, result: ProbeResult) -> None:
        """Feed an observation made outside the probe loop (process exit, container event)."""
        if self.machine.state is State.PAUSED or self._stopping:
            return
        self.last_result = result
        self._dispatch(self.machine.on_probe(result, _clock()))

    def command(self, cmd: Command) -> list[Action]:
        actions = self.machine.on_command(cmd, _clock())
        self._dispatch(actions)
        self._wake.set()
        return actions

    async def probe_now(self, kind: ProbeKind = ProbeKind.WARM) -> ProbeResult:
        return await self._probe(kind, planned=None)

    # --- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        probe = self.server.probe
        start = _clock() + self.env.rng.uniform(0.0, probe.interval)
        schedule = ProbeSchedule(
            start,
            probe.interval,
            tools_interval=probe.tools_interval,
            cold_interval=probe.cold_interval if self.server.transport == "stdio" else None,
        )
        while True:
            try:
                await self._step(schedule)
            except asyncio.CancelledError:
                raise
            except Exception:  # one server's bug must not take the others down
                self._log.exception("runner step failed; continuing")
                await asyncio.sleep(1.0)

    async def _step(self, schedule: ProbeSchedule) -> None:
        self._wake.clear()
        now = _clock()
        deadline = self.machine.next_deadline()
        if deadline is not None and deadline == self._fired_deadline:
            deadline = None  # the machine kept a deadline it was already woken for: do not spin
        if deadline is not None and now >= deadline:
            self._fired_deadline = deadline
            self._dispatch(self.machine.on_timer(now))
            return
        acting = self._action_task is not None or self.machine.busy()
        paused = self.machine.state is State.PAUSED
        if self._urgent is not None and not acting and not paused:
            kind, self._urgent = self._urgent, None
            await self._probe(kind, planned=None)
            return
        taken = schedule.take(now)
        if taken is not None:
            if not acting and not paused:
                await self._probe(taken[0], planned=taken[1])
            return  # a tick while acting or paused is skipped, not made up later
        wake_at = schedule.next_at()
        if deadline is not None:
            wake_at = min(wake_at, deadline)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(wake_at):
                await self._wake.wait()

    async def _probe(self, kind: ProbeKind, planned: float | None) -> ProbeResult:
        async with self._probe_lock:
            started = _clock()
            if planned is not None:
                self.env.drift_ms.append((started - planned) * 1000.0)
            self.env.counters["probes"] += 1
            try:
                async with asyncio.timeout(self.server.probe.timeout * 4 + _PROBE_SAFETY_MARGIN):
                    result = await self._observe(kind)
            except TimeoutError:
                result = ProbeResult(
                    ok=False,
                    failure=FailureClass.TIMEOUT,
                    kind=kind,
                    latency_ms=(_clock() - started) * 1000.0,
                    message="probe overran every deadline",
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._log.exception("prober raised")
                result = ProbeResult(
                    ok=False, failure=FailureClass.PROTOCOL, kind=kind, message=f"probe error: {type(exc).__name__}"
                )
        if result.ok and self.process is not None:  # i7life: an answer from another process is not ours
            result = managed_answer(self.server.name, self.server.url, self.process, result,
                                    settled=self.machine.state in (State.HEALTHY, State.DEGRADED))
        self.last_result = result
        self.last_probe_wall = time.time()
        if not result.ok:
            self._log.info(
                "probe failed", kind=str(kind), failure=str(result.failure), message=result.message,
                latency_ms=round(result.latency_ms, 1),
            )
        self.env.bus.publish(
            Event(kind="probe", server=self.server.name, data={"ok": result.ok, "probe": str(kind),
                  "failure_class": str(result.failure) if result.failure else None,
                  "latency_ms": round(result.latency_ms, 2)})
        )
        if self.machine.state is not State.PAUSED and not self._stopping:
            if kind is ProbeKind.CONTAINER and result.failure is FailureClass.CRASHED:
                self._certain_failure(result)
            else:
                self._dispatch(self.machine.on_probe(result, _clock()))
        return result

    async def _observe(self, kind: ProbeKind) -> ProbeResult:
        """CONTAINER is the engine's view (state, health); every other kind is an MCP exchange."""
        if kind is ProbeKind.CONTAINER:
            docker = await self.env.docker() if self.server.container else None
            if docker is None:
                kind = ProbeKind.WARM
            else:
                from mcp_supervisor.actuators.container import container_probe_result

                return container_probe_result(await docker.inspect(self.server.container))
        result: ProbeResult = await self.prober.probe(kind)
        return result

    # --- actions ---------------------------------------------------------------------------

    def _dispatch(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Transition):
                self._on_transition(action)
            elif isinstance(action, Notify):
                self._log.warning("notify", kind=action.kind, severity=action.severity, detail=action.detail)
                self.env.bus.publish(
                    Event(kind="notify", server=self.server.name,
                          data={"notify": action.kind, "severity": action.severity, "detail": action.detail})
                )
            elif isinstance(action, ProbeNow):
                self.request_probe(action.kind)
            elif self._action_task is not None:
                self._log.error("second recovery action while one runs; queued", action=type(action).__name__)
                self._pending_actions.append(action)
            else:
                self._start_action(action)

    def _on_transition(self, transition: Transition) -> None:
        self._log.info("state", old=str(transition.old), new=str(transition.new), reason=transition.reason)
        result = self.last_result
        self.env.bus.publish(
            Event(
                kind="state",
                server=self.server.name,
                data={
                    "old": str(transition.old),
                    "new": str(transition.new),
                    "reason": transition.reason,
                    "attempt": getattr(self.machine, "attempt", 0),
                    "failure_class": str(result.failure) if result and result.failure else None,
                    "critical": self.server.critical,
                },
            )
        )
        self.env.on_transition(self, transition)

    def _start_action(self, action: Action) -> None:
        if self._stopping:
            return
        self._action_task = asyncio.get_running_loop().create_task(
            self._perform(action), name=f"action:{self.server.name}"
        )

    async def _perform(self, action: Action) -> None:
        rung = _RUNG.get(type(action), type(action).__name__.lower())
        attempt = getattr(action, "attempt", None)
        snapshot = self._snapshot()
        delay = snapshot.get("delay") or snapshot.get("backoff_delay")
        self.env.counters["actions"] += 1
        self._log.warning("action", rung=rung, attempt=attempt, delay=delay)
        self.env.bus.publish(
            Event(kind="action", server=self.server.name, data={"rung": rung, "attempt": attempt, "delay": delay})
        )
        started = _clock()
        ok, detail = False, "cancelled"
        try:
            ok, detail = await self.env.executor.execute(self.server, action, self.process)  # type: ignore[arg-type]
        finally:
            duration = _clock() - started
            self._action_task = None
            if not self._stopping:
                self._log.log(20 if ok else 30, "action done", rung=rung, attempt=attempt, ok=ok,
                              duration_s=round(duration, 3), detail=detail)
                self.env.bus.publish(
                    Event(kind="action_done", server=self.server.name,
                          data={"rung": rung, "attempt": attempt, "ok": ok, "detail": detail,
                                "duration": round(duration, 4), "delay": delay})
                )
                self._dispatch(self.machine.on_action_done(action, ok, _clock(), detail=detail))
                if self._pending_actions and self._action_task is None:
                    self._start_action(self._pending_actions.popleft())
                elif self.process is not None and not self.process.running and not self.machine.busy():
                    # it died while the action ran (its exit was ignored then): that is the verdict
                    self._on_process_exit(getattr(self.process, "returncode", None))
                self._wake.set()

    # --- views -----------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        snap = getattr(self.machine, "snapshot", None)
        if callable(snap):
            value = snap()
            if isinstance(value, dict):
                return value
            if hasattr(value, "__dict__"):
                return dict(vars(value))
        return {}

    @property
    def state(self) -> State:
        return self.machine.state

    def reason(self) -> str:
        reason = getattr(self.machine, "reason", "") or ""
        if not reason and self.last_result is not None and not self.last_result.ok:
            reason = self.last_result.message
        return str(reason)

    def status(self, wall_offset: float) -> dict[str, Any]:
        result = self.last_result
        since = getattr(self.machine, "since", None)
        entry: dict[str, Any] = {
            "name": self.server.name,
            "state": str(self.machine.state),
            "since": round(since + wall_offset, 3) if isinstance(since, int | float) else None,
            "failure_class": str(result.failure) if result and result.failure else None,
            "message": result.message if result else "",
            "latency_ms": round(result.latency_ms, 2) if result else None,
            "critical": self.server.critical,
            "fallback": self.machine.state is State.FALLBACK,
            "transport": self.server.transport,
            "kind": self.server.kind,
            "reason": self.reason(),
            "attempt": getattr(self.machine, "attempt", 0),
            "last_probe_at": round(self.last_probe_wall, 3) if self.last_probe_wall else None,
            "degraded": result.degraded if result else None,
            "hint": result.hint if result else None,
            "tool_count": result.tool_count if result else None,
            "protocol_version": result.protocol_version if result else None,
        }
        if self.process is not None:
            entry["pid"] = getattr(self.process, "pid", None)
        return entry
