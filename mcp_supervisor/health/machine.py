"""The per-server health machine: a pure, sans-I/O state machine in the style of h11.

Inputs are probe results, outcomes of the actions it asked for, timer expiries and operator
commands, each with ``now`` (monotonic seconds) passed in. Outputs are ``Action`` values the shell
executes. Nothing here reads a clock, sleeps, logs or does I/O, so a server's whole behaviour can be
driven by tables and by hypothesis with a simulated clock.

The lifecycle (see docs/architecture.md for the full table):

    starting -> healthy <-> degraded -> failed -> recovering -> healthy
                                          |  |       |  ^
                                          |  +---> backoff      (flapping / failed attempts)
                                          v          |
                                    needs_human <----+----> fallback   (alert levels, not stops)

* One failed probe is not an outage: ``failure_threshold`` consecutive failures make ``failed``;
  failures during ``start_period`` do not count (Kubernetes startup probes).
* A recovery that brings the server back is a success. A server that fails again within
  ``stable_after`` of its last recovery is *flapping*: each such failure waits a growing, jittered,
  capped delay before the next restart (Kubernetes' CrashLoopBackOff). ``stable_after`` of
  continuous health resets it.
* Healing never stops for a server a restart can bring back. When ``max_attempts`` within
  ``window`` are used up a person is alerted once for the incident (``needs_human``, or
  ``fallback`` when one is configured) and the restarts go on at the backoff cap; those two states
  are alert levels: the server is still probed, and a success heals it and sends the resolution.
* ``auth`` and ``config`` failures are never restarted (a restart cannot renew a token); they are
  re-probed, so a renewed token or a fixed file heals them without a command.
* A failed COLD probe (a fresh spawn, the MCP client's real path) is a failure on its own: while
  one stands, a warm copy answering proves nothing and counts neither way; only a cold success
  clears it (``wants_cold`` tells the shell to check cold on every tick meanwhile).
* One alert per incident, one resolution (Alertmanager-style grouping). While a server flaps the
  resolution waits for ``stable_after`` of health, so a crash loop cannot send alert storms.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from mcp_supervisor.health.model import (
    Action,
    Command,
    EnterFallback,
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
    headline,
)
from mcp_supervisor.health.policy import Policy, backoff_ceiling, backoff_delay


class IllegalTransition(RuntimeError):
    """The machine tried a move its own table forbids: a bug in the machine, never in the input."""


# Every transition the machine may make; ``_move`` enforces it and the property tests drive it.
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
        (State.FAILED, State.BACKOFF),  # flapping: wait before the restart
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
_RUNNING = (State.STARTING, State.HEALTHY, State.DEGRADED)
_ALERTED = (State.NEEDS_HUMAN, State.FALLBACK)


@dataclass
class _Timer:
    at: float
    purpose: str  # "backoff" (next attempt) | "verify" (look again after an action) | "stable"


class ServerMachine:
    def __init__(self, policy: Policy, now: float, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.rng = rng or random.Random()
        self.state = State.STARTING
        self.since = now
        self.reason = "supervisor started"
        self.attempt = 0
        self.last_result: ProbeResult | None = None
        self.last_failure: ProbeResult | None = None
        self._started_at = now
        self._failures = 0
        self._successes = 0
        self._cold_failures = 0
        self._attempt_times: deque[float] = deque()
        self._in_flight: RecoveryAction | None = None
        self._verifying_since: float | None = None
        self._timer: _Timer | None = None
        self._step = 0
        self._flapping = False
        self._incident_since: float | None = None
        self._incident_notified = False
        self._resolution_pending = False
        self._alert_text = ""
        self._exhausted = False  # max_attempts in window were used up: restarts at the cap
        self._forced_fallback = False
        self._emergency_pending = False
        self._last_delay: float | None = None

    # --- queries ---------------------------------------------------------------------------

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
        return self._last_delay

    def wants_cold(self) -> bool:
        """A fresh start failed and no fresh start has passed since: check cold on every tick."""
        return self._cold_failures > 0 and self.state is not State.PAUSED

    def retry_pending(self) -> bool:
        """Something will happen without any outside input: an action runs or a retry timer is set."""
        return self.busy() or (self._timer is not None and self._timer.purpose in ("backoff", "verify"))

    def restartable_failure(self) -> bool:
        """The server is failing in a way a restart may fix, and the policy allows restarts."""
        failure = self.last_failure.failure if self.last_failure is not None else None
        return (
            bool(self.policy.repair_rungs)
            and not self._forced_fallback
            and failure is not None
            and not failure.needs_human
        )

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
            "next_attempt_at": self.next_attempt_at(),
            "timer": self._timer.purpose if self._timer else None,
            "in_flight": type(self._in_flight).__name__ if self._in_flight else None,
            "delay": self._last_delay,
            "flapping": self._flapping,
            "cold_failures": self._cold_failures,
            "forced_fallback": self._forced_fallback,
        }

    # --- inputs ----------------------------------------------------------------------------

    def on_probe(self, result: ProbeResult, now: float) -> list[Action]:
        if self.state is State.PAUSED:
            return []
        self.last_result = result
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
                actions = self._needs_human(now, f"{self._alert_text}; {why}" if self._alert_text else why)
            if self.restartable_failure():
                actions += self._schedule(now, self.reason)
            return actions
        if not ok:
            return self._attempt_failed(now, f"{_rung_name(action)} failed: {detail}" if detail else "action failed")
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
            if self.state in (State.BACKOFF, *_ALERTED) and not self.busy() and not self._forced_fallback:
                return self._start_attempt(now, "after the backoff delay")
            return []
        if timer.purpose == "verify" and self._verifying_since is not None and not self.busy():
            if self._successes == 0 and now - self._verifying_since >= self.policy.verify_window:
                return self._attempt_failed(
                    now, f"no answer within {self.policy.verify_window:g}s of the {_rung_name(self._last_rung())}"
                )
            self._timer = _Timer(now + max(self.policy.verify_window, self.policy.probe_interval), "verify")
            return [ProbeNow(self._probe_kind())]
        if timer.purpose == "stable" and self.state in _UP:
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
            self._verifying_since = None
            if not self.policy.repair_rungs:
                if self.policy.fallback_enabled:
                    return self._begin(EnterFallback(self.attempt), now, "recover requested by operator", operator=True)
                return [ProbeNow(ProbeKind.COLD)]
            return self._start_attempt(now, "requested by operator", operator=True)
        # EMERGENCY
        if self.state is State.FALLBACK:
            return []
        self._timer = None
        self._verifying_since = None
        self._forced_fallback = True
        if self.busy():
            self._emergency_pending = True  # one action at a time: fallback right after this one
            return []
        return self._emergency(now)

    # --- successes -------------------------------------------------------------------------

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
        if self.busy():
            return []  # the action's outcome decides; a probe racing it proves nothing
        if self._successes < self.policy.success_threshold:
            if self._verifying_since is not None:
                self._timer = _Timer(now + self.policy.probe_interval, "verify")
            return []
        return self._recovered(up, now, why)

    def _recovered(self, up: State, now: float, why: str) -> list[Action]:
        actions: list[Action] = [self._move(up, now, why)]
        worked_for_it = self.attempt > 0 or self._step > 0 or self._flapping
        if self._incident_notified and self._flapping:
            self._resolution_pending = True  # a flapping server resolves once it stays up
        elif self._incident_notified:
            actions.append(Notify("recovered", self._resolution_text(now), "info"))
            self._close_incident()
        elif not self._resolution_pending:
            self._incident_since = None
        self._verifying_since = None
        stay = worked_for_it or self._resolution_pending
        self._timer = _Timer(now + self.policy.stable_after, "stable") if stay else None
        return actions

    def _stable(self, now: float) -> list[Action]:
        """``stable_after`` of continuous health: the backoff and the attempt count start over."""
        self.attempt = 0
        self._step = 0
        self._flapping = False
        self._exhausted = False
        self._attempt_times.clear()
        self._last_delay = None
        if not self._resolution_pending:
            return []
        note = Notify("recovered", self._resolution_text(now, stable=True), "info")
        self._close_incident()
        return [note]

    def _resolution_text(self, now: float, *, stable: bool = False) -> str:
        downtime = now - self._incident_since if self._incident_since is not None else 0.0
        stayed = f", up for {self.policy.stable_after:g}s" if stable else ""
        return f"back after {downtime:.1f}s ({self.attempt} recovery attempt(s){stayed})"

    def _close_incident(self) -> None:
        self._incident_since = None
        self._incident_notified = False
        self._resolution_pending = False
        self._alert_text = ""
        self._exhausted = False

    # --- failures --------------------------------------------------------------------------

    def _on_failure(self, result: ProbeResult, now: float) -> list[Action]:
        failure = result.failure
        assert failure is not None  # ProbeResult guarantees it for ok=False
        state = self.state
        if state in _RUNNING:
            if not failure.needs_human and self._failures < self.policy.failure_threshold:
                return []
            return self._fail(now, result)
        if state is State.FALLBACK and self._forced_fallback:
            return []
        if self.busy():
            return []  # the action's outcome decides
        if failure.needs_human:
            if state in _ALERTED:
                self._timer = None  # a restart cannot fix this: stop restarting, keep probing
                self._verifying_since = None
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
        if self._incident_since is None:
            self._incident_since = now
        self._timer = None
        self._verifying_since = None
        what = headline(result)
        actions: list[Action] = [self._move(State.FAILED, now, what)]
        assert result.failure is not None
        if result.failure.needs_human:
            return actions + self._needs_human(now, what, result)
        if self.policy.repair_rungs or self.policy.fallback_enabled:
            if flapping:  # down again within stable_after of the last recovery
                self._flapping = True
                self._step += 1
            return actions + self._schedule(now, f"after {what}")
        return actions + self._notify_once("down", f"{what} (no recovery action configured)")

    def _attempt_failed(self, now: float, why: str) -> list[Action]:
        self._verifying_since = None
        self._step += 1
        return self._schedule(now, why)

    def _schedule(self, now: float, why: str) -> list[Action]:
        """The next attempt: now, or after a growing delay; alert once when the budget is spent."""
        rungs = self.policy.repair_rungs
        recent = self._prune(now)
        actions: list[Action] = []
        if (not rungs or recent >= self.policy.max_attempts) and self.state not in _ALERTED:
            actions += self._alert(now, why, recent)
            if self.busy() or not rungs:
                return actions  # a fallback check runs first; restarts are scheduled after it
        if not rungs:
            return actions
        if self._step == 0 and not self._exhausted:
            self._last_delay = None
            return actions + self._start_attempt(now, why)
        ceiling = self.policy.backoff_max if self._exhausted else backoff_ceiling(self._step, self.policy)
        delay = backoff_delay(ceiling, self.rng)
        self._last_delay = delay
        self._timer = _Timer(now + delay, "backoff")
        text = f"attempt {self.attempt} failed ({why})" if self.attempt else why
        plan = f"{text}; retry in {delay:.1f}s (ceiling {ceiling:g}s)"
        if self.state in (State.FAILED, State.RECOVERING):
            actions.append(self._move(State.BACKOFF, now, plan))
        elif self.state in _ALERTED:
            self.reason = f"{self._alert_text or why}; next restart in {delay:.1f}s"
        else:
            self.reason = plan
        return actions

    def _alert(self, now: float, why: str, recent: int) -> list[Action]:
        """Tell a person once: what was tried, what the server said last, what happens next."""
        if self.policy.repair_rungs:
            tried = f"{recent} recovery attempt(s) ({', '.join(self.policy.repair_rungs)}) in {self.policy.window:g}s"
            text = (
                f"{tried} did not keep it up; last: {why}; "
                f"restarts continue every ~{self.policy.backoff_max:g}s until it stays up"
            )
        else:
            text = f"{why}; nothing can restart it"
        if not self._incident_notified or not self._alert_text:
            self._alert_text = text  # the alert a person got; later rounds of the incident keep it
        self._exhausted = bool(self.policy.repair_rungs)
        if self.policy.fallback_enabled:
            return self._begin(EnterFallback(self.attempt), now, f"{text}; checking the fallback")
        return self._needs_human(now, text, keep_schedule=True)

    def _start_attempt(self, now: float, why: str, *, operator: bool = False) -> list[Action]:
        rungs = self.policy.repair_rungs
        self._prune(now)
        self.attempt += 1
        self._attempt_times.append(now)
        rung = rungs[min(len(self._attempt_times), len(rungs)) - 1]
        return self._begin(_RUNG_ACTIONS[rung](self.attempt), now, f"{rung} (attempt {self.attempt}) {why}", operator=operator)

    def _begin(self, action: RecoveryAction, now: float, why: str, *, operator: bool = False) -> list[Action]:
        self._in_flight = action
        self._verifying_since = None
        self._timer = None
        actions: list[Action] = []
        if self.state is State.RECOVERING:
            self.reason = why
        elif self.state in _ALERTED and not operator:
            self.reason = f"{self._alert_text}; now: {why}" if self._alert_text else why
        else:
            actions.append(self._move(State.RECOVERING, now, why))
        actions.append(action)
        return actions

    def _prune(self, now: float) -> int:
        window_start = now - self.policy.window
        while self._attempt_times and self._attempt_times[0] <= window_start:
            self._attempt_times.popleft()
        return len(self._attempt_times)

    # --- alert levels ----------------------------------------------------------------------

    def _emergency(self, now: float) -> list[Action]:
        if self.policy.has_fallback:
            return self._begin(EnterFallback(self.attempt), now, "emergency mode requested by operator", operator=True)
        why = "emergency mode forced by operator (no fallback URL configured: use the service's API directly)"
        return [self._move(State.FALLBACK, now, why), Notify("fallback", why, "critical")]

    def _enter_fallback(self, now: float, detail: str) -> list[Action]:
        if self._forced_fallback:
            why = "emergency mode: the job must use the direct API"
        else:
            why = self._alert_text or "the MCP server could not be recovered"
            why = f"{why}; meanwhile the job must use the direct API"
        text = f"{why} ({detail})"
        if self._forced_fallback:  # the operator's own choice: a notice, not an incident's alert
            return [self._move(State.FALLBACK, now, text), Notify("fallback", text, "critical")]
        return [self._move(State.FALLBACK, now, text), *self._notify_once("fallback", text, "critical")]

    def _needs_human(
        self, now: float, detail: str, result: ProbeResult | None = None, *, keep_schedule: bool = False
    ) -> list[Action]:
        self._in_flight = None
        if not keep_schedule:
            self._timer = None
            self._verifying_since = None
        if self._incident_since is None:
            self._incident_since = now
        hint = result.hint if result is not None and result.hint else None
        text = f"{detail}; {hint}" if hint else detail
        actions: list[Action] = []
        if self.state in _RUNNING:
            actions.append(self._move(State.FAILED, now, detail))
        if self.state is State.NEEDS_HUMAN:
            self.reason = text
        else:
            actions.append(self._move(State.NEEDS_HUMAN, now, text))
        return actions + self._notify_once("needs_human", text, "critical")

    def _notify_once(self, kind: str, detail: str, severity: str = "warning") -> list[Action]:
        """One alert per incident: later escalations of the same incident are state events only."""
        if self._incident_notified:
            return []
        self._incident_notified = True
        return [Notify(kind, detail, severity)]

    def _reset_incident_tracking(self) -> None:
        self._close_incident()
        self._in_flight = None
        self._timer = None
        self._verifying_since = None
        self._forced_fallback = False
        self._emergency_pending = False
        self._flapping = False
        self._cold_failures = 0

    # --- helpers ---------------------------------------------------------------------------

    def _probe_kind(self) -> ProbeKind:
        return ProbeKind.COLD if self._cold_failures else ProbeKind.WARM

    def _last_rung(self) -> Action:
        rungs = self.policy.repair_rungs or ("restart",)
        return _RUNG_ACTIONS[rungs[min(max(len(self._attempt_times), 1), len(rungs)) - 1]](self.attempt)

    def _move(self, new: State, now: float, reason: str) -> Transition:
        old = self.state
        if (old, new) not in ALLOWED_TRANSITIONS:
            raise IllegalTransition(f"{old} -> {new} is not in ALLOWED_TRANSITIONS ({reason})")
        self.state = new
        self.since = now
        self.reason = reason
        return Transition(old, new, reason)


def _rung_name(action: Action) -> str:
    return {Restart: "restart", RestoreConfig: "restore_config", Recreate: "recreate"}.get(
        type(action), type(action).__name__
    )
