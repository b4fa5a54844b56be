"""The health machine, driven as a table of (event, now) -> (state, actions) with a fake clock."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from mcp_supervisor.config import parse_config
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
from mcp_supervisor.health.policy import Policy, backoff_ceiling, backoff_delay
from mcp_supervisor.health.tokens import configured_expiry, expiry_message, expiry_warning, jwt_expiry

OK = ProbeResult(ok=True, latency_ms=3.0)
DOWN = ProbeResult(ok=False, failure=FailureClass.REFUSED, message="connection refused")
CRASH = ProbeResult(ok=False, failure=FailureClass.CRASHED, message="process exited")
AUTH = ProbeResult(ok=False, failure=FailureClass.AUTH, message="HTTP 401", hint="renew JIRA_TOKEN")

MANAGED = Policy(failure_threshold=3, success_threshold=2, probe_interval=5.0, can_restart=True, max_attempts=3)


def transitions(actions: list[Action]) -> list[tuple[State, State]]:
    return [(a.old, a.new) for a in actions if isinstance(a, Transition)]


def notifies(actions: list[Action]) -> list[str]:
    return [a.kind for a in actions if isinstance(a, Notify)]


def healthy(policy: Policy = MANAGED, now: float = 0.0) -> ServerMachine:
    machine = ServerMachine(policy, now, random.Random(7))
    machine.on_probe(OK, now)
    assert machine.state is State.HEALTHY
    return machine


def fail(machine: ServerMachine, start: float, count: int, result: ProbeResult = DOWN) -> list[Action]:
    actions: list[Action] = []
    for i in range(count):
        actions += machine.on_probe(result, start + i)
    return actions


def test_policy_from_config_reflects_what_the_supervisor_can_act_on() -> None:
    config = parse_config(
        """
