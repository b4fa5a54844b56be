"""Rate limits are answers, not outages: the pure rules (classification, wait, the machine's step)."""

from __future__ import annotations

import random

import pytest
from mcp.shared.exceptions import MCPError

from mcp_supervisor.health.machine import ServerMachine
from mcp_supervisor.health.model import Action, FailureClass, Notify, ProbeResult, Restart, State, Transition
from mcp_supervisor.health.policy import Policy
from mcp_supervisor.health.ratelimit import MAX_WAIT, rate_limit_wait
from mcp_supervisor.probes.classify import Observed, classify
from mcp_supervisor.probes.ratelimit import limited_text, parse_retry_after

POLICY = Policy(failure_threshold=2, probe_interval=5.0, can_restart=True, max_attempts=3)
OK = ProbeResult(ok=True, latency_ms=3.0)
DOWN = ProbeResult(ok=False, failure=FailureClass.REFUSED, message="connection refused")


def limited(retry_after: float | None = 5.0, message: str = "rate limited until 09:04:10: slow down") -> ProbeResult:
    return ProbeResult(ok=False, failure=FailureClass.RATE_LIMITED, message=message, retry_after=retry_after)


@pytest.mark.parametrize(
    ("obs", "error", "words", "wait"),
    [
        (Observed("http", statuses=[429], limits=[("5", '{"error": "slow down"}')]),
         MCPError(-32603, "Server returned an error response"), "slow down", 5.0),
        (Observed("http", statuses=[429], limits=[(None, "Too Many Requests")]),
         MCPError(-32603, "Server returned an error response"), "Too Many Requests", None),
        (Observed("http", statuses=[429]), MCPError(-32603, "x"), "HTTP 429 Too Many Requests", None),
        (Observed("http", statuses=[200]), MCPError(-32029, "quota", {"retryAfter": 12}), "quota", 12.0),
        (Observed("stdio"), MCPError(-32000, "Rate limit exceeded, try later"), "Rate limit exceeded, try later", None),
        (Observed("http", statuses=[429, 401], limits=[("7", '{"jsonrpc":"2.0","id":1,"error":{"code":429,'
                                                               '"message":"too many requests for key"}}')]),
         MCPError(-32603, "x"), "too many requests for key", 7.0),
    ],
)
def test_rate_limit_shapes_are_their_own_class(obs: Observed, error: MCPError, words: str, wait: float | None) -> None:
    verdict = classify(error, obs, phase="request")
    assert verdict.failure is FailureClass.RATE_LIMITED
    assert verdict.message == words
    assert verdict.retry_after == wait


def test_other_errors_are_not_rate_limits() -> None:
    assert classify(MCPError(-32000, "database locked"), Observed("stdio"), phase="request").failure is not (
        FailureClass.RATE_LIMITED)


@pytest.mark.parametrize(
    ("value", "wait"),
    [("5", 5.0), (" 120 ", 120.0), (None, None), ("soon", None), ("Thu, 01 Jan 1970 00:01:40 GMT", 40.0)],
)
def test_retry_after_seconds_or_date(value: str | None, wait: float | None) -> None:
    assert parse_retry_after(value, now=60.0) == wait


@pytest.mark.parametrize(("retry_after", "wait"), [(5.0, 5.0), (None, 15.0), (10_000.0, MAX_WAIT), (-3.0, 0.0)])
def test_wait_is_retry_after_capped(retry_after: float | None, wait: float) -> None:
    assert rate_limit_wait(retry_after, probe_interval=5.0) == wait


def test_status_text_names_the_time_and_the_words() -> None:
    text = limited_text("slow down", 5.0, 5.0, now=0.0)
    assert text.startswith("rate limited until ") and text.endswith(": slow down")
    assert "no Retry-After" in limited_text("slow down", None, 5.0, now=0.0)


def _moves(actions: list[Action]) -> list[tuple[State, State]]:
    return [(a.old, a.new) for a in actions if isinstance(a, Transition)]


