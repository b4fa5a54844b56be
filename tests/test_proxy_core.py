"""The proxy's sans-I/O session core: a table of events and a hypothesis run over random histories."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_supervisor.proxy.actions import Connect, Deliver, Link, Send
from mcp_supervisor.proxy.core import SessionCore
from mcp_supervisor.proxy.limits import RATE_LIMITED
from mcp_supervisor.proxy.safety import ToolSafety
from mcp_supervisor.proxy.wire import BACKEND_UNAVAILABLE, NOT_RETRIED

TOOLS = {"tools": [
    {"name": "search", "annotations": {"readOnlyHint": True}},
    {"name": "upsert", "annotations": {"idempotentHint": True}},
    {"name": "pay", "annotations": {"destructiveHint": True}},
    {"name": "plain"},
]}


def call(request_id: Any, tool: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": tool, "arguments": {}}}


def core(era: str = "modern", retry: tuple[str, ...] = ()) -> SessionCore:
    safety = ToolSafety(retry_patterns=retry)
    safety.learn(TOOLS)
    return SessionCore(era=era, server="srv", hold=30.0, safety=safety)


def sends(actions: list[Any]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def finals(actions: list[Any]) -> list[Deliver]:
    return [a for a in actions if isinstance(a, Deliver) and a.final]


def test_safety_rule() -> None:
    safety = ToolSafety(retry_patterns=("search_*",))
    safety.learn(TOOLS)
    assert safety.request_is_safe("resources/read", {"uri": "x"})
    assert safety.request_is_safe("tools/call", {"name": "search"})
    assert safety.request_is_safe("tools/call", {"name": "upsert"})
    assert safety.request_is_safe("tools/call", {"name": "search_issues"})  # configured, not annotated
    assert not safety.request_is_safe("tools/call", {"name": "pay"})
    assert not safety.request_is_safe("tools/call", {"name": "plain"})
    assert not safety.request_is_safe("tools/call", {"name": "never-listed"})


def test_first_request_connects_then_forwards_with_a_backend_id() -> None:
    c = core()
    key, actions = c.on_request(call("a", "search"), 0.0)
    assert actions == [Connect(1)]
    actions = c.on_link_up(1, 0.01)
    [send] = sends(actions)
    assert send.message["id"] != "a" and send.key == key
    [answer] = finals(c.on_backend(1, {"jsonrpc": "2.0", "id": send.message["id"], "result": {"ok": 1}}, None, 0.02))
    assert answer.message == {"jsonrpc": "2.0", "id": "a", "result": {"ok": 1}} and answer.key == key
    assert c.stats.held == 0  # waiting for the first connection is not a hold


def test_safe_call_in_flight_is_retried_after_the_restart_unsafe_one_gets_the_honest_error() -> None:
    c = core()
    c.on_request(call(1, "search"), 0.0)
    c.on_link_up(1, 0.0)
    c.on_request(call(2, "pay"), 0.1)
    actions = c.on_link_lost(1, 0.5)
    [failed] = finals(actions)
    assert failed.message["id"] == 2 and failed.message["error"]["code"] == NOT_RETRIED
    text = failed.message["error"]["message"]
    assert "'pay'" in text and "backend restarted during the call; not retried because it may have taken effect" in text
    assert Connect(2) in actions
    resend = sends(c.on_link_up(2, 1.1))
    assert [s.message["params"]["name"] for s in resend] == ["search"]
    [done] = finals(c.on_backend(2, {"jsonrpc": "2.0", "id": resend[0].message["id"], "result": {}}, None, 1.2))
    assert done.message["id"] == 1
    assert (c.stats.held, c.stats.retried, c.stats.failed) == (1, 1, 1)
    assert abs(c.stats.max_held - 0.6) < 1e-9


def test_unsafe_call_that_never_reached_the_backend_is_sent_again() -> None:
    c = core()
    c.on_request(call(1, "pay"), 0.0)
    [send] = sends(c.on_link_up(1, 0.0))
    assert finals(c.on_link_lost(1, 0.1, unsent=send.message["id"])) == []
    assert [s.message["params"]["name"] for s in sends(c.on_link_up(2, 0.2))] == ["pay"]


def test_a_late_answer_from_the_old_backend_is_ignored() -> None:
    c = core()
    c.on_request(call(1, "search"), 0.0)
    [old] = sends(c.on_link_up(1, 0.0))
    c.on_link_lost(1, 0.1)
    assert c.on_backend(1, {"jsonrpc": "2.0", "id": old.message["id"], "result": {}}, None, 0.2) == []
    assert 1 in {call.client_id for call in c.calls.values()}


def test_past_the_hold_the_error_names_the_state() -> None:
    c = core()
    c.on_request(call(1, "search"), 0.0)
    c.on_link_up(1, 0.0)
    c.on_link_lost(1, 1.0)
    assert c.next_deadline() == 31.0
    assert c.on_timer(30.9, "backoff") == []
    [expired] = finals(c.on_timer(31.0, "backoff: crashed (exited with code 1)"))
    assert expired.message["error"]["code"] == BACKEND_UNAVAILABLE
    assert "within 30 s" in expired.message["error"]["message"]
    assert "backoff: crashed (exited with code 1)" in expired.message["error"]["message"]
    assert c.next_deadline() is None


def test_legacy_session_rehandshakes_with_the_clients_params_and_restores_subscriptions() -> None:
    c = core("legacy")
    params = {"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}}, "clientInfo": {"name": "job"}}
    init_key, actions = c.on_request({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}, 0.0)
    assert actions == [Connect(1)]
    [handshake] = sends(c.on_link_up(1, 0.0))
    assert handshake.message["method"] == "initialize" and handshake.message["params"] == params
    actions = c.on_backend(1, {"jsonrpc": "2.0", "id": handshake.message["id"], "result": {"protocolVersion": "2025-06-18"}},
                           None, 0.1)
    assert sends(actions)[0].message["method"] == "notifications/initialized"
    [reply] = finals(actions)
    assert reply.key == init_key and reply.message["id"] == 0
    assert c.on_notification({"jsonrpc": "2.0", "method": "notifications/initialized"}, 0.1) == []
    _, actions = c.on_request({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": "u://a"}}, 0.2)
    c.on_backend(1, {"jsonrpc": "2.0", "id": sends(actions)[0].message["id"], "result": {}}, None, 0.3)
    _, actions = c.on_request({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, 0.4)
    c.on_link_lost(1, 0.5)
    [again] = sends(c.on_link_up(2, 1.0))
    assert again.message["params"] == params
    actions = c.on_backend(2, {"jsonrpc": "2.0", "id": again.message["id"], "result": {}}, None, 1.1)
    methods = [s.message["method"] for s in sends(actions)]
    assert methods == ["notifications/initialized", "resources/subscribe", "tools/list"]
    assert finals(actions) == []  # the client's initialize was answered once, long ago
    assert c.link is Link.UP


def test_a_handshake_that_never_happens_is_answered_at_the_hold_and_not_retried_forever() -> None:
    c = core("legacy")
    c.on_request({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}, 0.0)
    assert c.on_link_failed(1, 0.1) == [] and c.next_deadline() == 30.0
    [expired] = finals(c.on_timer(30.0, "its state is failed"))
    assert expired.message["id"] == 0 and "its state is failed" in expired.message["error"]["message"]
    assert not c.wants_link


def test_server_to_client_request_round_trip_and_a_stale_answer_is_dropped() -> None:
    c = core("legacy")
    c.on_request({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}, 0.0)
    [hs] = sends(c.on_link_up(1, 0.0))
    c.on_backend(1, {"jsonrpc": "2.0", "id": hs.message["id"], "result": {}}, None, 0.0)
    _, actions = c.on_request(call(5, "search"), 0.1)
    backend_id = sends(actions)[0].message["id"]
    [ask] = c.on_backend(1, {"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {}}, backend_id, 0.2)
    assert isinstance(ask, Deliver) and not ask.final and ask.key is not None
    [forward] = c.on_client_response({"jsonrpc": "2.0", "id": ask.message["id"], "result": {"x": 1}})
    assert forward.message["id"] == "s1"
    [ask2] = c.on_backend(1, {"jsonrpc": "2.0", "id": "s2", "method": "roots/list"}, None, 0.3)
    assert isinstance(ask2, Deliver) and ask2.key is None  # no related call: the session stream
    c.on_link_lost(1, 0.4)
    assert c.on_client_response({"jsonrpc": "2.0", "id": ask2.message["id"], "result": {}}) == []


def test_cancel_forwards_with_the_backend_id_and_ends_the_call() -> None:
    c = core()
    key, _ = c.on_request(call("x", "search"), 0.0)
    [send] = sends(c.on_link_up(1, 0.0))
    actions = c.on_notification({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "x"}}, 0.1)
    assert sends(actions)[0].message["params"]["requestId"] == send.message["id"]
    assert finals(actions)[0].key == key
    assert c.on_backend(1, {"jsonrpc": "2.0", "id": send.message["id"], "result": {}}, None, 0.2) == []


def test_a_client_that_goes_away_cancels_its_backend_call_in_its_eras_way() -> None:
    from mcp_supervisor.proxy.actions import Abandon

    c = core()
    key, _ = c.on_request(call(1, "search"), 0.0)
    [send] = sends(c.on_link_up(1, 0.0))
    assert c.on_client_gone(key) == [Abandon(send.message["id"], 1)]  # 2026 era: close its POST
    legacy = core("legacy")
    legacy.on_request({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}, 0.0)
    [hs] = sends(legacy.on_link_up(1, 0.0))
    legacy.on_backend(1, {"jsonrpc": "2.0", "id": hs.message["id"], "result": {}}, None, 0.0)
    key, actions = legacy.on_request(call(2, "search"), 0.1)
    [cancel] = sends(legacy.on_client_gone(key))
    assert cancel.message["method"] == "notifications/cancelled"
    assert cancel.message["params"]["requestId"] == sends(actions)[0].message["id"]


def test_progress_goes_to_the_call_that_asked_for_it() -> None:
    c = core()
    request = call(1, "search")
    request["params"]["_meta"] = {"progressToken": "p1"}
    key, _ = c.on_request(request, 0.0)
    c.on_link_up(1, 0.0)
    note = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "p1", "progress": 1}}
    [delivered] = c.on_backend(1, note, None, 0.1)
    assert isinstance(delivered, Deliver) and delivered.key == key and not delivered.final


# --- properties ----------------------------------------------------------------------------

TOOL_NAMES = ["search", "upsert", "pay", "plain"]
events = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.sampled_from(TOOL_NAMES)),
        st.tuples(st.just("answer"), st.integers(0, 5)),
        st.tuples(st.just("lost"), st.booleans()),
        st.tuples(st.just("up"), st.just(0)),
        st.tuples(st.just("failed"), st.just(0)),
        st.tuples(st.just("tick"), st.floats(0.0, 40.0)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(events, st.sampled_from(["modern", "legacy"]))
def test_every_call_answered_once_and_unsafe_calls_never_reach_a_backend_twice(history: list[Any], era: str) -> None:
    c = core(era)
    now = 0.0
    finals_by_key: dict[int, int] = {}
    reached: dict[int, int] = {}  # key -> sends that may have reached a backend
    in_flight: dict[int, int] = {}  # backend id -> key
    unsafe_keys: set[int] = set()
    keys: set[int] = set()
    pending_connect: int | None = None

    def apply(actions: list[Any]) -> None:
        nonlocal pending_connect
        for action in actions:
            if isinstance(action, Connect):
                pending_connect = action.generation
            elif isinstance(action, Send) and action.key is not None:
                reached[action.key] = reached.get(action.key, 0) + 1
                in_flight[action.message["id"]] = action.key
            elif isinstance(action, Send) and action.message.get("method") == "initialize":
                in_flight[action.message["id"]] = -1
            elif isinstance(action, Deliver) and action.final and action.key is not None:
                finals_by_key[action.key] = finals_by_key.get(action.key, 0) + 1

    if era == "legacy":
        key, actions = c.on_request({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {}}, now)
        keys.add(key)
        apply(actions)
    for index, (kind, arg) in enumerate(history):
        now += 0.1
        if kind == "request":
            key, actions = c.on_request(call(f"r{index}", arg), now)
            keys.add(key)
            if arg in ("pay", "plain"):
                unsafe_keys.add(key)
            apply(actions)
        elif kind == "answer" and in_flight:
            backend_id = sorted(in_flight)[arg % len(in_flight)]
            in_flight.pop(backend_id)
            apply(c.on_backend(c.generation, {"jsonrpc": "2.0", "id": backend_id, "result": {}}, None, now))
        elif kind == "lost" and c.link in (Link.UP, Link.HANDSHAKE):
            unsent = None
            if arg and in_flight:
                unsent = max(in_flight)
                key = in_flight[unsent]
                if key in reached:
                    reached[key] -= 1  # the refused send never reached the backend
            in_flight.clear()
            apply(c.on_link_lost(c.generation, now, unsent))
        elif kind == "up" and pending_connect is not None:
            apply(c.on_link_up(pending_connect, now))
            pending_connect = None
        elif kind == "failed" and pending_connect is not None:
            apply(c.on_link_failed(pending_connect, now))
            pending_connect = None
            if c.wants_link:
                apply(c._connect())
        elif kind == "tick":
            now += arg
            apply(c.on_timer(now, "backoff"))
        assert all(count <= 1 for count in finals_by_key.values())
        assert all(reached.get(key, 0) <= 1 for key in unsafe_keys)
    # drain: the backend comes back and answers everything; past the hold nothing is left open
    for _ in range(4):
        if pending_connect is not None:
            apply(c.on_link_up(pending_connect, now))
            pending_connect = None
        while in_flight:
            backend_id = min(in_flight)
            in_flight.pop(backend_id)
            apply(c.on_backend(c.generation, {"jsonrpc": "2.0", "id": backend_id, "result": {}}, None, now))
    now += 100.0
    apply(c.on_timer(now, "backoff"))
    assert all(finals_by_key.get(key) == 1 for key in keys), (finals_by_key, keys, c.calls)
    assert all(reached.get(key, 0) <= 1 for key in unsafe_keys)
    assert not c.calls


# --- deep check verdicts, config refusals, the token file ----------------------------------


def test_deep_check_verdicts() -> None:
    from mcp_supervisor.config import DeepCheck
    from mcp_supervisor.health.model import FailureClass
    from mcp_supervisor.proxy.checks import judge

    check = DeepCheck(tool="search", expect="^found")

    def result(text: str, is_error: bool = False) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": text}], "isError": is_error}}

    assert judge(check, result("found 3 issues")) == (None, "found 3 issues")
    cls, why = judge(check, result("nothing"))
    assert cls is FailureClass.CHECK and "does not match" in why
    cls, why = judge(check, result("upstream 502 Bad Gateway", is_error=True))
    assert cls is FailureClass.CHECK and "upstream 502 Bad Gateway" in why
    for text in ("401 Unauthorized", "the token has expired", "Invalid API key", "403 Forbidden"):
        assert judge(check, result(text, is_error=True))[0] is FailureClass.AUTH, text
    cls, why = judge(check, {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "unknown tool"}})
    assert cls is FailureClass.CHECK and "unknown tool" in why


def test_proxy_config_refusals_name_the_fix(tmp_path: Any) -> None:
    import pytest

    from mcp_supervisor.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config('[proxy]\nlisten = "0.0.0.0:8766"\n', tmp_path / "c.toml")
    assert "loopback only" in str(caught.value) and "[proxy] listen" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_config('[[servers]]\nname = "a"\ntransport = "http"\nurl = "http://x/mcp"\nstandby = 1\n',
                     tmp_path / "c.toml")
    assert "standby = 1 works for stdio servers only" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_config('[[servers]]\nname = "a"\ntransport = "http"\nurl = "http://x/mcp"\n'
                     '[[servers.checks]]\ntool = "t"\nexpect = "("\n', tmp_path / "c.toml")
    assert "not a regular expression" in str(caught.value)


def test_token_file_is_made_private_and_a_readable_one_is_refused(tmp_path: Any) -> None:
    import pytest

    from mcp_supervisor.proxy.token import TokenFileError, bearer_ok, ensure_token

    path = tmp_path / "state" / "proxy.token"
    token = ensure_token(path)
    assert ensure_token(path) == token and path.stat().st_mode & 0o777 == 0o600
    assert bearer_ok(f"Bearer {token}", token) and not bearer_ok("Bearer nope", token) and not bearer_ok(None, token)
    path.chmod(0o644)
    with pytest.raises(TokenFileError, match="chmod 600"):
        ensure_token(path)
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(TokenFileError):
        ensure_token(path)


def _limited(backend_id: int, retry_after: float | None) -> dict[str, Any]:
    data: dict[str, Any] = {"status": 429} if retry_after is None else {"status": 429, "retryAfter": retry_after}
    return {"jsonrpc": "2.0", "id": backend_id, "error": {"code": -32029, "message": "slow down", "data": data}}


def test_a_429_holds_a_safe_call_until_retry_after_and_answers_an_unsafe_one_with_when_it_lifts() -> None:
    c = core()
    c.on_request(call(1, "search"), 0.0)
    c.on_link_up(1, 0.0)
    c.on_request(call(2, "pay"), 0.0)
    c.on_request(call(3, "upsert"), 0.0)
    [search_send] = [k for k, v in c._by_backend.items() if v == 1]
    assert finals(c.on_backend(1, _limited(search_send, 2.0), None, 0.1)) == []  # held, not an error
    assert c.next_deadline() == 2.1
    [pay_send] = [k for k, v in c._by_backend.items() if v == 2]
    [refused] = finals(c.on_backend(1, _limited(pay_send, 2.0), None, 0.2))
    text = refused.message["error"]["message"]
    assert refused.message["error"]["code"] == RATE_LIMITED and "'pay'" in text and "slow down" in text
    assert "rate limited until" in text and "not marked safe to repeat" in text
    assert sends(c.on_request(call(4, "search"), 0.5)) == []  # the server is still limited: wait with the others
    assert sends(c.on_timer(1.0, "rate_limited")) == []
    resent = sends(c.on_timer(2.2, "rate_limited"))
    assert [s.message["params"]["name"] for s in resent] == ["search", "search"]
    for send in resent:
        c.on_backend(1, {"jsonrpc": "2.0", "id": send.message["id"], "result": {}}, None, 2.3)
    assert (c.stats.held, c.stats.retried, c.stats.failed) == (2, 1, 1)


def test_a_limit_longer_than_the_hold_is_answered_at_once() -> None:
    c = core()
    c.note_limit(100.0, "quota exceeded")
    c.on_request(call(1, "search"), 0.0)
    [answer] = finals(c.on_link_up(1, 0.0))
    assert answer.message["id"] == 1 and "past the proxy's hold of 30 s" in answer.message["error"]["message"]
    assert "quota exceeded" in answer.message["error"]["message"]
    assert sends(c.on_request(call(2, "pay"), 1.0)[1])  # an unsafe call goes to the server: it decides
