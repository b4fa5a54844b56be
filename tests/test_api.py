"""The control API over its real Unix socket, with the real sync client and real SO_PEERCRED.

The supervisor behind it is a small real SupervisorControl (states the test drives, a real
EventBus), so each route's behaviour can be pinned down without starting MCP servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.api.client import ApiError, DaemonUnreachable, SupervisorClient, wait_ready
from mcp_supervisor.api.server import ApiServer, parse_wait, start_api_server
from mcp_supervisor.api.unix_socket import ApiStartError
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.health.model import Command, UnknownServer
from tests.live_daemon import wait_until

READY_STATES = {"healthy", "degraded", "fallback"}


class DrivenControl:
    """A SupervisorControl whose server states the test sets directly."""

    def __init__(self, states: dict[str, str], critical: set[str] | None = None) -> None:
        self.bus = EventBus()
        self.states = dict(states)
        self.critical = set(states) if critical is None else critical
        self.commands: list[tuple[str | None, Command]] = []
        self.reload_error: str | None = None
        self.waiting = 0
        """Long-polls currently parked in wait_ready (lets tests know a client is waiting)."""
        self._changed = asyncio.Event()

    def set_state(self, name: str, state: str) -> None:
        self.states[name] = state
        self.bus.publish(Event(kind="state", server=name, data={"new": state}))
        self._changed.set()
        self._changed = asyncio.Event()

    def _check(self, name: str) -> None:
        if name == "boom":
            raise RuntimeError("a bug with a secret token=hunter2")
        if name not in self.states:
            raise UnknownServer(name)

    def status(self) -> dict[str, Any]:
        servers = [
            {"name": n, "state": s, "since": 1700000000.0, "failure_class": None, "message": "",
             "latency_ms": 1.5, "critical": n in self.critical, "fallback": s == "fallback"}
            for n, s in self.states.items()
        ]
        return {"ready": self.readiness()["ready"], "servers": servers}

    def readiness(self, servers: list[str] | None = None) -> dict[str, Any]:
        for name in servers or []:
            self._check(name)
        chosen = servers or [n for n in self.states if n in self.critical]
        not_ready = [
            {"name": n, "state": self.states[n], "reason": f"{n} is {self.states[n]}"}
            for n in chosen
            if self.states[n] not in READY_STATES
        ]
        fallback = [n for n in chosen if self.states[n] == "fallback"]
        return {"ready": not not_ready, "not_ready": not_ready, "fallback": fallback}

    async def wait_ready(self, servers: list[str] | None, timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            answer = self.readiness(servers)
            remaining = deadline - loop.time()
            if answer["ready"] or remaining <= 0:
                return answer
            self.waiting += 1
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return self.readiness(servers)
            finally:
                self.waiting -= 1

    async def probe_now(self, name: str) -> dict[str, Any]:
        self._check(name)
        return {"name": name, "state": self.states[name], "result": {"ok": True}}

    async def command(self, name: str | None, cmd: Command) -> dict[str, Any]:
        if name is not None:
            self._check(name)
        self.commands.append((name, cmd))
        return {"accepted": True, "command": str(cmd), "servers": [name] if name else list(self.states)}

    async def reload(self) -> dict[str, Any]:
        if self.reload_error:
            return {"ok": False, "error": self.reload_error}
        return {"ok": True, "added": [], "removed": [], "changed": []}


@pytest.fixture
async def control() -> DrivenControl:
    return DrivenControl({"alpha": "healthy", "beta": "failed", "gamma": "healthy"}, critical={"alpha", "gamma"})


@pytest.fixture
def client(sock_path: Path) -> SupervisorClient:
    return SupervisorClient(sock_path, timeout=5)


async def raw(sock_path: Path, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request over the socket with nothing in between (to send what the client won't)."""
    reader, writer = await asyncio.open_unix_connection(str(sock_path))
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head_raw, _, payload = data.partition(b"\r\n\r\n")
    lines = head_raw.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, payload


def error_of(payload: bytes) -> dict[str, str]:
    body = json.loads(payload)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return body["error"]  # type: ignore[no-any-return]