def test_a_long_rate_limit_is_one_state_no_failure_no_restart_no_alert() -> None:
    machine = ServerMachine(POLICY, 0.0, random.Random(1))
    machine.on_probe(OK, 0.0)
    actions: list[Action] = []
    for t in range(5, 35, 5):  # 30 s of 429s with Retry-After: 5, far past failure_threshold
        actions += machine.on_probe(limited(), float(t))
    assert _moves(actions) == [(State.HEALTHY, State.RATE_LIMITED)]
    assert not [a for a in actions if isinstance(a, Restart | Notify)]
    assert machine.state is State.RATE_LIMITED and machine.reason.startswith("rate limited until")
    assert machine.hold_until == 35.0
    assert _moves(machine.on_probe(OK, 40.0)) == [(State.RATE_LIMITED, State.HEALTHY)]


def test_a_real_outage_while_rate_limited_still_counts() -> None:
    machine = ServerMachine(POLICY, 0.0, random.Random(1))
    machine.on_probe(OK, 0.0)
    machine.on_probe(limited(), 1.0)
    actions = machine.on_probe(DOWN, 10.0) + machine.on_probe(DOWN, 11.0)
    assert (State.RATE_LIMITED, State.FAILED) in _moves(actions)


def test_failures_before_a_429_do_not_add_up_with_failures_after_it() -> None:
    machine = ServerMachine(POLICY, 0.0, random.Random(1))
    machine.on_probe(OK, 0.0)
    machine.on_probe(DOWN, 1.0)
    machine.on_probe(limited(), 2.0)
    assert machine.on_probe(DOWN, 8.0) == [] and machine.state is State.RATE_LIMITED


def test_in_an_incident_an_answer_ends_it_without_another_restart() -> None:
    watched = Policy(failure_threshold=2, probe_interval=5.0)  # nothing can act: failed stays failed
    machine = ServerMachine(watched, 0.0, random.Random(1))
    machine.on_probe(OK, 0.0)
    machine.on_probe(DOWN, 1.0)
    machine.on_probe(DOWN, 2.0)
    assert machine.state is State.FAILED
    actions = machine.on_probe(limited(None), 3.0)
    assert _moves(actions) == [(State.FAILED, State.HEALTHY), (State.HEALTHY, State.RATE_LIMITED)]
    assert not [a for a in actions if isinstance(a, Restart)]
    assert machine.hold_until == 3.0 + 15.0


def test_a_restart_in_flight_decides_before_an_answer() -> None:
    machine = ServerMachine(POLICY, 0.0, random.Random(1))
    machine.on_probe(OK, 0.0)
    machine.on_probe(DOWN, 1.0)
    machine.on_probe(DOWN, 2.0)
    assert machine.busy()
    assert machine.on_probe(limited(), 3.0) == []


def test_a_drifted_server_stays_drifted_through_a_429_and_heals_on_a_success() -> None:
    drifted = ProbeResult(ok=False, failure=FailureClass.DRIFTED, message="changed search: input schema")
    machine = ServerMachine(POLICY, 0.0, random.Random(1))
    machine.on_probe(OK, 0.0)
    assert _moves(machine.on_probe(drifted, 1.0)) == [(State.HEALTHY, State.DRIFTED)]
    assert machine.on_probe(limited(), 2.0) == [] and machine.state is State.DRIFTED
    assert machine.on_probe(drifted, 9.0) == [] and "search" in machine.reason
    assert _moves(machine.on_probe(OK, 10.0)) == [(State.DRIFTED, State.HEALTHY)]


def test_a_deep_check_answered_with_a_rate_limit_is_rate_limited() -> None:
    from mcp_supervisor.config import DeepCheck
    from mcp_supervisor.proxy.checks import judge

    answer = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "Rate limit exceeded: 100/min"}],
                                                    "isError": True}}
    cls, why = judge(DeepCheck(tool="search"), answer)
    assert cls is FailureClass.RATE_LIMITED and "Rate limit exceeded: 100/min" in why


def test_ready_says_ready_with_the_warning() -> None:
    from mcp_supervisor.cli.render import ready_line

    line = ready_line({"ready": True, "rate_limited": [{"name": "jira", "reason": "rate limited until 09:04:10: slow"}]})
    assert line == "ready; warning: jira is rate limited until 09:04:10: slow"
