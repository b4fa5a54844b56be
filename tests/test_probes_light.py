"""The light warm check (probes/light.py) against a real SDK server, both protocol eras.

A recording proxy (tests/servers/http_proxy.py) sits between the prober and the official SDK
server: it shows what went over the wire and turns into a fault on demand (hang, 401, a web page)
while the server behind it keeps its session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from mcp_supervisor.config import ProbeConfig, ServerConfig
from mcp_supervisor.health.model import FailureClass, ProbeKind
from mcp_supervisor.probes import ProbeContext, Prober, create_prober
from mcp_supervisor.probes.light import LightFailure, check_answer
from tests.servers.fixtures import ServerProcess, start_http_server
from tests.servers.http_proxy import Proxy

pytestmark = pytest.mark.timeout(60)

MODERN = "2026-07-28"
LEGACY = "2025-11-25"


@pytest.fixture(scope="module")
def http_server() -> Iterator[ServerProcess]:
    server = start_http_server("http")
    yield server
    server.stop()


@pytest.fixture
async def proxy(http_server: ServerProcess) -> AsyncIterator[Proxy]:
    started = await Proxy(http_server.url).start()
    yield started
    await started.stop()


@pytest.fixture
async def context() -> AsyncIterator[ProbeContext]:
    ctx = ProbeContext()
    yield ctx
    await ctx.aclose()


@pytest.fixture
async def probers() -> AsyncIterator[list[Prober]]:
    made: list[Prober] = []
    yield made
    for prober in made:
        await prober.aclose()


def prober_for(probers: list[Prober], context: ProbeContext, url: str, protocol: str, timeout: float = 5.0) -> Prober:
    server = ServerConfig(name="notes", transport="http", url=url, protocol=protocol,
                          probe=ProbeConfig(timeout=timeout))
    prober = create_prober(server, context)
    probers.append(prober)
    return prober


@pytest.mark.parametrize(("protocol", "era", "method"), [("auto", MODERN, "server/discover"), ("legacy", LEGACY, "ping")])
async def test_warm_checks_after_the_handshake_are_one_light_request_each(
    context: ProbeContext, probers: list[Prober], proxy: Proxy, protocol: str, era: str, method: str
) -> None:
    prober = prober_for(probers, context, proxy.url, protocol)
    first = await prober.probe(ProbeKind.WARM)  # connects through the SDK
    assert first.ok and first.protocol_version == era, first.message
    sdk_requests = len(proxy.seen)
    session_ids = {s.session_id for s in proxy.seen if s.session_id}

    for _ in range(3):
        result = await prober.probe(ProbeKind.WARM)
        assert result.ok, result.message
        assert result.protocol_version == era and result.server_name == "example-notes"
        assert set(result.phases_ms) == {"request"}

    light = proxy.seen[sdk_requests:]
    assert [s.method for s in light] == [method] * 3, "one request per check, no new handshake"
    assert len({s.request_id for s in light}) == 1, "the same prebuilt request each time (the SDK counts ids up)"
    assert all(s.client_name == "mcp-supervisor" or method == "ping" for s in light)
    assert all(s.protocol_header == era for s in light)
    if method == "server/discover":
        assert all(s.mcp_method == "server/discover" for s in light), "2026-07-28 needs the Mcp-Method header"
    else:
        assert len(session_ids) == 1 and all(s.session_id in session_ids for s in light), "ping on the SDK's session"

    tools = await prober.probe(ProbeKind.TOOLS)  # tools/list still goes through the SDK session
    assert tools.ok and tools.tool_count == 3
    assert proxy.methods()[-1] == "tools/list"
    assert None not in proxy.methods(), "no listening GET stream: a probe needs no server-initiated message"


@pytest.mark.parametrize("protocol", ["auto", "legacy"])
async def test_a_light_check_that_gets_no_answer_is_a_timeout_then_heals(
    context: ProbeContext, probers: list[Prober], proxy: Proxy, protocol: str
) -> None:
    prober = prober_for(probers, context, proxy.url, protocol, timeout=1.0)
    assert (await prober.probe(ProbeKind.WARM)).ok
    proxy.mode = "hang"
    hung = await prober.probe(ProbeKind.WARM)
    assert not hung.ok and hung.failure is FailureClass.TIMEOUT
    assert "request" in hung.message
    proxy.mode = "pass"
    back = await prober.probe(ProbeKind.WARM)
    assert back.ok, back.message


@pytest.mark.parametrize("protocol", ["auto", "legacy"])
async def test_a_token_revoked_while_the_session_is_warm_is_auth(
    context: ProbeContext, probers: list[Prober], proxy: Proxy, protocol: str
) -> None:
    prober = prober_for(probers, context, proxy.url, protocol)
    assert (await prober.probe(ProbeKind.WARM)).ok
    assert (await prober.probe(ProbeKind.WARM)).ok
    proxy.mode = "401"
    denied = await prober.probe(ProbeKind.WARM)
    assert not denied.ok and denied.failure is FailureClass.AUTH, denied.message
    assert "401" in denied.message and denied.hint


async def test_a_web_page_instead_of_an_answer_is_a_protocol_failure(
    context: ProbeContext, probers: list[Prober], proxy: Proxy
) -> None:
    prober = prober_for(probers, context, proxy.url, "auto")
    assert (await prober.probe(ProbeKind.WARM)).ok
    assert (await prober.probe(ProbeKind.WARM)).ok
    proxy.mode = "html"
    odd = await prober.probe(ProbeKind.WARM)
    assert not odd.ok and odd.failure is FailureClass.PROTOCOL
    assert "text/html" in odd.message


async def test_a_server_that_refuses_the_raw_check_is_checked_through_the_sdk(
    context: ProbeContext, probers: list[Prober], proxy: Proxy
) -> None:
    proxy.mode = "no-raw"
    prober = prober_for(probers, context, proxy.url, "auto")
    for _ in range(8):  # every check passes: a failed light check is retried through the SDK
        result = await prober.probe(ProbeKind.WARM)
        assert result.ok, result.message
    raw = [s for s in proxy.seen if s.client_name == "mcp-supervisor"]
    assert len(raw) == 3, "after three misses in a row the light check is not tried again"
    before = len(proxy.seen)
    assert (await prober.probe(ProbeKind.WARM)).ok
    assert len(proxy.seen) == before + 1, "then one SDK request on the kept-open session, no reconnect"


@pytest.mark.parametrize("protocol", ["auto", "legacy"])
async def test_a_server_that_went_away_is_refused_at_once_and_found_when_it_is_back(
    context: ProbeContext, probers: list[Prober], proxy: Proxy, http_server: ServerProcess, protocol: str
) -> None:
    prober = prober_for(probers, context, proxy.url, protocol)
    assert (await prober.probe(ProbeKind.WARM)).ok
    assert (await prober.probe(ProbeKind.WARM)).ok  # the light check on the kept-open session
    port = int(proxy.url.rsplit(":", 1)[1].split("/")[0])
    await proxy.stop()  # nothing listens on the port any more
    for _ in range(3):  # the light check's refusal, then the port checked again: the same words
        down = await prober.probe(ProbeKind.WARM)
        assert not down.ok and down.failure is FailureClass.REFUSED, down.message
        assert down.message == "connection refused during handshake (is the server listening?)"
    back = await Proxy(http_server.url).start(port)
    try:
        result = await prober.probe(ProbeKind.WARM)
        assert result.ok, result.message
        assert back.methods()[0] in ("server/discover", "initialize"), "a new session, negotiated again"
    finally:
        await back.stop()


async def test_configured_headers_go_with_the_light_check(
    context: ProbeContext, probers: list[Prober], proxy: Proxy
) -> None:
    server = ServerConfig(name="notes", transport="http", url=proxy.url, headers={"Authorization": "Bearer sk-1234"})
    prober = create_prober(server, context)
    probers.append(prober)
    assert (await prober.probe(ProbeKind.WARM)).ok
    before = len(proxy.seen)
    assert (await prober.probe(ProbeKind.WARM)).ok
    assert [(s.method, s.authorization) for s in proxy.seen[before:]] == [("server/discover", "Bearer sk-1234")]


# --- the pure parts ---------------------------------------------------------------------------------


def test_answers_in_json_and_in_server_sent_events() -> None:
    check_answer(200, "application/json", b'{"jsonrpc":"2.0","id":1,"result":{}}')
    check_answer(200, "text/event-stream",
                 b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/message"}\r\n\r\n'
                 b'event: message\r\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\r\n\r\n')
    check_answer(200, "text/event-stream", b'data: {"jsonrpc":"2.0","id":1,"result":{}}')  # no final blank line


@pytest.mark.parametrize(
    ("status", "content_type", "payload", "words"),
    [
        (404, "application/json", b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600}}', "HTTP 404"),
        (200, "application/json", b'{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"x"}}', "-32601"),
        (200, "application/json", b'{"jsonrpc":"2.0","id":7,"result":{}}', "no answer"),
        (200, "text/html", b"<html></html>", "not JSON"),
        (200, "text/event-stream", b"event: message\n\n", "no answer"),
    ],
)
def test_anything_but_our_result_is_a_light_failure(status: int, content_type: str, payload: bytes, words: str) -> None:
    with pytest.raises(LightFailure, match=words):
        check_answer(status, content_type, payload)
