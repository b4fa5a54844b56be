"""One server's runner: schedule -> probe -> health machine -> actions, in one task.

Why one task per server and a wake-up event: every input (a grid tick, a machine timer, a managed
process exiting, a Docker event, an operator command, a finished recovery action) just wakes the
loop; the loop alone decides what to do next. So probes of one server never overlap, and a
recovery action runs in its own task (``runtime/actions.py``) while the machine (``busy()``) holds
back any second one. What readers see is the ``ServerView`` the runner publishes after every change
(``runtime/snapshot.py``); taking one observation is ``runtime/observe.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from mcp_supervisor.config import ServerConfig
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
    RecoveryAction,
    State,
    Transition,
)
from mcp_supervisor.health.policy import Policy
from mcp_supervisor.logging import get_logger
from mcp_supervisor.runtime.actions import ActionSlot
from mcp_supervisor.runtime.announce import exit_event, notify_event, probe_event, state_event
from mcp_supervisor.runtime.env import RunnerEnv
from mcp_supervisor.runtime.exit_report import exit_result, exit_text, start_failure
from mcp_supervisor.runtime.observe import MAX_WIDEN, counted_anyway, observe, void_grace, widened
from mcp_supervisor.runtime.port_conflict import managed_answer
from mcp_supervisor.runtime.schedule import ProbeSchedule
from mcp_supervisor.runtime.snapshot import ServerView

__all__ = ["ServerRunner"]

log = get_logger("mcp_supervisor.runner")

_WEIGHT = {ProbeKind.WARM: 0, ProbeKind.CONTAINER: 1, ProbeKind.TOOLS: 2, ProbeKind.COLD: 3}


def _clock() -> float:
    return asyncio.get_running_loop().time()


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
        self.tool_count: int | None = None
        self.check_failure: ProbeResult | None = None
        """The last deep check's failure (proxy/checks.py), until a check passes."""
        self.restarts = 0
        self.last_exit: str | None = None
        self.maintenance: tuple[str, float, str] | None = None
        """Set by runtime/maintenance.py while a maintenance window lasts (readers see it in the view)."""
        self._epoch = 0
        """Bumped by every action, exit and command: a probe that started before one never counts
        as the check after it (it may have talked to the process that was just replaced)."""
        self._wake = asyncio.Event()
        self._urgent: ProbeKind | None = None
        self._probe_lock = asyncio.Lock()
        self._log = log.bind(server=server.name)
        self._actions = ActionSlot(
            server,
            bus=env.bus,
            executor=env.executor,
            counters=env.counters,
            log=self._log,
            process=lambda: self.process,
            delay=self.machine.last_delay,
            on_start=self._action_started,
            on_done=self._action_done,
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._fired_deadline: float | None = None
        self._void_runs = 0  # void timeouts in a row (the loop was late): the next deadlines are ``widened``
        self._void_since: float | None = None  # when void timeouts at the widest deadline began
        self.publish()

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
                self.observe(start_failure(self.server, exc))
        if self.server.container:
            self.request_probe(ProbeKind.CONTAINER)  # the engine's view first: it is cheap and certain
        self.publish()
        self._task = tg.create_task(self._run(), name=f"runner:{self.server.name}")

    async def stop(self) -> None:
        """Cancel the loop and any action, close the prober (no child left), stop the process."""
        self._stopping = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await self._actions.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
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
        self._epoch += 1
        info = getattr(self.process, "exit_info", None)  # spawn's ExitInfo: an OOM kill is told apart
        oom = bool(getattr(info, "oom", False))
        self.last_exit = info.text if info is not None else exit_text(code)
        self._log.warning("managed process exited", returncode=code, exit=self.last_exit)
        self.env.bus.publish(exit_event(self.server, code, self.last_exit, oom=oom))
        self._certain_failure(exit_result(self.server, self.process, self.last_exit, oom=oom))
        self.request_probe(ProbeKind.WARM)

    def _certain_failure(self, result: ProbeResult) -> None:
        """A dead process or container is a fact, not a blip: it counts as the whole threshold."""
        for _ in range(self.server.probe.failure_threshold):
            before = self.machine.state
            self.observe(result)
            if self.machine.state is not before or before not in (State.STARTING, State.HEALTHY, State.DEGRADED):
                break

    def check_result(self, failure: ProbeResult | None) -> None:
        """A deep check's verdict (proxy/checks.py): a failure stands until a check passes, so the
        probes that still pass cannot hide it; a new failure counts at once."""
        was, self.check_failure = self.check_failure, failure
        if failure is not None and was is None:
            self.observe(failure)

    def observe(self, result: ProbeResult) -> None:
        """Feed an observation made outside the probe loop (process exit, container event)."""
        if self.machine.state is State.PAUSED or self._stopping:
            return
        self.last_result = result
        self._dispatch(self.machine.on_probe(result, _clock()))

    def command(self, cmd: Command) -> list[Action]:
        self._epoch += 1
        actions = self.machine.on_command(cmd, _clock())
        self._dispatch(actions)
        self._wake.set()
        return actions

    async def probe_now(self, kind: ProbeKind = ProbeKind.WARM) -> ProbeResult:
        """An on-demand probe (API): waits for a running recovery action instead of racing it."""
        await self._actions.wait_idle()
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
        acting = self._actions.running or self.machine.busy()
        paused = self.machine.state is State.PAUSED
        if self._urgent is not None and not acting and not paused:
            kind, self._urgent = self._urgent, None
            await self._probe(self._kind_for(kind), planned=None)
            return
        held = self.machine.hold_until is not None and now < self.machine.hold_until  # rate limited
        taken = schedule.take(now)
        if taken is not None:
            if not acting and not paused and not held:
                await self._probe(self._kind_for(taken[0]), planned=taken[1])
            return  # a tick while acting or paused is skipped, not made up later
        wake_at = schedule.next_at()
        if deadline is not None:
            wake_at = min(wake_at, deadline)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(wake_at):
                await self._wake.wait()

    def _kind_for(self, kind: ProbeKind) -> ProbeKind:
        """While a fresh start (stdio spawn, or a fresh connection) fails, every check is a fresh
        start until one passes: only that clears it. Until the tools were listed once, a warm
        check lists them (status shows a count)."""
        if kind in (ProbeKind.WARM, ProbeKind.TOOLS) and self.machine.wants_cold():
            return ProbeKind.COLD
        if kind is ProbeKind.WARM and self.tool_count is None:
            return ProbeKind.TOOLS
        return kind

    async def _probe(self, kind: ProbeKind, planned: float | None) -> ProbeResult:
        async with self._probe_lock:
            epoch = self._epoch
            if planned is not None:
                self.env.drift_ms.append((_clock() - planned) * 1000.0)
            self.env.counters["probes"] += 1
            scale = widened(self._void_runs)
            seen = await observe(self.server, kind, self.prober.probe, self.env.docker, self.env.lag, scale)
        first_void = seen.void and self._void_runs == 0
        if seen.void and scale >= MAX_WIDEN and self._void_since is None:
            self._void_since = _clock()  # only the widest deadline's void checks are bounded in time
        void = seen.void and (self._void_since is None
                              or _clock() - self._void_since < void_grace(self.server.probe.interval))
        result = seen.result
        if seen.void and not void:
            result = counted_anyway(seen)
        if result.ok and self.process is not None:  # i7life: an answer from another process is not ours
            result = managed_answer(self.server.name, self.server.url, self.process, result,
                                    settled=self.machine.state in (State.HEALTHY, State.DEGRADED))
        if result.ok and self.check_failure is not None:  # a failing deep check outweighs a passing probe
            result = self.check_failure
        if result.ok and self.env.contracts is not None:  # tool contracts: alerts, a pinned one drifted
            result, notes = self.env.contracts.check(self.server, result)
            self._dispatch(notes)
        stale = epoch != self._epoch
        self.env.bus.publish(probe_event(self.server, kind, result, stale=stale, void=void))
        if stale:  # it started before an action, exit or command: it is not the check after it
            self._log.debug("stale probe result dropped", kind=str(kind), ok=result.ok)
            return result
        if void:  # the daemon could not ask in time: no verdict on the server; ask again now, given longer
            self.env.counters["reruns"] += 1
            self._void_runs += 1
            self.env.overload.tell(_clock(), seen.loop_late, self.env.counters["reruns"])
            (self._log.info if first_void else self._log.debug)(
                "timeout while the event loop was late; checking again with a longer deadline",
                loop_late_s=round(seen.loop_late, 3), message=result.message, widened=widened(self._void_runs))
            self.request_probe(kind)
            return result
        self._void_since, self._void_runs = None, 0
        previous, self.last_result = self.last_result, result
        self.last_probe_wall = time.time()
        if result.tool_count is not None:
            self.tool_count = result.tool_count
        if not result.ok:  # a repeat of the same failure is not news (a storm of 200 stays readable)
            repeat = previous is not None and previous.failure is result.failure and previous.message == result.message
            (self._log.debug if repeat else self._log.info)(
                "probe failed", kind=str(kind), failure=str(result.failure), message=result.message,
                latency_ms=round(result.latency_ms, 1),
            )
        if self.machine.state is not State.PAUSED and not self._stopping:
            if kind is ProbeKind.CONTAINER and result.failure is FailureClass.CRASHED:
                self._certain_failure(result)
            else:
                self._dispatch(self.machine.on_probe(result, _clock()))
        self.publish()
        return result

    # --- actions ---------------------------------------------------------------------------

    def _dispatch(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Transition):
                self._on_transition(action)
            elif isinstance(action, Notify):
                self._log.warning("notify", kind=action.kind, severity=action.severity, detail=action.detail)
                self.env.bus.publish(notify_event(self.server, action))
            elif isinstance(action, ProbeNow):
                self.request_probe(action.kind)
            elif not self._stopping:
                self._actions.submit(action)
        if actions:
            self.publish()

    def _on_transition(self, transition: Transition) -> None:
        self._log.info("state", old=str(transition.old), new=str(transition.new), reason=transition.reason)
        self.env.bus.publish(state_event(self.server, transition, self.machine.attempt, self.last_result))
        self.publish()  # readers of the transition see the new state
        self.env.on_transition(transition)

    def _action_started(self, action: RecoveryAction) -> None:
        self._epoch += 1  # probes already running talk to what the action replaces
        if not isinstance(action, EnterFallback):
            self.restarts += 1
        self.publish()

    def _action_done(self, action: RecoveryAction, ok: bool, detail: str) -> None:
        self._epoch += 1
        self._dispatch(self.machine.on_action_done(action, ok, _clock(), detail=detail))
        if not self._actions.running and self.process is not None and not self.process.running and not self.machine.busy():
            # it died while the action ran (its exit was ignored then): that is the verdict
            self._on_process_exit(getattr(self.process, "returncode", None))
        self.publish()
        self._wake.set()

    # --- views -----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.machine.state

    def reason(self) -> str:
        reason = self.machine.reason
        if not reason and self.last_result is not None and not self.last_result.ok:
            reason = self.last_result.message
        return reason

    def view(self) -> ServerView:
        """What readers see of this server now (``runtime/snapshot.py``)."""
        machine, process = self.machine, self.process
        running = process is not None and bool(getattr(process, "running", False))
        started = getattr(process, "started_at", None) if running else None
        return ServerView(
            name=self.server.name,
            critical=self.server.critical,
            transport=self.server.transport,
            kind=self.server.kind,
            fallback_allowed=self.server.fallback is not None and self.server.fallback.allowed,
            state=machine.state,
            since=machine.since,
            reason=self.reason(),
            attempt=machine.attempt,
            result=self.last_result,
            last_probe_wall=self.last_probe_wall,
            tool_count=self.tool_count,
            pid=getattr(process, "pid", None) if running else None,
            started_at=float(started) if isinstance(started, int | float) else None,
            restarts=self.restarts,
            last_exit=self.last_exit,
            next_attempt_at=machine.next_attempt_at(),
            maintenance=self.maintenance,
        )

    def publish(self) -> None:
        """Hand readers the current view; called after every change they can see."""
        if not self._stopping:
            self.env.on_view(self.view())
