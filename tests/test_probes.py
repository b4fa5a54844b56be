"""Probes against real MCP servers: good ones (SDK, PyPI) and one misbehaving server per failure class.

Every test talks to a real process over real pipes or sockets; nothing under test is mocked.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.config import ProbeConfig, ServerConfig
from mcp_supervisor.health.model import FailureClass, ProbeKind
from mcp_supervisor.probes import ProbeContext, Prober, create_prober
from tests.servers import http_auth
from tests.servers.fixtures import (
    MCP_SERVER_TIME,
    MISBEHAVE,
    NOTES_SERVER,
    PYTHON,
    TEST_USER,
    ServerProcess,
    children_of,
    free_port,
    kill_pids,
    pid_alive,
    read_pids,
    start_http_server,
    wait_gone,
)

pytestmark = pytest.mark.timeout(60)

MODERN = "2026-07-28"


def stdio(name: str, *args: str, timeout: float = 5.0, **kw: Any) -> ServerConfig:
    kw.setdefault("user", TEST_USER)  # under root: the interpreter lives in /root, which nobody cannot enter
    return ServerConfig(name=name, transport="stdio", command=PYTHON, args=list(args),
                        probe=ProbeConfig(timeout=timeout, **kw.pop("probe", {})), **kw)


def misbehaving(mode: str, pidfile: Path, *, timeout: float = 5.0, **kw: Any) -> ServerConfig:
    return stdio(f"bad-{mode}", str(MISBEHAVE), mode, timeout=timeout,
                 env={"MISBEHAVE_PIDFILE": str(pidfile)}, **kw)


@pytest.fixture
async def context() -> AsyncIterator[ProbeContext]:
    ctx = ProbeContext(max_concurrent_cold=2)
    yield ctx
    await ctx.aclose()


@pytest.fixture
async def probers(context: ProbeContext) -> AsyncIterator[list[Prober]]:
    """Probers made by a test are closed after it, so no warm instance outlives the test."""
    made: list[Prober] = []
    yield made
    for prober in made:
        await prober.aclose()


@pytest.fixture
def pidfile(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pids"
    yield path
    kill_pids([pid for pid in read_pids(path) if pid_alive(pid)])  # only if a test failed


@pytest.fixture(scope="module")
def http_server() -> Iterator[ServerProcess]:
    server = start_http_server("http")
    yield server
    server.stop()


def warm_pid_of(prober: Prober) -> int:
    pid = getattr(prober, "warm_pid", None)
    assert isinstance(pid, int), "the prober keeps a warm instance"
    return pid


def make(probers: list[Prober], context: ProbeContext, server: ServerConfig) -> Prober:
    prober = create_prober(server, context)
    probers.append(prober)
    return prober


# --- good servers ---------------------------------------------------------------------------------


async def test_stdio_cold_warm_tools_on_sdk_server(context: ProbeContext, probers: list[Prober]) -> None:
    prober = make(probers, context, stdio("notes", str(NOTES_SERVER), "stdio"))
    before = set(children_of())

    cold = await prober.probe(ProbeKind.COLD)
    assert cold.ok, cold.message
    assert (cold.server_name, cold.server_version, cold.protocol_version) == ("example-notes", "1.0.0", MODERN)
    assert cold.tool_count == 3
    assert set(cold.phases_ms) == {"spawn", "handshake", "tools"}
    assert not [pid for pid in children_of() if pid not in before], "a cold probe stops what it spawned"

    first = await prober.probe(ProbeKind.WARM)
    assert first.ok and "handshake" in first.phases_ms
    warm_pid = warm_pid_of(prober)
    assert [pid for pid in children_of() if pid not in before] == [warm_pid]
    second = await prober.probe(ProbeKind.WARM)
    assert second.ok and set(second.phases_ms) == {"request"}, "the warm instance is reused"
    tools = await prober.probe(ProbeKind.TOOLS)
    assert tools.ok and tools.tool_count == 3 and tools.degraded is None
    assert warm_pid_of(prober) == warm_pid

    await prober.aclose()
    assert wait_gone([warm_pid], 5) == []


async def test_reference_server_from_pypi(context: ProbeContext, probers: list[Prober]) -> None:
    server = ServerConfig(name="time", transport="stdio", command=str(MCP_SERVER_TIME), user=TEST_USER)
    result = await make(probers, context, server).probe(ProbeKind.COLD)
    assert result.ok, result.message
    assert result.protocol_version == MODERN
    assert result.tool_count is not None and result.tool_count >= 2


@pytest.mark.parametrize(("protocol", "expected"), [("auto", MODERN), ("legacy", "2025-11-25"), (MODERN, MODERN)])
async def test_http_both_protocol_eras(
    context: ProbeContext, probers: list[Prober], http_server: ServerProcess, protocol: str, expected: str
) -> None:
    server = ServerConfig(name="notes-http", transport="http", url=http_server.url, protocol=protocol)
    prober = make(probers, context, server)
    cold = await prober.probe(ProbeKind.COLD)
    assert cold.ok, cold.message
    assert cold.protocol_version == expected and cold.tool_count == 3
    first = await prober.probe(ProbeKind.WARM)
    second = await prober.probe(ProbeKind.WARM)
    assert first.ok and second.ok
    assert second.protocol_version == expected
    assert set(second.phases_ms) == {"request"}, "WARM reuses the kept-open session"


async def test_legacy_sse_server(context: ProbeContext, probers: list[Prober]) -> None:
    sse = start_http_server("sse")
    try:
        prober = make(probers, context, ServerConfig(name="notes-sse", transport="sse", url=sse.url))
        for kind in (ProbeKind.COLD, ProbeKind.WARM, ProbeKind.TOOLS):
            result = await prober.probe(kind)
            assert result.ok, result.message
            assert result.server_name == "example-notes"
        assert result.tool_count == 3
        await prober.aclose()
    finally:
        sse.stop()


async def test_missing_expected_tool_is_degraded_not_failed(
    context: ProbeContext, probers: list[Prober], http_server: ServerProcess
) -> None:
    server = ServerConfig(name="notes-http", transport="http", url=http_server.url,
                          probe=ProbeConfig(expected_tools=["add_note", "delete_note", "search"]))
    result = await make(probers, context, server).probe(ProbeKind.TOOLS)
    assert result.ok
    assert result.degraded is not None and "delete_note" in result.degraded and "search" in result.degraded
    assert "add_note" not in result.degraded
    assert "delete_note" in result.message

    complete = ServerConfig(name="notes-ok", transport="http", url=http_server.url,
                            probe=ProbeConfig(expected_tools=["add_note", "list_notes"]))
    ok = await make(probers, context, complete).probe(ProbeKind.TOOLS)
    assert ok.ok and ok.degraded is None


# --- failure classes --------------------------------------------------------------------------------


async def test_server_that_exits_at_once_is_crashed_with_its_stderr(
    context: ProbeContext, probers: list[Prober], pidfile: Path
) -> None:
    result = await make(probers, context, misbehaving("exit", pidfile)).probe(ProbeKind.COLD)
    assert not result.ok and result.failure is FailureClass.CRASHED
    assert "JIRA_URL is not set" in result.message


async def test_secrets_a_server_prints_are_not_repeated(
    context: ProbeContext, probers: list[Prober], pidfile: Path
) -> None:
    secret = "sk-live-0123456789abcdef"
    server = misbehaving("exit-leak", pidfile)
    server = server.model_copy(update={"env": {**server.env, "API_TOKEN": secret}})
    result = await make(probers, context, server).probe(ProbeKind.COLD)
    assert result.failure is FailureClass.CRASHED
    assert "auth failed with token ***" in result.message
    assert secret not in result.message


async def test_server_that_never_answers_times_out_and_is_stopped(
    context: ProbeContext, probers: list[Prober], pidfile: Path
) -> None:
    result = await make(probers, context, misbehaving("hang", pidfile, timeout=1.0)).probe(ProbeKind.COLD)
    assert not result.ok and result.failure is FailureClass.TIMEOUT
    assert "handshake" in result.message
    assert result.latency_ms >= 1000
    assert wait_gone(read_pids(pidfile), 1.0) == []


async def test_garbage_on_stdout_is_a_protocol_failure(
    context: ProbeContext, probers: list[Prober], pidfile: Path
) -> None:
    result = await make(probers, context, misbehaving("garbage", pidfile, timeout=1.0)).probe(ProbeKind.COLD)
    assert not result.ok and result.failure is FailureClass.PROTOCOL
    assert "not JSON-RPC" in result.message


@pytest.mark.parametrize("protocol", ["auto", "legacy"])
async def test_unsupported_protocol_version_is_a_protocol_failure(
    context: ProbeContext, probers: list[Prober], pidfile: Path, protocol: str
) -> None:
    server = misbehaving("badversion", pidfile, protocol=protocol)
    result = await make(probers, context, server).probe(ProbeKind.COLD)
    assert not result.ok and result.failure is FailureClass.PROTOCOL
    assert "protocol version" in result.message


async def test_command_not_found_is_a_config_failure(context: ProbeContext, probers: list[Prober]) -> None:
    server = ServerConfig(name="nope", transport="stdio", command="/nonexistent/mcp-server-nope")
    for kind in (ProbeKind.COLD, ProbeKind.WARM):
        result = await make(probers, context, server).probe(kind)
        assert not result.ok and result.failure is FailureClass.CONFIG
        assert "/nonexistent/mcp-server-nope" in result.message


async def test_missing_env_is_a_config_failure_without_spawning(
    context: ProbeContext, probers: list[Prober], pidfile: Path
) -> None:
    server = misbehaving("exit", pidfile).model_copy(update={"missing_env": ("JIRA_TOKEN", "JIRA_URL")})
    result = await make(probers, context, server).probe(ProbeKind.COLD)
    assert not result.ok and result.failure is FailureClass.CONFIG
    assert "JIRA_TOKEN" in result.message and "JIRA_URL" in result.message
    assert result.hint is not None and "JIRA_TOKEN" in result.hint
    assert not pidfile.exists(), "nothing was spawned"


async def test_http_401_and_403_are_auth_with_a_hint_and_no_secret(
    context: ProbeContext, probers: list[Prober]
) -> None:
    runner, url = await http_auth.start()
    try:
        bare = ServerConfig(name="gateway", transport="http", url=url)
        result = await make(probers, context, bare).probe(ProbeKind.WARM)
        assert not result.ok and result.failure is FailureClass.AUTH
        assert "401" in result.message

        secret = "sk-very-secret-token-123"
        with_token = ServerConfig(name="gateway2", transport="http", url=url, token_env="GATEWAY_TOKEN",
                                  headers={"Authorization": f"Bearer {secret}"})
        for kind in (ProbeKind.COLD, ProbeKind.WARM, ProbeKind.TOOLS):
            result = await make(probers, context, with_token).probe(kind)
            assert not result.ok and result.failure is FailureClass.AUTH
            assert "403" in result.message
            assert result.hint is not None
            assert "GATEWAY_TOKEN" in result.hint and "Authorization" in result.hint and "renew" in result.hint
            assert secret not in result.message + result.hint
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("transport", "path", "failure", "words"),
    [
        ("sse", "/sse", FailureClass.AUTH, "401"),
        ("http", "/html", FailureClass.PROTOCOL, "text/html"),
        ("sse", "/html", FailureClass.PROTOCOL, "not an MCP SSE endpoint"),
        ("http", "/hang", FailureClass.TIMEOUT, "handshake"),
    ],
)
async def test_misbehaving_http_endpoints(
    context: ProbeContext, probers: list[Prober], transport: str, path: str, failure: FailureClass, words: str
) -> None:
    runner, url = await http_auth.start()
    try:
        server = ServerConfig(name="odd", transport=transport,  # type: ignore[arg-type]
                              url=url.rsplit("/", 1)[0] + path, probe=ProbeConfig(timeout=1.0))
        result = await make(probers, context, server).probe(ProbeKind.COLD)
        assert not result.ok and result.failure is failure
        assert words in result.message
    finally:
        await runner.cleanup()


async def test_unresolvable_host_is_a_config_failure(context: ProbeContext, probers: list[Prober]) -> None:
    server = ServerConfig(name="typo", transport="http", url="http://mcp-host-that-does-not-exist.invalid/mcp",
                          probe=ProbeConfig(timeout=3.0))
    result = await make(probers, context, server).probe(ProbeKind.WARM)
    assert not result.ok and result.failure in (FailureClass.CONFIG, FailureClass.TIMEOUT)
    if result.failure is FailureClass.CONFIG:
        assert "url" in result.message


async def test_closed_port_is_refused(context: ProbeContext, probers: list[Prober]) -> None:
    server = ServerConfig(name="gone", transport="http", url=f"http://127.0.0.1:{free_port()}/mcp")
    for kind in (ProbeKind.COLD, ProbeKind.WARM):
        result = await make(probers, context, server).probe(kind)
        assert not result.ok and result.failure is FailureClass.REFUSED


# --- warm instances and sessions ------------------------------------------------------------------


async def test_dead_warm_stdio_instance_is_crashed_then_respawned(
    context: ProbeContext, probers: list[Prober]
) -> None:
    prober = make(probers, context, stdio("notes", str(NOTES_SERVER), "stdio"))
    assert (await prober.probe(ProbeKind.WARM)).ok
    pid = warm_pid_of(prober)
    os.kill(pid, signal.SIGKILL)
    assert wait_gone([pid], 5) == []

    crashed = await prober.probe(ProbeKind.WARM)
    assert not crashed.ok and crashed.failure is FailureClass.CRASHED

    again = await prober.probe(ProbeKind.WARM)
    assert again.ok, again.message
    assert warm_pid_of(prober) != pid


@pytest.mark.parametrize("protocol", ["auto", "legacy"])
async def test_http_warm_session_survives_a_server_restart(
    context: ProbeContext, probers: list[Prober], protocol: str
) -> None:
    server = start_http_server("http")
    try:
        config = ServerConfig(name="notes-http", transport="http", url=server.url, protocol=protocol,
                              probe=ProbeConfig(timeout=3))
        prober = make(probers, context, config)
        assert (await prober.probe(ProbeKind.WARM)).ok

        # restarted between two probes: the old session is unknown to the new process (404)
        server.stop()
        server = start_http_server("http", port=server.port)
        after_restart = await prober.probe(ProbeKind.WARM)
        assert after_restart.ok, after_restart.message

        server.stop()
        down = await prober.probe(ProbeKind.WARM)
        assert not down.ok and down.failure is FailureClass.REFUSED
        server = start_http_server("http", port=server.port)
        back = await prober.probe(ProbeKind.WARM)
        assert back.ok, back.message
        await prober.aclose()
    finally:
        server.stop()


# --- nothing left behind ------------------------------------------------------------------------------


async def test_timeout_kills_a_server_that_ignores_sigterm_and_its_child(
    context: ProbeContext, probers: list[Prober], pidfile: Path
) -> None:
    prober = make(probers, context, misbehaving("hang-ignore-term", pidfile, timeout=1.0))
    result = await prober.probe(ProbeKind.COLD)
    assert result.failure is FailureClass.TIMEOUT
    pids = read_pids(pidfile)
    assert len(pids) == 2
    assert wait_gone(pids, 1.0) == [], "the process group is gone when the probe returns"


async def test_closing_a_warm_instance_that_ignores_sigterm_leaves_nothing(
    context: ProbeContext, probers: list[Prober], pidfile: Path
) -> None:
    prober = make(probers, context, misbehaving("ignore-term", pidfile))
    result = await prober.probe(ProbeKind.WARM)
    assert result.ok, result.message
    pids = read_pids(pidfile)
    assert len(pids) == 2 and all(pid_alive(pid) for pid in pids)
    await prober.aclose()
    assert wait_gone(pids, 1.0) == []


async def _wait_for_pids(pidfile: Path, count: int, timeout: float = 10.0) -> list[int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(pids := read_pids(pidfile)) < count:
        assert loop.time() < deadline, f"server did not start: {pids}"
        await asyncio.sleep(0.02)
    return pids


@pytest.mark.parametrize("kind", [ProbeKind.COLD, ProbeKind.WARM])
async def test_cancelled_probe_leaves_no_process(
    context: ProbeContext, probers: list[Prober], pidfile: Path, kind: ProbeKind
) -> None:
    prober = make(probers, context, misbehaving("hang-ignore-term", pidfile, timeout=30.0))
    task = asyncio.create_task(prober.probe(kind))
    pids = await _wait_for_pids(pidfile, 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_gone(pids, 1.0) == [], "cancellation waits for the process group to be gone"


async def test_outer_timeout_leaves_no_process_and_prober_still_works(
    context: ProbeContext, probers: list[Prober], pidfile: Path
) -> None:
    prober = make(probers, context, misbehaving("ignore-term", pidfile, timeout=30.0))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):  # cancels while the server is still importing the SDK
            await prober.probe(ProbeKind.WARM)
    assert wait_gone(read_pids(pidfile), 1.0) == []

    result = await prober.probe(ProbeKind.WARM)
    assert result.ok, result.message
    await prober.aclose()
    assert wait_gone(read_pids(pidfile), 1.0) == []


async def test_cold_spawns_are_limited_by_the_context(probers: list[Prober], pidfile: Path) -> None:
    ctx = ProbeContext(max_concurrent_cold=1)
    try:
        servers = [misbehaving("hang", pidfile, timeout=1.0).model_copy(update={"name": f"h{i}"}) for i in range(2)]
        ps = [make(probers, ctx, s) for s in servers]
        tasks = [asyncio.create_task(p.probe(ProbeKind.COLD)) for p in ps]
        first, _second = await _wait_for_pids(pidfile, 2)
        assert not pid_alive(first), "the second spawn waited until the first instance was gone"
        results = await asyncio.gather(*tasks)
        assert all(r.failure is FailureClass.TIMEOUT for r in results)
    finally:
        await ctx.aclose()


async def test_cold_probe_defers_to_a_warm_check_when_spawn_slots_stay_busy(
    probers: list[Prober], tmp_path: Path
) -> None:
    ctx = ProbeContext(max_concurrent_cold=1)
    slow_pids, quick_pids = tmp_path / "slow", tmp_path / "quick"
    try:
        holder = make(probers, ctx, misbehaving("hang", slow_pids, timeout=2.0))
        waiter = make(probers, ctx, misbehaving("hang", quick_pids, timeout=0.3))
        holding = asyncio.create_task(holder.probe(ProbeKind.COLD))
        await _wait_for_pids(slow_pids, 1)
        result = await waiter.probe(ProbeKind.COLD)
        assert result.kind is ProbeKind.WARM and "cold spawn deferred" in result.message
        assert result.failure is FailureClass.TIMEOUT, "the deferred check still reports what it saw"
        assert (await holding).failure is FailureClass.TIMEOUT
        assert wait_gone(read_pids(slow_pids) + read_pids(quick_pids), 1.0) == []
    finally:
        await ctx.aclose()


async def test_stdio_legacy_handshake_era(context: ProbeContext, probers: list[Prober]) -> None:
    prober = make(probers, context, stdio("notes-legacy", str(NOTES_SERVER), "stdio", protocol="legacy"))
    for kind in (ProbeKind.WARM, ProbeKind.WARM, ProbeKind.TOOLS):
        result = await prober.probe(kind)
        assert result.ok, result.message
        assert result.protocol_version == "2025-11-25"
    assert result.tool_count == 3