[[configs]]
name = "cursor"
path = "/tmp/mcp.json"
format = "mcp-client-json"
[[servers]]
name = "a"
transport = "http"
url = "http://127.0.0.1:1/mcp"
managed = true
command = "x"
config = "cursor"
fallback = { url = "http://127.0.0.1:2/" }
probe = { failure_threshold = 4, interval = "2s" }
recovery = { max_attempts = 7, backoff_max = "1m" }
[[servers]]
name = "b"
transport = "http"
url = "http://127.0.0.1:1/mcp"
container = "jira"
""",
        environ={},
    )
    a = Policy.from_config(config.servers[0], can_restore=True)
    assert (a.can_restart, a.can_restore, a.can_recreate, a.has_fallback) == (True, True, False, True)
    assert (a.failure_threshold, a.probe_interval, a.max_attempts, a.backoff_max) == (4, 2.0, 7, 60.0)
    assert a.repair_rungs == ("restart", "restore_config")
    b = Policy.from_config(config.servers[1])
    assert b.repair_rungs == ("restart", "recreate")
    assert not b.fallback_enabled


def test_first_success_makes_a_starting_server_healthy() -> None:
    machine = ServerMachine(MANAGED, 0.0)
    assert machine.on_probe(OK, 1.0) == [Transition(State.STARTING, State.HEALTHY, "probe succeeded")]


def test_failures_in_start_period_do_not_count() -> None:
    machine = ServerMachine(replace(MANAGED, start_period=10.0), 0.0)
    assert fail(machine, 1.0, 5) == []
    assert machine.state is State.STARTING
    actions = fail(machine, 10.0, 3)
    assert transitions(actions)[0] == (State.STARTING, State.FAILED)


def test_one_failed_probe_is_not_an_outage() -> None:
    machine = healthy()
    assert fail(machine, 1.0, 2) == []
    assert machine.on_probe(OK, 3.0) == []
    assert fail(machine, 4.0, 2) == []  # the count restarted after the success
    assert machine.state is State.HEALTHY


def test_threshold_failures_fail_and_restart_a_managed_server() -> None:
    machine = healthy()
    actions = fail(machine, 1.0, 3)
    assert transitions(actions) == [(State.HEALTHY, State.FAILED), (State.FAILED, State.RECOVERING)]
    assert Restart(1) in actions
    assert machine.busy()
    assert notifies(actions) == []  # a restart that works is not worth waking anyone


def test_degraded_when_expected_tools_are_missing_and_back() -> None:
    machine = healthy()
    degraded = ProbeResult(ok=True, degraded="missing tools: create_issue")
    assert transitions(machine.on_probe(degraded, 1.0)) == [(State.HEALTHY, State.DEGRADED)]
    assert machine.reason == "degraded: missing tools: create_issue"
    assert transitions(machine.on_probe(OK, 2.0)) == [(State.DEGRADED, State.HEALTHY)]


def test_restart_then_verification_needs_success_threshold() -> None:
    machine = healthy()
    restart = next(a for a in fail(machine, 1.0, 3) if isinstance(a, Restart))
    assert machine.on_action_done(restart, True, 4.0) == [ProbeNow()]
    assert not machine.busy()
    assert machine.on_probe(OK, 4.5) == []  # success_threshold is 2
    actions = machine.on_probe(OK, 5.0)
    assert transitions(actions) == [(State.RECOVERING, State.HEALTHY)]
    assert machine.attempt == 1


def test_server_still_coming_up_after_restart_is_retried_quickly_not_failed() -> None:
    machine = healthy()
    restart = next(a for a in fail(machine, 1.0, 3) if isinstance(a, Restart))
    machine.on_action_done(restart, True, 4.0)
    assert machine.on_probe(DOWN, 4.1) == []
    assert machine.state is State.RECOVERING
    deadline = machine.next_deadline()
    assert deadline is not None and deadline == pytest.approx(4.1 + MANAGED.verify_retry)
    assert machine.on_timer(deadline) == [ProbeNow()]


def test_crash_during_verification_fails_the_attempt_with_backoff() -> None:
    machine = healthy()
    restart = next(a for a in fail(machine, 1.0, 3) if isinstance(a, Restart))
    machine.on_action_done(restart, True, 4.0)
    actions = machine.on_probe(CRASH, 4.2)
    assert transitions(actions) == [(State.RECOVERING, State.BACKOFF)]
    deadline = machine.next_deadline()
    assert deadline is not None and 4.2 <= deadline <= 4.2 + MANAGED.backoff_initial
    actions = machine.on_timer(deadline)
    assert transitions(actions) == [(State.BACKOFF, State.RECOVERING)]
    assert Restart(2) in actions


def test_crash_loop_backs_off_then_falls_back_with_one_alert() -> None:
    policy = replace(MANAGED, has_fallback=True, max_attempts=4, backoff_initial=1.0, backoff_max=3.0)
    machine = healthy(policy)
    now = 0.0
    actions = fail(machine, 1.0, 3)
    now = 3.0
    ceilings = []
    all_actions = list(actions)
    while machine.state is not State.FALLBACK:
        action = next(a for a in actions if isinstance(a, Restart | EnterFallback))
        if isinstance(action, EnterFallback):
            actions = machine.on_action_done(action, True, now)
            all_actions += actions
            break
        machine.on_action_done(action, True, now)
        actions = machine.on_probe(CRASH, now + 0.1)
        all_actions += actions
        ceilings.append(backoff_ceiling(machine.attempt, policy))
        if machine.state is State.BACKOFF:
            deadline = machine.next_deadline()
            assert deadline is not None
            now = deadline
            actions = machine.on_timer(now)
            all_actions += actions
    assert machine.state is State.FALLBACK
    assert ceilings[:3] == [1.0, 2.0, 3.0]  # doubling, capped at backoff_max
    assert sum(isinstance(a, Restart) for a in all_actions) == 4
    assert notifies(all_actions) == ["fallback"]


def test_exhausted_attempts_without_fallback_need_a_human() -> None:
    policy = replace(MANAGED, max_attempts=1)
    machine = healthy(policy)
    restart = next(a for a in fail(machine, 1.0, 3) if isinstance(a, Restart))
    actions = machine.on_action_done(restart, False, 4.0, detail="exit 127")
    assert transitions(actions) == [(State.RECOVERING, State.NEEDS_HUMAN)]
    assert notifies(actions) == ["needs_human"]
    assert "exit 127" in machine.reason


def test_auth_goes_straight_to_needs_human_and_never_restarts() -> None:
    machine = healthy()
    actions = machine.on_probe(AUTH, 1.0)
    assert transitions(actions) == [(State.HEALTHY, State.FAILED), (State.FAILED, State.NEEDS_HUMAN)]
    assert not any(isinstance(a, Restart | Recreate | RestoreConfig) for a in actions)
    (note,) = [a for a in actions if isinstance(a, Notify)]
    assert note.kind == "needs_human" and "renew JIRA_TOKEN" in note.detail
    assert fail(machine, 2.0, 10, AUTH) == []  # no alert storm
    assert transitions(machine.on_probe(OK, 20.0) + machine.on_probe(OK, 21.0)) == [
        (State.NEEDS_HUMAN, State.HEALTHY)
    ]


def test_container_ladder_climbs_from_restart_to_recreate() -> None:
    policy = Policy(failure_threshold=1, can_restart=True, can_recreate=True, max_attempts=5, probe_interval=1)
    machine = healthy(policy)
    first = machine.on_probe(DOWN, 1.0)
    assert Restart(1) in first
    machine.on_action_done(Restart(1), False, 1.5)
    deadline = machine.next_deadline()
    assert deadline is not None
    assert Recreate(2) in machine.on_timer(deadline)


def test_external_server_without_actions_alerts_once_and_recovers_by_itself() -> None:
    machine = healthy(Policy(failure_threshold=2))
    actions = fail(machine, 1.0, 2)
    assert transitions(actions) == [(State.HEALTHY, State.FAILED)]
    assert notifies(actions) == ["down"]
    assert fail(machine, 3.0, 5) == []
    actions = machine.on_probe(OK, 9.0)
    assert transitions(actions) == [(State.FAILED, State.HEALTHY)]
    assert notifies(actions) == ["recovered"]


def test_backoff_resets_only_after_a_stable_period() -> None:
    policy = replace(MANAGED, success_threshold=1, stable_after=60.0)
    machine = healthy(policy)
    restart = next(a for a in fail(machine, 1.0, 3) if isinstance(a, Restart))
    machine.on_action_done(restart, True, 4.0)
    machine.on_probe(OK, 5.0)
    assert machine.attempt == 1 and machine.next_deadline() == 65.0
    assert machine.on_timer(30.0) == []
    assert machine.attempt == 1
    machine.on_timer(65.0)
    assert machine.attempt == 0


def test_pause_silences_everything_and_resume_restarts_probing() -> None:
    machine = healthy()
    assert transitions(machine.on_command(Command.PAUSE, 1.0)) == [(State.HEALTHY, State.PAUSED)]
    assert fail(machine, 2.0, 10) == []
    assert machine.on_command(Command.RECOVER, 3.0) == []
    actions = machine.on_command(Command.RESUME, 4.0)
    assert transitions(actions) == [(State.PAUSED, State.STARTING)]
    assert ProbeNow() in actions


def test_pause_during_an_action_ignores_its_late_outcome() -> None:
    machine = healthy()
    restart = next(a for a in fail(machine, 1.0, 3) if isinstance(a, Restart))
    machine.on_command(Command.PAUSE, 4.0)
    assert machine.on_action_done(restart, False, 5.0) == []
    assert machine.state is State.PAUSED


def test_recover_command_walks_the_ladder_now_ignoring_backoff() -> None:
    machine = healthy()
    restart = next(a for a in fail(machine, 1.0, 3) if isinstance(a, Restart))
    machine.on_action_done(restart, False, 4.0)
    assert machine.state is State.BACKOFF
    actions = machine.on_command(Command.RECOVER, 4.1)
    assert transitions(actions) == [(State.BACKOFF, State.RECOVERING)]
    assert any(isinstance(a, Restart) for a in actions)
    assert machine.on_command(Command.RECOVER, 4.2) == []  # one action at a time


def test_emergency_checks_fallback_and_stays_until_resumed() -> None:
    machine = healthy(replace(MANAGED, has_fallback=True))
    actions = machine.on_command(Command.EMERGENCY, 1.0)
    check = next(a for a in actions if isinstance(a, EnterFallback))
    actions = machine.on_action_done(check, True, 1.1)
    assert transitions(actions) == [(State.RECOVERING, State.FALLBACK)]
    assert machine.on_probe(OK, 2.0) == [] and machine.on_probe(OK, 3.0) == []
    actions = machine.on_command(Command.RESUME, 4.0)
    assert transitions(actions)[-1] == (State.PAUSED, State.STARTING)


def test_emergency_without_fallback_url_still_tells_the_job() -> None:
    machine = healthy(Policy())
    actions = machine.on_command(Command.EMERGENCY, 1.0)
    assert transitions(actions) == [(State.HEALTHY, State.FALLBACK)]
    assert "no fallback URL configured" in machine.reason


def test_failed_fallback_check_needs_a_human() -> None:
    policy = Policy(failure_threshold=1, has_fallback=True)
    machine = healthy(policy)
    actions = machine.on_probe(DOWN, 1.0)
    check = next(a for a in actions if isinstance(a, EnterFallback))
    actions = machine.on_action_done(check, False, 1.2, "HTTP 503")
    assert machine.state is State.NEEDS_HUMAN
    assert notifies(actions) == ["needs_human"]


def test_backoff_delay_is_equal_jitter_under_a_capped_ceiling() -> None:
    policy = Policy(backoff_initial=1.0, backoff_factor=2.0, backoff_max=300.0)
    rng = random.Random(1)
    assert [backoff_ceiling(n, policy) for n in (1, 2, 3, 9, 10, 500)] == [1, 2, 4, 256, 300, 300]
    delays = [backoff_delay(backoff_ceiling(5, policy), rng) for _ in range(500)]
    assert 8.0 <= min(delays) < 8.5 and 15.5 < max(delays) <= 16.0


# --- tokens ----------------------------------------------------------------------------------------


def _jwt(exp: object) -> str:
    import base64
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(b'{}')}.{b64(json.dumps({'exp': exp, 'sub': 'x'}).encode())}.sig"


def test_jwt_expiry_reads_exp_and_tolerates_garbage() -> None:
    when = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)
    assert jwt_expiry(_jwt(int(when.timestamp()))) == when
    assert jwt_expiry("Bearer " + _jwt(int(when.timestamp()))) == when
    for garbage in ("", "abc", "a.b.c", "a.!!!.c", _jwt("soon"), _jwt(True), _jwt(10**30)):
        assert jwt_expiry(garbage) is None


def test_expiry_warnings_a_week_and_a_day_ahead() -> None:
    expires = configured_expiry(date(2026, 12, 31))
    assert expires == datetime(2027, 1, 1, tzinfo=UTC)
    assert expiry_warning(expires, expires - timedelta(days=8)) is None
    assert expiry_warning(expires, expires - timedelta(days=6)) == "7d"
    assert expiry_warning(expires, expires - timedelta(hours=5)) == "1d"
    assert expiry_warning(expires, expires) == "expired"
    message = expiry_message("jira", "JIRA_TOKEN", expires, "7d")
    assert "JIRA_TOKEN" in message and "renew" in message


# --- healing never stops (issue 7) -------------------------------------------------------------------

COLD_CRASH = ProbeResult(
    ok=False,
    failure=FailureClass.CRASHED,
    kind=ProbeKind.COLD,
    message="server process exited during handshake; stderr: Traceback | FileNotFoundError: /srv/repo does not exist",
)
COLD_OK = ProbeResult(ok=True, kind=ProbeKind.COLD)
EXIT = ProbeResult(
    ok=False, failure=FailureClass.CRASHED, message="managed process exited with code 1; last output: fatal: bad token"
)


def recover_once(machine: ServerMachine, now: float, result: ProbeResult = EXIT) -> list[Action]:
    """A crash (the whole threshold, as the shell feeds a process exit), then whatever follows
    until the restart ran and the server answered again."""
    actions: list[Action] = []
    for _ in range(machine.policy.failure_threshold):
        actions += machine.on_probe(result, now)
        if machine.state not in (State.HEALTHY, State.DEGRADED):
            break
    while True:
        deadline = machine.next_deadline()
        action = next((a for a in reversed(actions) if isinstance(a, Restart)), None)
        if machine.busy() and action is not None:
            actions += machine.on_action_done(action, True, now)
            for _ in range(machine.policy.success_threshold):
                actions += machine.on_probe(OK, now)
            return actions
        assert deadline is not None, machine.snapshot()
        now = deadline
        actions += machine.on_timer(now)


def test_a_recovery_that_works_is_a_success_and_the_first_crash_restarts_at_once() -> None:
    machine = healthy(replace(MANAGED, success_threshold=1))
    actions = recover_once(machine, 10.0)
    assert transitions(actions) == [
        (State.HEALTHY, State.FAILED), (State.FAILED, State.RECOVERING), (State.RECOVERING, State.HEALTHY)
    ]
    assert notifies(actions) == []
    assert "restart (attempt 1) after fatal: bad token" in [a.reason for a in actions if isinstance(a, Transition)][1]


def test_flapping_waits_growing_jittered_capped_delays_and_stable_after_resets() -> None:
    policy = replace(
        MANAGED, failure_threshold=1, success_threshold=1, max_attempts=100, backoff_max=8.0, stable_after=60.0
    )
    machine = healthy(policy)
    now = 10.0
    recover_once(machine, now)  # first crash: restart at once
    waits = []
    for _ in range(6):
        now += 5.0  # dies again soon after each recovery: flapping
        actions = machine.on_probe(EXIT, now)
        assert transitions(actions) == [(State.HEALTHY, State.FAILED), (State.FAILED, State.BACKOFF)]
        deadline = machine.next_deadline()
        assert deadline is not None and machine.next_attempt_at() == deadline
        waits.append(deadline - now)
        now = deadline
        actions = machine.on_timer(now)
        restart = next(a for a in actions if isinstance(a, Restart))
        machine.on_action_done(restart, True, now)
        machine.on_probe(OK, now)
        assert machine.state is State.HEALTHY
    ceilings = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits
    machine.on_timer(now + 60.0)  # stable_after of continuous health: start over
    assert machine.attempt == 0
    actions = machine.on_probe(EXIT, now + 61.0)
    assert transitions(actions) == [(State.HEALTHY, State.FAILED), (State.FAILED, State.RECOVERING)]


def test_used_up_attempts_alert_once_and_restarts_go_on_at_the_cap() -> None:
    policy = replace(MANAGED, success_threshold=1, max_attempts=3, backoff_initial=1.0, backoff_max=30.0)
    machine = healthy(policy)
    now = 10.0
    actions = fail(machine, now, 3, EXIT)
    restarts = 1
    for _ in range(20):  # the restart works, the server dies again before answering
        restart = next(a for a in reversed(actions) if isinstance(a, Restart))
        actions += machine.on_action_done(restart, True, now)
        now += 0.5
        actions += machine.on_probe(EXIT, now)
        assert machine.retry_pending()
        deadline = machine.next_deadline()
        assert deadline is not None
        if machine.state is State.NEEDS_HUMAN:
            assert 15.0 <= deadline - now <= 30.0  # at the cap
        now = deadline
        actions += machine.on_timer(now)
        restarts += 1
    assert sum(isinstance(a, Restart) for a in actions) == restarts == 21
    (alert,) = [a for a in actions if isinstance(a, Notify)]
    assert alert.kind == "needs_human"
    assert "3 recovery attempt(s) (restart)" in alert.detail and "fatal: bad token" in alert.detail
    assert "restarts continue every ~30s" in alert.detail
    assert machine.state is State.NEEDS_HUMAN
    # the fix: the next restart stays up; the server is healthy and the person hears it once
    restart = next(a for a in reversed(actions) if isinstance(a, Restart))
    machine.on_action_done(restart, True, now)
    actions = machine.on_probe(OK, now + 1.0)
    assert transitions(actions) == [(State.NEEDS_HUMAN, State.HEALTHY)]
    assert notifies(actions) == ["recovered"]


def test_used_up_attempts_with_a_fallback_keep_restarting_in_fallback() -> None:
    policy = replace(MANAGED, success_threshold=1, max_attempts=1, has_fallback=True, backoff_max=10.0)
    machine = healthy(policy)
    actions = fail(machine, 1.0, 3, EXIT)
    machine.on_action_done(next(a for a in actions if isinstance(a, Restart)), True, 1.0)
    actions = machine.on_probe(EXIT, 1.5)
    check = next(a for a in actions if isinstance(a, EnterFallback))
    actions = machine.on_action_done(check, True, 1.6, "fallback URL answered 200")
    assert transitions(actions) == [(State.RECOVERING, State.FALLBACK)]
    assert notifies(actions) == ["fallback"]
    deadline = machine.next_attempt_at()
    assert deadline is not None and 5.0 <= deadline - 1.6 <= 10.0
    actions = machine.on_timer(deadline)
    assert machine.state is State.FALLBACK and transitions(actions) == []  # the job keeps its fallback
    restart = next(a for a in actions if isinstance(a, Restart))
    machine.on_action_done(restart, True, deadline)
    actions = machine.on_probe(OK, deadline + 1.0)
    assert transitions(actions) == [(State.FALLBACK, State.HEALTHY)] and notifies(actions) == ["recovered"]


def test_a_flapping_server_resolves_only_after_staying_up() -> None:
    policy = replace(MANAGED, success_threshold=1, max_attempts=2, backoff_max=4.0, stable_after=60.0)
    machine = healthy(policy)
    now = 10.0
    every: list[Action] = []
    for _ in range(5):
        every += recover_once(machine, now)
        now = (machine.next_deadline() or now) - 30.0  # crash again inside stable_after
        assert machine.state is State.HEALTHY
    assert notifies(every) == ["needs_human"]  # one alert for the whole flapping incident
    stable_at = machine.next_deadline()
    assert stable_at is not None
    attempts = machine.attempt
    resolution = machine.on_timer(stable_at)
    assert notifies(resolution) == ["recovered"]
    # the resolution counts the attempts the incident took (before the budget starts over)
    note = next(a for a in resolution if isinstance(a, Notify))
    assert attempts >= 5 and f"({attempts} recovery attempt(s), up for 60s)" in note.detail
    assert machine.attempt == 0


def test_auth_is_reprobed_never_restarted_and_heals_by_itself() -> None:
    machine = healthy()
    machine.on_probe(AUTH, 1.0)
    assert machine.state is State.NEEDS_HUMAN and not machine.retry_pending()
    for i in range(5):
        assert machine.on_probe(AUTH, 2.0 + i) == []
    actions = machine.on_probe(OK, 10.0) + machine.on_probe(OK, 11.0)
    assert transitions(actions) == [(State.NEEDS_HUMAN, State.HEALTHY)]
    assert notifies(actions) == ["recovered"]
    assert not any(isinstance(a, Restart) for a in actions)


def test_a_crash_while_waiting_for_a_human_is_still_restarted() -> None:
    machine = healthy()
    machine.on_probe(AUTH, 1.0)
    actions = machine.on_probe(EXIT, 2.0)
    assert machine.state is State.NEEDS_HUMAN  # the token still needs a person ...
    assert Restart(1) in actions  # ... but the dead process is restarted at once, not at the cap
    assert notifies(actions) == []


def test_a_failed_fresh_start_is_a_failure_whatever_the_warm_copy_says() -> None:
    machine = healthy(Policy(failure_threshold=3))  # an external stdio server
    actions = machine.on_probe(COLD_CRASH, 1.0)
    assert actions == [] and machine.wants_cold()
    for i in range(5):
        assert machine.on_probe(OK, 1.5 + i * 0.1) == []  # the warm copy answering does not reset it
    machine.on_probe(COLD_CRASH, 2.0)
    actions = machine.on_probe(COLD_CRASH, 3.0)
    assert transitions(actions) == [(State.HEALTHY, State.FAILED)]
    assert machine.reason.startswith("FileNotFoundError: /srv/repo does not exist (crashed on a fresh start")
    assert machine.on_probe(OK, 4.0) == [] and machine.state is State.FAILED  # warm success: still failed
    actions = machine.on_probe(COLD_OK, 5.0)
    assert transitions(actions) == [(State.FAILED, State.HEALTHY)] and not machine.wants_cold()


def test_exits_and_401s_count_during_the_start_period() -> None:
    machine = ServerMachine(replace(MANAGED, start_period=60.0), 0.0)
    assert machine.on_probe(DOWN, 1.0) == []  # still booting
    actions = fail(machine, 2.0, 3, EXIT)
    assert (State.STARTING, State.FAILED) in transitions(actions)
    machine = ServerMachine(replace(MANAGED, start_period=60.0), 0.0)
    assert transitions(machine.on_probe(AUTH, 1.0))[-1] == (State.FAILED, State.NEEDS_HUMAN)


def test_illegal_transitions_raise() -> None:
    from mcp_supervisor.health.transitions import ALLOWED_TRANSITIONS, IllegalTransition

    assert (State.PAUSED, State.HEALTHY) not in ALLOWED_TRANSITIONS
    machine = healthy()
    machine.on_command(Command.PAUSE, 1.0)
    with pytest.raises(IllegalTransition):
        machine._move(State.HEALTHY, 2.0, "no")


def test_server_line_and_headline_lead_with_what_the_server_said() -> None:
    from mcp_supervisor.health.model import headline, server_line

    assert server_line(COLD_CRASH.message) == "FileNotFoundError: /srv/repo does not exist"
    assert server_line("connection refused") is None
    assert headline(EXIT) == "fatal: bad token (crashed: managed process exited with code 1)"
    assert headline(DOWN) == "refused: connection refused"