# --- reading ------------------------------------------------------------------------------------


async def test_health_and_status_shapes(api: ApiServer, client: SupervisorClient) -> None:
    assert (await asyncio.to_thread(client.health))["ok"] is True
    status = await asyncio.to_thread(client.status)
    assert status["ready"] is True  # beta failed, but it is not critical
    assert [s["name"] for s in status["servers"]] == ["alpha", "beta", "gamma"]
    assert {"name", "state", "since", "failure_class", "message", "latency_ms"} <= set(status["servers"][0])


async def test_ready_is_503_with_reasons_when_a_critical_server_is_down(
    api: ApiServer, control: DrivenControl, client: SupervisorClient, sock_path: Path
) -> None:
    control.set_state("gamma", "failed")
    answer = await asyncio.to_thread(client.ready)
    assert answer == {
        "ready": False,
        "not_ready": [{"name": "gamma", "state": "failed", "reason": "gamma is failed"}],
        "fallback": [],
    }
    code, _, _ = await raw(sock_path, "GET", "/v1/ready")
    assert code == 503
    control.set_state("gamma", "fallback")
    code, _, payload = await raw(sock_path, "GET", "/v1/ready")
    assert code == 200 and json.loads(payload)["fallback"] == ["gamma"]


async def test_ready_filters_by_server_and_404s_an_unknown_name(
    api: ApiServer, client: SupervisorClient, sock_path: Path
) -> None:
    assert (await asyncio.to_thread(client.ready, ["alpha"]))["ready"] is True
    assert (await asyncio.to_thread(client.ready, ["alpha", "beta"]))["not_ready"][0]["name"] == "beta"
    code, _, payload = await raw(sock_path, "GET", "/v1/ready?servers=alpha,nope")
    assert code == 404 and error_of(payload)["code"] == "unknown_server"
    assert "nope" in error_of(payload)["message"]
    with pytest.raises(ApiError) as info:
        await asyncio.to_thread(client.ready, ["nope"])
    assert info.value.status == 404


@pytest.mark.parametrize("wait", ["abc", "-1", "nan", "inf", "1e999"])
async def test_ready_rejects_a_bad_wait_with_400(api: ApiServer, sock_path: Path, wait: str) -> None:
    code, _, payload = await raw(sock_path, "GET", f"/v1/ready?wait={wait}")
    assert code == 400 and error_of(payload)["code"] == "bad_wait"


def test_wait_is_capped_at_300_seconds() -> None:
    assert parse_wait("100000") == 300.0
    assert parse_wait("2.5") == 2.5
    assert parse_wait(None) == 0.0


async def test_long_poll_ready_is_released_by_a_state_change(
    api: ApiServer, control: DrivenControl, client: SupervisorClient
) -> None:
    control.set_state("alpha", "starting")
    loop = asyncio.get_running_loop()
    started = loop.time()
    pending = asyncio.create_task(asyncio.to_thread(client.ready, None, 30))
    await wait_until(lambda: control.waiting == 1)
    assert not pending.done()  # still waiting: the server is not ready
    control.set_state("alpha", "healthy")
    answer = await asyncio.wait_for(pending, 10)
    assert answer["ready"] is True
    assert loop.time() - started < 5


async def test_long_poll_ready_gives_up_with_503_after_wait(
    api: ApiServer, control: DrivenControl, sock_path: Path
) -> None:
    control.set_state("alpha", "failed")
    loop = asyncio.get_running_loop()
    started = loop.time()
    code, _, payload = await raw(sock_path, "GET", "/v1/ready?wait=0.3")
    assert code == 503 and json.loads(payload)["not_ready"][0]["name"] == "alpha"
    assert loop.time() - started >= 0.3


# --- acting -------------------------------------------------------------------------------------


async def test_probe_and_commands_reach_the_supervisor(
    api: ApiServer, control: DrivenControl, client: SupervisorClient
) -> None:
    assert (await asyncio.to_thread(client.probe, "alpha"))["result"] == {"ok": True}
    await asyncio.to_thread(client.recover, "beta")
    await asyncio.to_thread(client.pause, "alpha")
    await asyncio.to_thread(client.resume, "alpha")
    await asyncio.to_thread(client.emergency)
    await asyncio.to_thread(client.emergency, "gamma")
    assert control.commands == [
        ("beta", Command.RECOVER),
        ("alpha", Command.PAUSE),
        ("alpha", Command.RESUME),
        (None, Command.EMERGENCY),
        ("gamma", Command.EMERGENCY),
    ]


