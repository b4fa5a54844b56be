"""The per-server health machine: a pure, sans-I/O state machine in the style of h11.

Inputs are probe results, outcomes of the actions it asked for, timer expiries and operator
commands, each with ``now`` (monotonic seconds) passed in. Outputs are ``Action`` values the shell
executes. Nothing here reads a clock, sleeps, logs or does I/O, so a server's whole behaviour can be
driven by tables and by hypothesis with a simulated clock. The rules (lifecycle, thresholds, flapping, alert
levels): ``health/__init__.py`` and docs/architecture.md. Its parts: the table of allowed moves
(``transitions.py``), the incident and recovery-budget record (``incident.py``), the rate-limit
wait (``ratelimit.py``), and here the logic: which move, which actions, for each input.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mcp_supervisor.health.incident import Attempts, Incident, alert_text, rung_name
from mcp_supervisor.health.model import (
    Action,
    Command,
    EnterFallback,
    Notify,
    ProbeKind,
    ProbeNow,
    ProbeResult,
    RecoveryAction,
    State,
    Transition,
    headline,
)
from mcp_supervisor.health.policy import Policy
from mcp_supervisor.health.ratelimit import on_answer
from mcp_supervisor.health.transitions import ALERTED, RUNNING, UP, move


@dataclass
class _Timer:
    at: float
    purpose: str  # "backoff" (next attempt) | "verify" (look again after an action) | "stable"


class ServerMachine:
    """One server's health: feed it inputs with ``now``; perform the actions it returns, in order."""

    def __init__(self, policy: Policy, now: float, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.rng = rng or random.Random()
        self.state = State.STARTING
        self.since = now
        self.reason = "supervisor started"
        self.attempts = Attempts()
        self.incident = Incident()
        self.last_result: ProbeResult | None = None
        self.last_failure: ProbeResult | None = None
        self._started_at = now
        self._failures = 0
        self._successes = 0
        self._cold_failures = 0
        self._in_flight: RecoveryAction | None = None
        self._verifying_since: float | None = None
        self._timer: _Timer | None = None
        self._forced_fallback = False
        self._emergency_pending = False
        self.hold_until: float | None = None  # rate limited: no planned probe before this

    @property
    def attempt(self) -> int:
        """Recovery attempts since the server was last stable."""
        return self.attempts.count

    def busy(self) -> bool:
        """A recovery action is in flight; the shell must not start another for this server."""
        return self._in_flight is not None

    def next_deadline(self) -> float | None:
        return self._timer.at if self._timer is not None else None

    def next_attempt_at(self) -> float | None:
        """When the next recovery attempt is due while backing off (None otherwise)."""
        return self._timer.at if self._timer is not None and self._timer.purpose == "backoff" else None

    def last_delay(self) -> float | None:
        """The backoff delay that preceded the attempt now starting (None for an immediate one)."""
        return self.attempts.last_delay

    def wants_cold(self) -> bool:
        """A fresh start failed and no fresh start has passed since: check cold on every tick."""
        return self._cold_failures > 0 and self.state is not State.PAUSED

    def retry_pending(self) -> bool:
        """Something will happen without any outside input: an action runs or a retry timer is set."""
        return self.busy() or (self._timer is not None and self._timer.purpose in ("backoff", "verify"))

    def restartable_failure(self) -> bool:
        """The server is failing in a way a restart may fix, and the policy allows restarts."""
        failure = self.last_failure.failure if self.last_failure is not None else None
        return bool(self.policy.repair_rungs) and not self._forced_fallback and failure is not None and (
            not failure.needs_human
        )

    def snapshot(self) -> dict[str, object]:
        result = self.last_result
        return {
            "state": str(self.state),
            "since": self.since,
            "reason": self.reason,
            **self.attempts.snapshot(),
            "failure_class": str(result.failure) if result and result.failure else None,
            "next_deadline": self.next_deadline(),
            "next_attempt_at": self.next_attempt_at(),
            "timer": self._timer.purpose if self._timer else None,
            "in_flight": type(self._in_flight).__name__ if self._in_flight else None,
            "cold_failures": self._cold_failures,
            "forced_fallback": self._forced_fallback,
        }

    def on_probe(self, result: ProbeResult, now: float) -> list[Action]:
        if self.state is State.PAUSED:
            return []
        self.last_result = result
        if result.failure is not None and result.failure.is_answer:  # 429, a drifted contract
            return on_answer(self, result, now)
        if result.kind is ProbeKind.COLD:
            self._cold_failures = 0 if result.ok else self._cold_failures + 1
        if result.ok:
            if self._cold_failures:
                return []  # a warm copy answering says nothing about whether the server can start
            self._failures = 0
            self._successes += 1
            return self._on_success(result, now)
        self._successes = 0
        self.last_failure = result
        assert result.failure is not None  # ProbeResult guarantees it for ok=False
        booting = self.state is State.STARTING and now - self._started_at < self.policy.start_period
        if booting and not (result.failure.needs_human or result.failure.is_exit):
            return []  # still starting: failures do not count yet (but a 401 or an exit is no boot)
        self._failures += 1
        return self._on_failure(result, now)

    def on_action_done(self, action: Action, ok: bool, now: float, detail: str = "") -> list[Action]:
        if action != self._in_flight:
            return []  # stale outcome (paused or superseded meanwhile)
        self._in_flight = None
        if self._emergency_pending:
            self._emergency_pending = False
            return self._emergency(now)
        if isinstance(action, EnterFallback):
            if ok:
                actions = self._enter_fallback(now, detail or "direct API answers")
            else:
                why = f"fallback check failed: {detail}" if detail else "fallback check failed"
                actions = self._needs_human(now, f"{self.incident.alert_text}; {why}" if self.incident.alert_text else why)
            if self.restartable_failure():
                actions += self._schedule(now, self.reason)
            return actions
        if not ok:
            return self._attempt_failed(now, f"{rung_name(action)} failed: {detail}" if detail else "action failed")
        self._verifying_since = now
        self._failures = 0
        self._successes = 0
        self._timer = _Timer(now + self.policy.verify_window, "verify")  # a watchdog if no probe comes
        return [ProbeNow(self._probe_kind())]

    def on_timer(self, now: float) -> list[Action]:
        timer = self._timer
        if timer is None or now < timer.at:
            return []
        self._timer = None
        if timer.purpose == "backoff":
            if self.state in (State.BACKOFF, *ALERTED) and not self.busy() and not self._forced_fallback:
                return self._start_attempt(now, "after the backoff delay")
            return []
        if timer.purpose == "verify" and self._verifying_since is not None and not self.busy():
            if self._successes == 0 and now - self._verifying_since >= self.policy.verify_window:
                return self._attempt_failed(
                    now, f"no answer within {self.policy.verify_window:g}s of the {rung_name(self.attempts.last_rung(self.policy.repair_rungs))}"
                )
            self._timer = _Timer(now + max(self.policy.verify_window, self.policy.probe_interval), "verify")
            return [ProbeNow(self._probe_kind())]
        if timer.purpose == "stable" and self.state in UP:
            return self._stable(now)
        return []

    def on_command(self, cmd: Command, now: float) -> list[Action]:
        if cmd is Command.PAUSE:
            if self.state is State.PAUSED:
                return []
            self._reset_incident_tracking()
            return [self._move(State.PAUSED, now, "paused by operator")]
        if cmd is Command.RESUME:
            if not (self.state is State.PAUSED or (self.state is State.FALLBACK and self._forced_fallback)):
                return []
            self._reset_incident_tracking()
            self._started_at = now
            self._failures = self._successes = self._cold_failures = 0
            left = [self._move(State.PAUSED, now, "leaving forced fallback")] if self.state is State.FALLBACK else []
            return [*left, self._move(State.STARTING, now, "resumed by operator"), ProbeNow(ProbeKind.WARM)]
        if self.state is State.PAUSED:
            return []  # recover/emergency on a paused server: resume it first
        if cmd is Command.RECOVER:
            if self.busy():
                return []
            self._forced_fallback = False
            self.attempts.times.clear()
            self._stop_waiting()
            if not self.policy.repair_rungs:
                if self.policy.fallback_enabled:
                    return self._begin(EnterFallback(self.attempt), now, "recover requested by operator", operator=True)
                return [ProbeNow(ProbeKind.COLD)]
            return self._start_attempt(now, "requested by operator", operator=True)
        # EMERGENCY
        if self.state is State.FALLBACK:
            return []
        self._stop_waiting()
        self._forced_fallback = True
        if self.busy():
            self._emergency_pending = True  # one action at a time: fallback right after this one
            return []
        return self._emergency(now)

    def _on_success(self, result: ProbeResult, now: float) -> list[Action]:
        up = State.DEGRADED if result.degraded else State.HEALTHY
        why = f"degraded: {result.degraded}" if result.degraded else "probe succeeded"
        state = self.state
        if state in (State.STARTING, State.DRIFTED):  # drifted: the contract was accepted
            return [self._move(up, now, why)]
        if state in UP:
            return [self._move(up, now, why)] if state is not up else []
        if state is State.FALLBACK and self._forced_fallback:
            return []  # the operator chose emergency mode; only resume/recover leaves it
        if self.busy():
            return []  # the action's outcome decides; a probe racing it proves nothing
        if self._successes < self.policy.success_threshold:
            if self._verifying_since is not None:
                self._timer = _Timer(now + self.policy.probe_interval, "verify")
            return []
        return self._recovered(up, now, why)

    def _recovered(self, up: State, now: float, why: str) -> list[Action]:
        actions: list[Action] = [self._move(up, now, why)]
        worked_for_it = self.attempt > 0 or self.attempts.step > 0 or self.attempts.flapping
        actions += self.incident.recovered(now, self.attempt, self.attempts.flapping)
        self._verifying_since = None
        stay = worked_for_it or self.incident.resolution_pending
        self._timer = _Timer(now + self.policy.stable_after, "stable") if stay else None
        return actions

    def _stable(self, now: float) -> list[Action]:
        """``stable_after`` of continuous health: the backoff and the attempt count start over."""
        attempts = self.attempt
        self.attempts.reset()
        return self.incident.stable(now, attempts, self.policy.stable_after)

    def _on_failure(self, result: ProbeResult, now: float) -> list[Action]:
        failure = result.failure
        assert failure is not None  # ProbeResult guarantees it for ok=False
        state = self.state
        if state in RUNNING:
            if not failure.needs_human and self._failures < self.policy.failure_threshold:
                return []
            return self._fail(now, result)
        if state is State.FALLBACK and self._forced_fallback:
            return []
        if self.busy():
            return []  # the action's outcome decides
        if failure.needs_human:
            if state in ALERTED:
                self._stop_waiting()  # a restart cannot fix this: stop restarting, keep probing
                return []
            return self._needs_human(now, headline(result), result)
        if self._verifying_since is not None:
            if failure.is_exit or now - self._verifying_since >= self.policy.verify_window:
                return self._attempt_failed(now, headline(result))
            self._timer = _Timer(now + self.policy.verify_retry, "verify")
            return []
        if self._timer is not None and self._timer.purpose == "backoff":
            return []  # the next attempt is already due
        if self.restartable_failure():
            return self._schedule(now, headline(result))
        return []

    def _fail(self, now: float, result: ProbeResult) -> list[Action]:
        flapping = self._timer is not None and self._timer.purpose == "stable"
        self.incident.open(now)
        self._stop_waiting()
        what = headline(result)
        actions: list[Action] = [self._move(State.FAILED, now, what)]
        assert result.failure is not None
        if result.failure.needs_human:
            return actions + self._needs_human(now, what, result)
        if self.policy.repair_rungs or self.policy.fallback_enabled:
            if flapping:  # down again within stable_after of the last recovery
                self.attempts.flapping = True
                self.attempts.step += 1
            return actions + self._schedule(now, f"after {what}")
        return actions + self.incident.notify_once("down", f"{what} (no recovery action configured)")

    def _attempt_failed(self, now: float, why: str) -> list[Action]:
        self._verifying_since = None
        self.attempts.step += 1
        return self._schedule(now, why)

    def _schedule(self, now: float, why: str) -> list[Action]:
        """The next attempt: now, or after a growing delay; alert once when the budget is spent."""
        rungs = self.policy.repair_rungs
        recent = self.attempts.recent(now, self.policy.window)
        actions: list[Action] = []
        if (not rungs or recent >= self.policy.max_attempts) and self.state not in ALERTED:
            actions += self._alert(now, why, recent)
            if self.busy() or not rungs:
                return actions  # a fallback check runs first; restarts are scheduled after it
        if not rungs:
            return actions
        wait = self.attempts.backoff(self.policy, self.rng, why, capped=self.incident.exhausted)
        if wait is None:
            return actions + self._start_attempt(now, why)
        delay, plan = wait
        self._timer = _Timer(now + delay, "backoff")
        if self.state in (State.FAILED, State.RECOVERING):
            actions.append(self._move(State.BACKOFF, now, plan))
        elif self.state in ALERTED:
            self.reason = f"{self.incident.alert_text or why}; next restart in {delay:.1f}s"
        else:
            self.reason = plan
        return actions

    def _alert(self, now: float, why: str, recent: int) -> list[Action]:
        """Tell a person once: what was tried, what the server said last, what happens next."""
        text = alert_text(self.policy, why, recent)
        self.incident.keep_alert(text)
        self.incident.exhausted = bool(self.policy.repair_rungs)
        if self.policy.fallback_enabled:
            return self._begin(EnterFallback(self.attempt), now, f"{text}; checking the fallback")
        return self._needs_human(now, text, keep_schedule=True)

    def _start_attempt(self, now: float, why: str, *, operator: bool = False) -> list[Action]:
        rung, action = self.attempts.start(now, self.policy.window, self.policy.repair_rungs)
        return self._begin(action, now, f"{rung} (attempt {self.attempt}) {why}", operator=operator)

    def _begin(self, action: RecoveryAction, now: float, why: str, *, operator: bool = False) -> list[Action]:
        self._in_flight = action
        self._stop_waiting()
        actions: list[Action] = []
        if self.state is State.RECOVERING:
            self.reason = why
        elif self.state in ALERTED and not operator:
            self.reason = f"{self.incident.alert_text}; now: {why}" if self.incident.alert_text else why
        else:
            actions.append(self._move(State.RECOVERING, now, why))
        actions.append(action)
        return actions

    def _emergency(self, now: float) -> list[Action]:
        if self.policy.has_fallback:
            return self._begin(EnterFallback(self.attempt), now, "emergency mode requested by operator", operator=True)
        why = "emergency mode forced by operator (no fallback URL configured: use the service's API directly)"
        return [self._move(State.FALLBACK, now, why), Notify("fallback", why, "critical")]

    def _enter_fallback(self, now: float, detail: str) -> list[Action]:
        text, notes = self.incident.fallback(detail, forced=self._forced_fallback)
        return [self._move(State.FALLBACK, now, text), *notes]

    def _needs_human(
        self, now: float, detail: str, result: ProbeResult | None = None, *, keep_schedule: bool = False
    ) -> list[Action]:
        self._in_flight = None
        if not keep_schedule:
            self._stop_waiting()
        text, notes = self.incident.needs_human(now, detail, result.hint if result is not None else None)
        actions = [self._move(State.FAILED, now, detail)] if self.state in RUNNING else []
        if self.state is State.NEEDS_HUMAN:
            self.reason = text
        else:
            actions.append(self._move(State.NEEDS_HUMAN, now, text))
        return actions + notes

    def _reset_incident_tracking(self) -> None:
        self.incident.close()
        self._in_flight = None
        self._stop_waiting()
        self._forced_fallback = False
        self._emergency_pending = False
        self.attempts.flapping = False
        self._cold_failures = 0

    def _stop_waiting(self) -> None:
        """No timer set and no attempt under verification."""
        self._timer = None
        self._verifying_since = None

    def _probe_kind(self) -> ProbeKind:
        return ProbeKind.COLD if self._cold_failures else ProbeKind.WARM

    def _move(self, new: State, now: float, reason: str) -> Transition:
        transition = move(self.state, new, reason)  # raises IllegalTransition if the table forbids it
        self.state = new
        self.since = now
        self.reason = reason
        return transition
