"""The per-server health machine: a pure, sans-I/O state machine in the style of h11.

Inputs are probe results, outcomes of the actions it asked for, timer expiries and operator
commands, each with ``now`` (monotonic seconds) passed in. Outputs are ``Action`` values the shell
executes. Nothing here reads a clock, sleeps, logs or does I/O, so a server's whole behaviour can be
driven by tables and by hypothesis with a simulated clock.

The lifecycle (see docs/architecture.md for the full table):

    starting -> healthy <-> degraded -> failed -> recovering -> healthy
                                            |          |  ^
                                            |          v  |
                                            |        backoff     (full-jitter exponential delays)
                                            v          |
                                       needs_human <---+--> fallback   (attempts exhausted)

* One failed probe is not an outage: ``failure_threshold`` consecutive failures make ``failed``;
  failures during ``start_period`` do not count (Kubernetes startup probes).
* ``auth`` and ``config`` failures go to ``needs_human`` at once: a restart cannot renew a token.
* Recovery walks the ladder one rung per failed attempt (restart -> restore_config -> recreate),
  repeating the last repairing rung, with backoff between attempts; after ``max_attempts`` within
  ``window`` it enters fallback (if configured) or ``needs_human``. One alert per incident, one
  when it resolves (Alertmanager-style grouping, no alert storms).
* The backoff resets only after ``stable_after`` seconds of continuous health.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

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
    Recreate,
    Restart,
    RestoreConfig,
    State,
    Transition,
)
from mcp_supervisor.health.policy import Policy, backoff_ceiling, backoff_delay

_CERTAIN_AT_START = frozenset({FailureClass.CRASHED, FailureClass.CONFIG, FailureClass.AUTH})
"""Failures that count even inside ``start_period``: waiting longer cannot change them."""

# Every transition the machine may make; the property tests hold it to this table.
ALLOWED_TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    {
        (State.STARTING, State.HEALTHY),
        (State.STARTING, State.DEGRADED),
        (State.STARTING, State.FAILED),
        (State.HEALTHY, State.DEGRADED),
        (State.DEGRADED, State.HEALTHY),
        (State.HEALTHY, State.FAILED),
        (State.DEGRADED, State.FAILED),
        (State.FAILED, State.RECOVERING),
        (State.FAILED, State.NEEDS_HUMAN),
        (State.FAILED, State.HEALTHY),
        (State.FAILED, State.DEGRADED),
        (State.RECOVERING, State.HEALTHY),
        (State.RECOVERING, State.DEGRADED),
        (State.RECOVERING, State.BACKOFF),
        (State.RECOVERING, State.FALLBACK),
        (State.RECOVERING, State.NEEDS_HUMAN),
        (State.BACKOFF, State.RECOVERING),
        (State.BACKOFF, State.HEALTHY),
        (State.BACKOFF, State.DEGRADED),
        (State.BACKOFF, State.NEEDS_HUMAN),
        (State.FALLBACK, State.HEALTHY),
        (State.FALLBACK, State.DEGRADED),
        (State.NEEDS_HUMAN, State.HEALTHY),
        (State.NEEDS_HUMAN, State.DEGRADED),
    }
    # operator commands: pause from anywhere, resume to starting, recover / emergency on demand
    | {(s, State.PAUSED) for s in State if s is not State.PAUSED}
    | {(State.PAUSED, State.STARTING)}
    | {(s, State.RECOVERING) for s in State if s not in (State.PAUSED, State.RECOVERING)}
    | {(s, State.FALLBACK) for s in State if s not in (State.PAUSED, State.FALLBACK)}
)

_RUNG_ACTIONS: dict[str, type[Restart] | type[RestoreConfig] | type[Recreate]] = {
    "restart": Restart,
    "restore_config": RestoreConfig,
    "recreate": Recreate,
}
_UP = (State.HEALTHY, State.DEGRADED)


@dataclass
class _Timer:
    at: float
    purpose: str  # "backoff" | "verify" | "stable"


class ServerMachine:
    def __init__(self, policy: Policy, now: float, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.rng = rng or random.Random()
        self.state = State.STARTING
        self.since = now
        self.reason = "supervisor started"
        self.attempt = 0
        self.last_result: ProbeResult | None = None
        self._started_at = now
        self._failures = 0
        self._successes = 0
        self._attempt_times: deque[float] = deque()
        self._in_flight: RecoveryAction | None = None
        self._verifying_since: float | None = None
        self._timer: _Timer | None = None
        self._incident_since: float | None = None
        self._incident_notified = False
        self._forced_fallback = False
        self._emergency_pending = False
        self._last_delay: float | None = None

    # --- queries ---------------------------------------------------------------------------

    def busy(self) -> bool:
        """A recovery action is in flight; the shell must not start another for this server."""
        return self._in_flight is not None

    def next_deadline(self) -> float | None:
        return self._timer.at if self._timer is not None else None

    def snapshot(self) -> dict[str, object]:
        result = self.last_result
        return {
            "state": str(self.state),
            "since": self.since,
            "reason": self.reason,
            "attempt": self.attempt,
            "attempts_in_window": len(self._attempt_times),
            "failure_class": str(result.failure) if result and result.failure else None,
            "next_deadline": self.next_deadline(),
            "timer": self._timer.purpose if self._timer else None,
            "in_flight": type(self._in_flight).__name__ if self._in_flight else None,
            "delay": self._last_delay,
            "forced_fallback": self._forced_fallback,
        }

    # --- inputs ----------------------------------------------------------------------------

    def on_probe(self, result: ProbeResult, now: float) -> list[Action]:
        if self.state is State.PAUSED:
            return []
        self.last_result = result
        if result.ok:
            self._failures = 0
            self._successes += 1
            return self._on_success(result, now)
        self._successes = 0
        if (
            self.state is State.STARTING
            and now - self._started_at < self.policy.start_period
            and result.failure not in _CERTAIN_AT_START
        ):
            return []  # still starting: failures do not count yet (an exit or a 401 is no blip)
        self._failures += 1
        return self._on_failure(result, now)

    def on_action_done(self, action: Action, ok: bool, now: float, detail: str = "") -> list[Action]:
        if action != self._in_flight:
            return []  # stale outcome (paused or superseded meanwhile)
        self._in_flight = None
        if self.state is not State.RECOVERING:
            return []
        if self._emergency_pending:
            self._emergency_pending = False
            return self._emergency(now)
        if isinstance(action, EnterFallback):
            if ok:
                return self._enter_fallback(now, detail or "direct API answers")
            return self._needs_human(now, f"fallback check failed: {detail}" if detail else "fallback check failed")
        if not ok:
            return self._attempt_failed(now, f"{_rung_name(action)} failed: {detail}" if detail else "action failed")
        self._verifying_since = now
        self._failures = 0
        self._successes = 0
        return [ProbeNow(ProbeKind.WARM)]

    def on_timer(self, now: float) -> list[Action]:
        timer = self._timer
        if timer is None or now < timer.at:
            return []
        self._timer = None
        if timer.purpose == "backoff" and self.state is State.BACKOFF:
            return self._start_attempt(now, "backoff elapsed")
        if timer.purpose == "verify" and self.state is State.RECOVERING and not self.busy():
            return [ProbeNow(ProbeKind.WARM)]
        if timer.purpose == "stable" and self.state in _UP:
            self.attempt = 0
            self._attempt_times.clear()
            self._last_delay = None
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
            self._failures = self._successes = 0
            actions: list[Action] = []
            if self.state is State.FALLBACK:
                actions.append(self._move(State.PAUSED, now, "leaving forced fallback"))
            actions.append(self._move(State.STARTING, now, "resumed by operator"))
            actions.append(ProbeNow(ProbeKind.WARM))
            return actions
        if self.state is State.PAUSED:
            return []  # recover/emergency on a paused server: resume it first
        if cmd is Command.RECOVER:
            if self.busy():
                return []
            self._forced_fallback = False
            self._attempt_times.clear()
            self._timer = None
            if not self.policy.repair_rungs and not self.policy.fallback_enabled:
                return [ProbeNow(ProbeKind.COLD)]
            return self._start_attempt(now, "recover requested by operator")
        # EMERGENCY
        if self.state is State.FALLBACK:
            return []
        self._timer = None
        self._forced_fallback = True
        if self.busy():
            self._emergency_pending = True  # one action at a time: fallback right after this one
            return []
        return self._emergency(now)

    # --- internals -------------------------------------------------------------------------

    def _emergency(self, now: float) -> list[Action]:
        if self.policy.has_fallback:
            return self._begin(EnterFallback(self.attempt), now, "emergency mode requested by operator")
        why = "emergency mode forced by operator (no fallback URL configured: use the service's API directly)"
        return [self._move(State.FALLBACK, now, why), Notify("fallback", why, "critical")]

    def _on_success(self, result: ProbeResult, now: float) -> list[Action]:
        up = State.DEGRADED if result.degraded else State.HEALTHY
        why = f"degraded: {result.degraded}" if result.degraded else "probe succeeded"
        state = self.state
        if state is State.STARTING:
            return [self._move(up, now, why)]
        if state in _UP:
            return [self._move(up, now, why)] if state is not up else []
        if state is State.FALLBACK and self._forced_fallback:
            return []  # the operator chose emergency mode; only resume/recover leaves it
        if state is State.RECOVERING and self.busy():
            return []
        if self._successes < self.policy.success_threshold:
            return []
        return self._recovered(up, now, why)

    def _recovered(self, up: State, now: float, why: str) -> list[Action]:
        downtime = now - self._incident_since if self._incident_since is not None else 0.0
        attempts = self.attempt
        actions: list[Action] = [self._move(up, now, why)]
        if self._incident_notified:
            actions.append(Notify("recovered", f"back after {downtime:.1f}s ({attempts} recovery attempt(s))", "info"))
        self._incident_since = None
        self._incident_notified = False
        self._verifying_since = None
        self._timer = _Timer(now + self.policy.stable_after, "stable") if attempts else None
        return actions

    def _on_failure(self, result: ProbeResult, now: float) -> list[Action]:
        failure = result.failure
        assert failure is not None  # ProbeResult guarantees it for ok=False
        state = self.state
        human = failure.needs_human
        if state in (State.NEEDS_HUMAN, State.FALLBACK):
            return []  # already escalated; keep probing for the way back
        if state is State.BACKOFF:
            return self._needs_human(now, result.message, result) if human else []
        if state is State.RECOVERING:
            if self.busy():
                return []
            if human:
                return self._needs_human(now, result.message, result)
            since = self._verifying_since if self._verifying_since is not None else now
            if failure is FailureClass.CRASHED or now - since >= self.policy.verify_window:
                return self._attempt_failed(now, result.message or str(failure))
            self._timer = _Timer(now + self.policy.verify_retry, "verify")
            return []
        if state is State.FAILED:
            return self._needs_human(now, result.message, result) if human else []
        # starting, healthy, degraded
        if not human and self._failures < self.policy.failure_threshold:
            return []
        return self._fail(now, result)

    def _fail(self, now: float, result: ProbeResult) -> list[Action]:
        self._incident_since = now
        self._timer = None
        actions: list[Action] = [self._move(State.FAILED, now, f"{result.failure}: {result.message}".rstrip(": "))]
        assert result.failure is not None
        if result.failure.needs_human:
            return actions + self._needs_human(now, result.message, result)
        if self.policy.repair_rungs or self.policy.fallback_enabled:
            return actions + self._start_attempt(now, "probe failures reached the threshold")
        return actions + self._notify_once(
            "down", f"{result.failure}: {result.message} (no recovery action configured)"
        )

    def _start_attempt(self, now: float, why: str) -> list[Action]:
        window_start = now - self.policy.window
        while self._attempt_times and self._attempt_times[0] <= window_start:
            self._attempt_times.popleft()
        rungs = self.policy.repair_rungs
        if not rungs or len(self._attempt_times) >= self.policy.max_attempts:
            return self._give_up(now)
        self.attempt += 1
        self._attempt_times.append(now)
        rung = rungs[min(len(self._attempt_times), len(rungs)) - 1]
        return self._begin(_RUNG_ACTIONS[rung](self.attempt), now, f"{why}: {rung} (attempt {self.attempt})")

    def _begin(self, action: RecoveryAction, now: float, why: str) -> list[Action]:
        self._in_flight = action
        self._verifying_since = None
        actions: list[Action] = []
        if self.state is not State.RECOVERING:
            actions.append(self._move(State.RECOVERING, now, why))
        else:
            self.reason = why
        actions.append(action)
        return actions

    def _attempt_failed(self, now: float, why: str) -> list[Action]:
        self._verifying_since = None
        window_start = now - self.policy.window
        recent = sum(1 for t in self._attempt_times if t > window_start)
        if recent >= self.policy.max_attempts or not self.policy.repair_rungs:
            return self._give_up(now, why)
        delay = backoff_delay(self.attempt, self.policy, self.rng)
        self._last_delay = delay
        self._timer = _Timer(now + delay, "backoff")
        ceiling = backoff_ceiling(self.attempt, self.policy)
        return [
            self._move(
                State.BACKOFF,
                now,
                f"attempt {self.attempt} failed ({why}); retry in {delay:.1f}s (ceiling {ceiling:.0f}s)",
            )
        ]

    def _give_up(self, now: float, why: str = "") -> list[Action]:
        tried = f"{len(self._attempt_times)} recovery attempt(s) in {self.policy.window:.0f}s"
        if self.policy.fallback_enabled:
            return self._begin(EnterFallback(self.attempt), now, f"{tried} did not help; checking fallback")
        detail = f"{tried} did not help" + (f"; last: {why}" if why else "")
        return self._needs_human(now, detail)

    def _enter_fallback(self, now: float, detail: str) -> list[Action]:
        why = (
            "emergency mode: the job must use the direct API"
            if self._forced_fallback
            else ("the MCP server could not be recovered; the job must use the direct API")
        )
        return [
            self._move(State.FALLBACK, now, f"{why} ({detail})"),
            *self._notify_once("fallback", f"{why} ({detail})", "critical"),
        ]

    def _needs_human(self, now: float, detail: str, result: ProbeResult | None = None) -> list[Action]:
        self._in_flight = None
        self._timer = None
        if self._incident_since is None:
            self._incident_since = now
        hint = result.hint if result is not None and result.hint else None
        text = f"{detail}; {hint}" if hint else detail
        actions: list[Action] = []
        if self.state is State.STARTING or self.state in _UP:
            actions.append(self._move(State.FAILED, now, detail))
        actions.append(self._move(State.NEEDS_HUMAN, now, text))
        return actions + self._notify_once("needs_human", text, "critical")

    def _notify_once(self, kind: str, detail: str, severity: str = "warning") -> list[Action]:
        """One alert per incident: later escalations of the same incident are state events only."""
        if self._incident_notified:
            return []
        self._incident_notified = True
        return [Notify(kind, detail, severity)]

    def _reset_incident_tracking(self) -> None:
        self._incident_since = None
        self._incident_notified = False
        self._in_flight = None
        self._timer = None
        self._verifying_since = None
        self._forced_fallback = False
        self._emergency_pending = False

    def _move(self, new: State, now: float, reason: str) -> Transition:
        old = self.state
        self.state = new
        self.since = now
        self.reason = reason
        return Transition(old, new, reason)


def _rung_name(action: Action) -> str:
    return {Restart: "restart", RestoreConfig: "restore_config", Recreate: "recreate"}.get(
        type(action), type(action).__name__
    )