@pytest.mark.parametrize("action", ["probe", "recover", "pause", "resume"])
async def test_server_actions_404_an_unknown_server(api: ApiServer, sock_path: Path, action: str) -> None:
    code, _, payload = await raw(sock_path, "POST", f"/v1/servers/nope/{action}")
    assert code == 404 and error_of(payload)["code"] == "unknown_server"


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{not json", "bad_json"), (b"[1, 2]", "bad_json"), (b'{"server": 5}', "bad_request"),
     (b'{"server": "alpha", "x": 1}', "bad_request"), (b"\xff\xfe", "bad_json")],
)
async def test_emergency_rejects_a_bad_body_with_400(
    api: ApiServer, control: DrivenControl, sock_path: Path, body: bytes, code: str
) -> None:
    status, _, payload = await raw(sock_path, "POST", "/v1/emergency", body)
    assert status == 400 and error_of(payload)["code"] == code
    assert control.commands == []


async def test_emergency_for_an_unknown_server_is_404(api: ApiServer, sock_path: Path) -> None:
    status, _, payload = await raw(sock_path, "POST", "/v1/emergency", b'{"server": "nope"}')
    assert status == 404 and error_of(payload)["code"] == "unknown_server"


async def test_reload_ok_and_rejected(api: ApiServer, control: DrivenControl, client: SupervisorClient) -> None:
    assert (await asyncio.to_thread(client.reload))["ok"] is True
    control.reload_error = "invalid config /etc/x.toml:\n  - servers.0.url: bad"
    answer = await asyncio.to_thread(client.reload)
    assert answer == {"ok": False, "error": control.reload_error}


async def test_unknown_route_is_404_and_wrong_method_is_405(api: ApiServer, sock_path: Path) -> None:
    status, _, payload = await raw(sock_path, "GET", "/v1/nothing")
    assert status == 404 and error_of(payload)["code"] == "not_found"
    status, _, payload = await raw(sock_path, "POST", "/v1/servers/alpha/explode")
    assert status == 404 and error_of(payload)["code"] == "not_found"
    status, headers, payload = await raw(sock_path, "GET", "/v1/servers/alpha/recover")
    assert status == 405 and error_of(payload)["code"] == "method_not_allowed"
    assert "POST" in headers.get("Allow", "")
    status, _, payload = await raw(sock_path, "DELETE", "/v1/status")
    assert status == 405


async def test_a_bug_becomes_a_json_500_and_the_daemon_keeps_answering(
    api: ApiServer, client: SupervisorClient, sock_path: Path
) -> None:
    status, _, payload = await raw(sock_path, "POST", "/v1/servers/boom/probe")
    assert status == 500
    error = error_of(payload)
    assert error["code"] == "internal" and "hunter2" not in error["message"]
    assert (await asyncio.to_thread(client.health))["ok"] is True


