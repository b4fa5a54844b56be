"""The pure failure classification: the shapes the SDK reports faults in, mapped to classes."""

from __future__ import annotations

import httpx2
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, UNSUPPORTED_PROTOCOL_VERSION

from mcp_supervisor.health.model import FailureClass
from mcp_supervisor.probes.classify import Observed, classify, leaves, missing_tools


def test_nested_exception_groups_are_unwrapped() -> None:
    inner = httpx2.ConnectError("All connection attempts failed")
    exc = BaseExceptionGroup("outer", [ExceptionGroup("inner", [inner])])
    assert leaves(exc) == [inner]
    assert classify(exc, Observed("http"), phase="handshake").failure is FailureClass.REFUSED


def test_recorded_401_wins_over_the_generic_sdk_error() -> None:
    obs = Observed("http", statuses=[401], headers=("Authorization",), token_env="JIRA_TOKEN")
    verdict = classify(MCPError(-32600, "Server returned an error response"), obs, phase="handshake")
    assert verdict.failure is FailureClass.AUTH
    assert verdict.hint is not None and "JIRA_TOKEN" in verdict.hint and "renew" in verdict.hint


def test_connection_closed_is_crashed_for_stdio_with_stderr_tail() -> None:
    obs = Observed("stdio", stderr_tail="ModuleNotFoundError: No module named 'jira'")
    verdict = classify(ExceptionGroup("g", [MCPError(CONNECTION_CLOSED, "Connection closed")]), obs, phase="handshake")
    assert verdict.failure is FailureClass.CRASHED
    assert "No module named 'jira'" in verdict.message


def test_version_mismatch_is_protocol() -> None:
    verdict = classify(MCPError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported"), Observed("http"), phase="handshake")
    assert verdict.failure is FailureClass.PROTOCOL and "protocol version" in verdict.message


def test_timeout_after_garbage_is_protocol() -> None:
    obs = Observed("stdio", garbage=["ValidationError: Invalid JSON 'Loading...'"])
    assert classify(TimeoutError(), obs, phase="handshake").failure is FailureClass.PROTOCOL
    assert classify(TimeoutError(), Observed("stdio"), phase="handshake").failure is FailureClass.TIMEOUT


def test_missing_tools_keeps_the_configured_order() -> None:
    assert missing_tools(["b", "a", "c"], ["a"]) == ["b", "c"]
