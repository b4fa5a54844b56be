"""Property tests: thousands of random event sequences against the machine's invariants.

The machine is pure, so a simulated clock and a driver that plays the shell (executing actions,
firing timers) explore far more histories than real servers ever could, in milliseconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_supervisor.health.machine import ServerMachine
from mcp_supervisor.health.model import (
    Action,
    Command,
    EnterFallback,
    FailureClass,
    Notify,
    ProbeResult,
    RecoveryAction,
    Recreate,
    Restart,
    RestoreConfig,
    State,
    Transition,
)
from mcp_supervisor.health.policy import Policy, backoff_ceiling
from mcp_supervisor.health.transitions import ALLOWED_TRANSITIONS

REPAIRS = (Restart, RestoreConfig, Recreate)

policies = st.builds(
    Policy,
    failure_threshold=st.integers(1, 4),
    success_threshold=st.integers(1, 3),
    start_period=st.sampled_from([0.0, 5.0]),
    probe_interval=st.sampled_from([1.0, 5.0]),
    max_attempts=st.integers(1, 6),
    window=st.sampled_from([30.0, 600.0]),
    backoff_initial=st.sampled_from([0.5, 1.0]),
    backoff_max=st.sampled_from([4.0, 300.0]),
    stable_after=st.sampled_from([10.0, 60.0]),
    can_restart=st.booleans(),
    can_recreate=st.booleans(),
    can_restore=st.booleans(),
    has_fallback=st.booleans(),
    recovery_enabled=st.booleans(),
)

failures = st.sampled_from([f for f in FailureClass if not f.is_answer])
"""Failures that count; an answer (`rate_limited`, `drifted`) is none (tests/test_rate_limits.py)."""
# Weighted toward what drives recovery (transient failures, action outcomes, timers) so short
# histories reach the deep states; commands and human-only failures stay in the mix.
_EVENTS: list[tuple[str, object]] = (
    [("ok", None)] * 3
    + [("fail", FailureClass.TIMEOUT)] * 3
    + [("fail", FailureClass.CRASHED)] * 2
    + [("fail", FailureClass.REFUSED), ("fail", FailureClass.PROTOCOL)]
    + [("fail", FailureClass.AUTH), ("fail", FailureClass.CONFIG), ("degraded", None)]
    + [("fail", FailureClass.RATE_LIMITED), ("fail", FailureClass.DRIFTED)]  # answers, not failures
    + [("done", True)] * 2
    + [("done", False)] * 2
    + [("timer", None)] * 3
    + [("cmd", c) for c in Command]
)
events = st.sampled_from(_EVENTS)


@dataclass
class Shell:
    """Plays the imperative shell: tracks the in-flight action, checks every output."""

    policy: Policy
    machine: ServerMachine
    now: float = 0.0
    pending: RecoveryAction | None = None
    repair_times: list[float] = field(default_factory=list)
    incident_alerts: int = 0
    log: list[Action] = field(default_factory=list)

    def feed(self, actions: list[Action], *, probe: ProbeResult | None = None, command: bool = False) -> None:
        state = None
        for action in actions:
            self.log.append(action)
            if isinstance(action, Transition):
                assert (action.old, action.new) in ALLOWED_TRANSITIONS, action
                if state is not None:
                    assert action.old is state, "a transition was skipped"
                state = action.new
                if action.new in (State.PAUSED, State.STARTING):
                    self.incident_alerts = 0
            elif isinstance(action, RecoveryAction):
                assert self.pending is None, f"second action {action} while {self.pending} runs"
                self.pending = action
                if isinstance(action, REPAIRS) and not command:
                    self.repair_times.append(self.now)
                if probe is not None and probe.failure in (FailureClass.AUTH, FailureClass.CONFIG):
                    assert not isinstance(action, REPAIRS), "a restart cannot fix auth or config"
                if probe is not None and probe.failure is not None and probe.failure.is_answer:
                    assert not isinstance(action, REPAIRS), "a 429 or a drifted contract never restarts"
            elif isinstance(action, Notify) and action.kind in ("down", "needs_human", "fallback"):
                if not command and "emergency" not in action.detail:  # operator-made, not an incident
                    self.incident_alerts += 1
                    assert self.incident_alerts <= 1, "more than one alert in one incident"
            elif isinstance(action, Notify) and action.kind == "recovered":
                assert self.incident_alerts == 1 or command, "a resolution without an alert"
                self.incident_alerts = 0
        if state is not None:
            assert self.machine.state is state
        assert self.machine.busy() == (self.pending is not None) or self.machine.state is State.PAUSED
        self.check_eventually_retries()

    def check_eventually_retries(self) -> None:
        """In every state but paused, a restartable server that is failing has its next attempt
        scheduled (an action running, or a timer that starts one): healing never just stops."""
        machine = self.machine
        if machine.state in (State.PAUSED, State.STARTING, State.HEALTHY, State.DEGRADED, State.RATE_LIMITED,
                             State.DRIFTED):
            return
        if machine.restartable_failure():
            assert machine.retry_pending(), f"{machine.state} with no next attempt: {machine.snapshot()}"
            deadline = machine.next_deadline()
            bound = self.now + self.policy.backoff_max + self.policy.verify_window + self.policy.probe_interval
            assert machine.busy() or (deadline is not None and deadline <= bound)

    def step(self, event: tuple[str, object], dt: float) -> None:
        self.now += dt
        kind, arg = event
        if kind == "ok":
            self.feed(self.machine.on_probe(ProbeResult(ok=True), self.now))
        elif kind == "degraded":
            self.feed(self.machine.on_probe(ProbeResult(ok=True, degraded="missing tool x"), self.now))
        elif kind == "fail":
            assert isinstance(arg, FailureClass)
            result = ProbeResult(ok=False, failure=arg, message="boom")
            self.feed(self.machine.on_probe(result, self.now), probe=result)
        elif kind == "done":
            if self.pending is not None:
                action, self.pending = self.pending, None
                self.feed(self.machine.on_action_done(action, bool(arg), self.now))
        elif kind == "timer":
            deadline = self.machine.next_deadline()
            if deadline is not None:
                self.now = max(self.now, deadline)
                self.feed(self.machine.on_timer(self.now))
        else:
            assert isinstance(arg, Command)
            if arg is Command.PAUSE:
                self.pending = None  # the shell cancels what runs; its outcome is stale
            self.feed(self.machine.on_command(arg, self.now), command=True)


@settings(max_examples=600, deadline=None)
@given(policies, st.lists(st.tuples(events, st.sampled_from([0.0, 0.1, 1.0, 7.0, 120.0])), max_size=60))
def test_random_histories_keep_every_invariant(policy: Policy, history: list[tuple[tuple[str, object], float]]) -> None:
    shell = Shell(policy, ServerMachine(policy, 0.0, random.Random(0)))
    for event, dt in history:
        shell.step(event, dt)
        # restarts never stop, but they slow down: past max_attempts in a window (a person has
        # been alerted) they come at most every backoff_max/2 (equal jitter under the cap)
        recent = [t for t in shell.repair_times if t > shell.now - policy.window]
        budgets = policy.window / policy.stable_after + 1  # stable_after of health renews the budget
        assert len(recent) <= budgets * policy.max_attempts + policy.window / (policy.backoff_max / 2) + 1


@settings(max_examples=200, deadline=None)
@given(policies, st.integers(0, 3), failures.filter(lambda f: not f.needs_human))
def test_threshold_failures_always_fail_a_running_server(policy: Policy, extra: int, failure: FailureClass) -> None:
    machine = ServerMachine(policy, 0.0)
    machine.on_probe(ProbeResult(ok=True), 0.0)
    now = policy.start_period + 1.0
    for i in range(policy.failure_threshold - 1):
        machine.on_probe(ProbeResult(ok=False, failure=failure), now + i)
    assert machine.state is State.HEALTHY
    machine.on_probe(ProbeResult(ok=False, failure=failure), now + policy.failure_threshold)
    assert machine.state not in (State.HEALTHY, State.DEGRADED, State.STARTING)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5))
def test_a_failed_server_needs_success_threshold_successes(success_threshold: int, failure_threshold: int) -> None:
    policy = Policy(failure_threshold=failure_threshold, success_threshold=success_threshold)
    machine = ServerMachine(policy, 0.0)
    machine.on_probe(ProbeResult(ok=True), 0.0)
    for i in range(failure_threshold):
        machine.on_probe(ProbeResult(ok=False, failure=FailureClass.TIMEOUT), 1.0 + i)
    assert machine.state is State.FAILED
    for i in range(success_threshold - 1):
        machine.on_probe(ProbeResult(ok=True), 10.0 + i)
        assert machine.state is State.FAILED
    machine.on_probe(ProbeResult(ok=True), 20.0)
    assert machine.state is State.HEALTHY


@settings(max_examples=100, deadline=None)
@given(policies.filter(lambda p: p.can_restart and p.recovery_enabled), st.integers(0, 2**32 - 1))
def test_crash_loop_delays_stay_under_growing_capped_ceilings(policy: Policy, seed: int) -> None:
    machine = ServerMachine(policy, 0.0, random.Random(seed))
    machine.on_probe(ProbeResult(ok=True), 0.0)
    now = policy.start_period + 1.0
    crash = ProbeResult(ok=False, failure=FailureClass.CRASHED, message="exit 1")
    actions: list[Action] = []
    for _ in range(policy.failure_threshold):
        actions = machine.on_probe(crash, now)
    repair_times: list[float] = []
    for _ in range(50):
        action = next((a for a in actions if isinstance(a, RecoveryAction)), None)
        if action is None or isinstance(action, EnterFallback):
            break
        repair_times.append(now)
        assert sum(1 for t in repair_times if t > now - policy.window) <= policy.max_attempts
        machine.on_action_done(action, True, now)
        actions = machine.on_probe(crash, now)
        if machine.state is not State.BACKOFF:
            break
        deadline = machine.next_deadline()
        assert deadline is not None
        assert deadline - now <= backoff_ceiling(machine.attempt, policy) <= policy.backoff_max
        now = deadline
        actions = machine.on_timer(now)
    assert machine.state in (State.RECOVERING, State.NEEDS_HUMAN, State.FALLBACK, State.BACKOFF)


_CRASHY: list[tuple[str, object]] = (
    [("fail", FailureClass.CRASHED)] * 4
    + [("fail", FailureClass.TIMEOUT)] * 2
    + [("ok", None)] * 2
    + [("fail", FailureClass.AUTH), ("fail", FailureClass.CONFIG)]
    + [("done", True)] * 3
    + [("done", False)] * 2
    + [("timer", None)] * 4
    + [("cmd", Command.RECOVER), ("cmd", Command.EMERGENCY), ("cmd", Command.RESUME)]
)


@settings(max_examples=400, deadline=None)
@given(
    policies.filter(lambda p: p.can_restart and p.recovery_enabled),
    st.lists(st.tuples(st.sampled_from(_CRASHY), st.sampled_from([0.0, 0.5, 5.0, 400.0])), max_size=80),
)
def test_a_failing_restartable_server_always_has_a_next_attempt(
    policy: Policy, history: list[tuple[tuple[str, object], float]]
) -> None:
    """The "eventually retries" invariant: in every state but paused (and an operator's forced
    fallback), a restartable server whose last failure a restart can fix has an action running
    or a timer set that starts the next one, no later than the backoff cap. Checked after every
    event by ``Shell.feed``; here the histories are crash loops that outlast every budget."""
    shell = Shell(policy, ServerMachine(policy, 0.0, random.Random(1)))
    for event, dt in history:
        shell.step(event, dt)
    shell.check_eventually_retries()