async def test_garbage_on_the_socket_does_not_hurt_the_daemon(api: ApiServer, client: SupervisorClient, sock_path: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(sock_path))
    writer.write(b"\x00\x01 NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert reply.startswith(b"HTTP/1.") and b" 400 " in reply.split(b"\r\n")[0]
    assert (await asyncio.to_thread(client.health))["ok"] is True


# --- events -------------------------------------------------------------------------------------


async def test_sse_delivers_events_and_heartbeats_and_cleans_up_on_disconnect(
    api: ApiServer, control: DrivenControl, sock_path: Path
) -> None:
    reader, writer = await asyncio.open_unix_connection(str(sock_path))
    writer.write(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b" 200 " in head and b"text/event-stream" in head
    await wait_until(lambda: control.bus.subscriber_count == 1)
    control.set_state("beta", "healthy")
    seen = b""
    while b"data: " not in seen:
        seen += await asyncio.wait_for(reader.read(4096), 5)
    data_line = next(line for line in seen.decode().splitlines() if line.startswith("data: "))
    event = json.loads(data_line[len("data: ") :])
    assert event["kind"] == "state" and event["server"] == "beta" and event["new"] == "healthy"
    assert "event: state" in seen.decode()
    while b": heartbeat" not in seen:  # heartbeat every 0.2 s in this fixture
        seen += await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    await wait_until(lambda: control.bus.subscriber_count == 0)


async def test_client_events_iterator_yields_dicts(
    api: ApiServer, control: DrivenControl, client: SupervisorClient
) -> None:
    got: list[dict[str, Any]] = []

    def consume() -> None:
        for event in client.events(timeout=10):
            got.append(event)
            if len(got) == 2:
                return

    thread = threading.Thread(target=consume)
    thread.start()
    try:
        await wait_until(lambda: control.bus.subscriber_count == 1)
        control.set_state("alpha", "degraded")
        control.set_state("alpha", "healthy")
        await wait_until(lambda: len(got) == 2)
    finally:
        thread.join(10)
    assert [(e["server"], e["new"]) for e in got] == [("alpha", "degraded"), ("alpha", "healthy")]
    assert got[0]["seq"] < got[1]["seq"]
    await wait_until(lambda: control.bus.subscriber_count == 0)


async def test_a_hung_up_long_poll_frees_its_waiter(api: ApiServer, control: DrivenControl, sock_path: Path) -> None:
    control.set_state("alpha", "failed")
    _reader, writer = await asyncio.open_unix_connection(str(sock_path))
    writer.write(b"GET /v1/ready?wait=60 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await wait_until(lambda: control.waiting == 1)
    writer.close()
    await wait_until(lambda: control.waiting == 0)  # the handler was cancelled, not left parked for 60 s
    code, _, _ = await raw(sock_path, "GET", "/v1/ready")
    assert code == 503


# --- the socket ---------------------------------------------------------------------------------


async def test_socket_has_mode_0660_and_close_removes_it(control: DrivenControl, sock_path: Path) -> None:
    server = await start_api_server(control, sock_path)
    mode = os.lstat(sock_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    await server.close()
    assert not await asyncio.to_thread(os.path.lexists, sock_path)


async def test_refuses_to_start_when_another_daemon_listens(
    api: ApiServer, control: DrivenControl, client: SupervisorClient, sock_path: Path
) -> None:
    with pytest.raises(ApiStartError, match="already listening"):
        await start_api_server(control, sock_path)
    assert (await asyncio.to_thread(client.health))["ok"] is True  # the first one is untouched


async def test_a_stale_socket_is_replaced(control: DrivenControl, sock_path: Path, client: SupervisorClient) -> None:
    sock_path.parent.mkdir(parents=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock_path))
    dead.close()  # the file stays, nobody listens: what a killed daemon leaves
    server = await start_api_server(control, sock_path)
    try:
        assert (await asyncio.to_thread(client.health))["ok"] is True
    finally:
        await server.close()


async def test_refuses_to_replace_a_file_that_is_not_a_socket(control: DrivenControl, sock_path: Path) -> None:
    sock_path.parent.mkdir(parents=True)
    await asyncio.to_thread(sock_path.write_text, "precious")
    with pytest.raises(ApiStartError, match="not a socket"):
        await start_api_server(control, sock_path)
    assert await asyncio.to_thread(sock_path.read_text) == "precious"


_PEER_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[2])
from mcp_supervisor.api.client import ApiError, SupervisorClient
try:
    print(json.dumps({"ok": SupervisorClient(sys.argv[1]).health()}))
except ApiError as exc:
    print(json.dumps({"status": exc.status, "code": exc.code, "message": exc.message}))
"""


SYSTEM_PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)), None)
"""The venv's python may live under /root, which uid 65534 cannot enter; the client is stdlib only."""


def run_as_nobody(sock_path: Path) -> dict[str, Any]:
    assert SYSTEM_PYTHON is not None
    result = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", _PEER_SCRIPT, str(sock_path), str(Path(__file__).resolve().parent.parent)],
        user=65534,
        group=65534,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env={"PATH": os.environ.get("PATH", "")},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to uid 65534 needs root")
@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no system python that uid 65534 can run")
@pytest.mark.parametrize(
    ("uids", "gids", "allowed"), [((), (), False), ((65534,), (), True), ((), (65534,), True)]
)
async def test_so_peercred_refuses_a_peer_that_is_not_allowed(
    control: DrivenControl, sock_path: Path, uids: tuple[int, ...], gids: tuple[int, ...], allowed: bool
) -> None:
    server = await start_api_server(control, sock_path, allowed_uids=uids, allowed_gids=gids)
    try:
        sock_path.parent.chmod(0o755)
        sock_path.parent.parent.chmod(0o755)
        os.chown(sock_path, 0, 65534)  # the filesystem lets the group in: only SO_PEERCRED decides
        answer = await asyncio.to_thread(run_as_nobody, sock_path)
    finally:
        await server.close()
    if allowed:
        assert answer["ok"]["ok"] is True
    else:
        assert answer["status"] == 403 and answer["code"] == "forbidden"
        assert "65534" in answer["message"] and "allowed_uids" in answer["message"]


# --- the client on its own ----------------------------------------------------------------------


def test_client_says_the_daemon_is_unreachable(short_tmp: Path) -> None:
    missing = short_tmp / "none.sock"
    with pytest.raises(DaemonUnreachable) as info:
        SupervisorClient(missing).status()
    assert str(missing) in str(info.value) and "is mcp-supervisor running?" in str(info.value)
    with pytest.raises(DaemonUnreachable):
        wait_ready(timeout=0.3, socket=missing)


async def test_wait_ready_function(api: ApiServer, control: DrivenControl, sock_path: Path) -> None:
    assert await asyncio.to_thread(wait_ready, 5, None, sock_path) is True
    control.set_state("alpha", "failed")
    assert await asyncio.to_thread(wait_ready, 0.3, None, sock_path) is False
    assert await asyncio.to_thread(wait_ready, 0.3, ["gamma"], sock_path) is True
    pending = asyncio.create_task(asyncio.to_thread(wait_ready, 30, None, sock_path))
    await wait_until(lambda: control.waiting == 1)
    control.set_state("alpha", "healthy")
    assert await asyncio.wait_for(pending, 10) is True


async def test_extra_routes_are_mounted(control: DrivenControl, sock_path: Path, client: SupervisorClient) -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": "world"})

    server = await start_api_server(control, sock_path, extra_routes=lambda app: app.router.add_get("/v1/hello", hello))
    try:
        assert (await asyncio.to_thread(client.request, "GET", "/v1/hello"))[1] == {"hello": "world"}
    finally:
        await server.close()


async def test_close_ends_streams_and_answers_parked_long_polls_at_once(
    control: DrivenControl, sock_path: Path
) -> None:
    server = await start_api_server(control, sock_path, heartbeat=60)
    control.set_state("alpha", "failed")
    poll = asyncio.create_task(raw(sock_path, "GET", "/v1/ready?wait=120"))
    reader, writer = await asyncio.open_unix_connection(str(sock_path))
    writer.write(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await wait_until(lambda: control.waiting == 1 and control.bus.subscriber_count == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.close()
    assert loop.time() - started < 0.5  # not aiohttp's grace period, not the 120 s wait
    code, _, payload = await asyncio.wait_for(poll, 5)
    assert code == 503 and json.loads(payload)["not_ready"][0]["name"] == "alpha"
    rest = await asyncio.wait_for(reader.read(), 5)  # the stream ends (EOF) instead of hanging
    assert b"HTTP/1.1 200" in rest
    writer.close()
    assert control.bus.subscriber_count == 0


async def test_an_oversized_body_is_413_json(api: ApiServer, control: DrivenControl, sock_path: Path) -> None:
    status, _, payload = await raw(sock_path, "POST", "/v1/emergency", b'{"server": "' + b"a" * 2_000_000 + b'"}')
    assert status == 413 and error_of(payload)["code"] == "too_large"
    assert control.commands == []
