"""The proxy end to end: a real daemon, real SDK servers it manages, the official SDK client in both eras.

What a job notices: its calls go on across a kill -9 of the server (read-only calls: 0 failures),
a non-idempotent call in flight gets the honest error and ran at most once, its session id never
changes, and bad requests (wrong token, unknown server, garbage, huge bodies) get clear errors
while the daemon carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.live_daemon import BIN, PY, UnixHTTPConnection, api, free_port, stop, supervisor_table, wait_for
from tests.servers.fixtures import MCP_SERVER_TIME, RUN_AS, ServerProcess, start_http_server

PROXIED = Path(__file__).parent / "servers" / "proxied.py"


@dataclass
class ProxyDaemon:
    directory: Path
    sock: Path
    port: int
    proc: subprocess.Popen[bytes]
    counts: Path
    sse: ServerProcess

    @property
    def token(self) -> str:
        return (self.directory / "state" / "proxy.token").read_text().strip()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/servers/{name}/mcp"

    def pid(self, name: str) -> int | None:
        _status, body = api(self.sock, "/v1/status")
        entry = next(s for s in body["servers"] if s["name"] == name)
        return entry["pid"] if entry["state"] == "healthy" else None

    def log(self) -> str:
        return (self.directory / "daemon.log").read_text()[-4000:]


@pytest.fixture(scope="module")
def proxy_daemon() -> Iterator[ProxyDaemon]:
    directory = Path(tempfile.mkdtemp(prefix="mcpproxy-", dir="/tmp"))
    port, managed_port, sse_port = free_port(), free_port(), free_port()
    counts = directory / "charges.txt"
    sse = start_http_server("sse", argv=[PY, str(PROXIED), "sse", "{port}", str(directory / "sse-charges.txt")],
                            port=sse_port)
    config = directory / "mcp-supervisor.toml"
    config.write_text(supervisor_table(directory, shutdown_timeout="3s") + f"""

[proxy]
listen = "127.0.0.1:{port}"
hold = "20s"

[[servers]]
name = "pay"
transport = "http"
url = "http://127.0.0.1:{managed_port}/mcp"
managed = true
command = "{PY}"
args = ["{PROXIED}", "http", "{managed_port}", "{counts}"]
{RUN_AS}
probe = {{ interval = "300ms", timeout = "2s", failure_threshold = 1, start_period = "20s" }}
recovery = {{ backoff_initial = "50ms", max_attempts = 1000 }}

[[servers]]
name = "time"
transport = "stdio"
command = "{MCP_SERVER_TIME}"
critical = false
{RUN_AS}
probe = {{ interval = "60s", cold_interval = "60m" }}

[[servers]]
name = "pay-stdio"
transport = "stdio"
command = "{PY}"
args = ["{PROXIED}", "stdio", "{directory / 'stdio-charges.txt'}"]
standby = 1
critical = false
{RUN_AS}
probe = {{ interval = "60s", cold_interval = "60m" }}

[[servers]]
name = "legacy-sse"
transport = "sse"
url = "{sse.url}"
critical = false
probe = {{ interval = "1s", timeout = "2s" }}

[[servers.checks]]
tool = "upstream"
expect = "^upstream ok$"
interval = "1s"
""")
    with open(directory / "daemon.log", "ab") as log:
        proc = subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(config)], stderr=log)
    daemon = ProxyDaemon(directory, directory / "ctl.sock", port, proc, counts, sse)
    try:
        wait_for(lambda: daemon.sock.exists() and daemon.pid("pay") is not None, 60, "the managed server healthy",
                 ignore=(OSError,))  # the socket file exists a moment before the daemon listens
        yield daemon
    finally:
        stop(proc)
        sse.stop()
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def connect(daemon: ProxyDaemon, name: str, mode: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {daemon.token}"},
                              timeout=httpx2.Timeout(30.0, read=60.0))
    async with http, Client(streamable_http_client(daemon.url(name), http_client=http), mode=mode) as client:
        yield client


def text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def test_token_file_is_private(proxy_daemon: ProxyDaemon) -> None:
    info = (proxy_daemon.directory / "state" / "proxy.token").stat()
    assert info.st_mode & 0o777 == 0o600
    assert proxy_daemon.token not in (proxy_daemon.directory / "daemon.log").read_text()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_sdk_client_in_both_eras_through_the_proxy(proxy_daemon: ProxyDaemon, mode: str) -> None:
    async def run() -> tuple[str, str, list[str], str]:
        async with connect(proxy_daemon, "pay", mode) as client:
            tools = await client.list_tools()
            progress: list[str] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append(message or "")

            slow = await client.call_tool("slow_lookup", {"query": "q", "delay": 0.05}, progress_callback=on_progress)
            result = await client.call_tool("lookup", {"query": "x"})
            return client.protocol_version, text(result), [t.name for t in tools.tools] + progress, text(slow)

    version, answer, names, slow = asyncio.run(run())
    assert answer.startswith("found x")
    assert {"lookup", "charge", "slow_lookup"} <= set(names)
    assert "half way" in names  # progress reached the client through the proxy
    assert slow == "found q slowly"
    assert version == ("2026-07-28" if mode == "auto" else version) and version


def test_server_to_client_requests_cross_the_proxy(proxy_daemon: ProxyDaemon) -> None:
    async def elicit(context: Any, params: Any) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async def roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///tmp/a"), types.Root(uri="file:///tmp/b")])

    async def run() -> str:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {proxy_daemon.token}"})
        transport = streamable_http_client(proxy_daemon.url("pay"), http_client=http)
        async with http, Client(transport, mode="legacy", elicitation_callback=elicit,
                                list_roots_callback=roots) as client:
            return text(await client.call_tool("ask_name", {}))

    assert asyncio.run(run()) == "hello Ada, 2 root(s)"


def test_stdio_bridge_speaks_mcp_over_the_control_socket(proxy_daemon: ProxyDaemon) -> None:
    params = StdioServerParameters(command=str(BIN / "supervisorctl-mcp"),
                                   args=["--socket", str(proxy_daemon.sock), "proxy", "pay"])

    async def run(mode: str) -> tuple[str, str, str]:
        async with Client(params, mode=mode) as client:
            # a stdio client sends no headers: the bridge adds Mcp-Param-Region from the tool's schema
            regional = await client.call_tool("regional_lookup", {"region": "eu-west", "query": "r"})
            return (client.protocol_version, text(await client.call_tool("lookup", {"query": "bridge"})),
                    text(regional))

    for mode in ("legacy", "auto"):
        version, answer, regional = asyncio.run(run(mode))
        assert answer.startswith("found bridge") and regional == "found r in eu-west", regional
        assert (version == "2026-07-28") == (mode == "auto")


def test_legacy_sse_backend_through_the_proxy(proxy_daemon: ProxyDaemon) -> None:
    async def run() -> str:
        async with connect(proxy_daemon, "legacy-sse", "legacy") as client:
            return text(await client.call_tool("lookup", {"query": "sse"}))

    assert asyncio.run(run()).startswith("found sse")


def _kill(daemon: ProxyDaemon, name: str) -> int:
    pid = wait_for(lambda: daemon.pid(name), 30, f"{name} healthy")
    os.kill(pid, signal.SIGKILL)
    return int(pid)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_read_only_calls_go_on_across_kills_and_the_session_id_stays(proxy_daemon: ProxyDaemon, mode: str) -> None:
    async def run() -> tuple[int, set[str]]:
        pids: set[str] = set()
        async with connect(proxy_daemon, "pay", mode) as client:
            await client.list_tools()
            failures = 0
            for _kill_round in range(1):
                pids.add(text(await client.call_tool("lookup", {"query": "before"})).rsplit(" ", 1)[-1])
                loop = asyncio.get_running_loop()
                kill = loop.run_in_executor(None, _kill, proxy_daemon, "pay")
                while not kill.done():
                    result = await client.call_tool("lookup", {"query": "k"})
                    failures += bool(result.is_error)
                    pids.add(text(result).rsplit(" ", 1)[-1])
                await kill
                for _ in range(5):  # and after the restart
                    result = await client.call_tool("lookup", {"query": "k"})
                    failures += bool(result.is_error)
                    pids.add(text(result).rsplit(" ", 1)[-1])
        return failures, pids

    failures, pids = asyncio.run(run())
    assert failures == 0
    assert len(pids) >= 2, "the calls were answered by more than one backend process"

    def restored() -> list[dict[str, Any]]:
        _status, body = api(proxy_daemon.sock, "/v1/history?days=1&server=pay")
        return [e for e in body["events"] if e.get("kind") == "proxy"]

    events = wait_for(restored, 20, "the proxy's restore in the record")
    assert "held=" in str(events[-1]) and "failed=0" in str(events[-1]), events[-1]
    _status, report = api(proxy_daemon.sock, "/v1/report?period=day")
    counted = report["servers"]["pay"]["proxy"]  # folded per incident (history/proxy_counts.py)
    assert counted["failed"] == 0 and any(row["incident"] and row["held"] for row in counted["incidents"]), counted


def test_unsafe_call_in_flight_gets_the_honest_error_and_ran_at_most_once(proxy_daemon: ProxyDaemon) -> None:
    proxy_daemon.counts.unlink(missing_ok=True)

    async def run() -> tuple[str, str]:
        async with connect(proxy_daemon, "pay", "legacy") as client:
            await client.list_tools()
            call = asyncio.ensure_future(client.call_tool("charge", {"amount": 7, "delay": 3.0}))
            await asyncio.get_running_loop().run_in_executor(
                None, wait_for, lambda: proxy_daemon.counts.exists(), 20, "the charge started")
            _kill(proxy_daemon, "pay")
            try:
                await call
            except MCPError as exc:
                message = str(exc)
            else:
                message = "no error"
            after = text(await client.call_tool("lookup", {"query": "after"}))  # the session goes on
            return message, after

    message, after = asyncio.run(run())
    assert after.startswith("found after")
    assert "'charge'" in message
    assert "backend restarted during the call; not retried because it may have taken effect" in message
    assert proxy_daemon.counts.read_text().split() == ["7"]  # executed once, never twice


def _post(daemon: ProxyDaemon, path: str, body: bytes, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}{path}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bad_requests_get_clear_errors_and_the_daemon_carries_on(proxy_daemon: ProxyDaemon) -> None:
    good = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}}}}).encode()
    status, body = _post(proxy_daemon, "/servers/pay/mcp", good, "wrong-token")
    assert status == 401 and "bearer token" in body["error"]["message"]
    status, body = _post(proxy_daemon, "/servers/pay/mcp", good, None)
    assert status == 401
    status, body = _post(proxy_daemon, "/servers/nope/mcp", good, proxy_daemon.token)
    assert status == 404 and "no server named 'nope'" in body["error"]["message"]
    assert "pay" in body["error"]["message"]
    status, body = _post(proxy_daemon, "/servers/pay/mcp", b"\x00garbage{", proxy_daemon.token)
    assert status == 400 and body["error"]["code"] == -32700
    status, body = _post(proxy_daemon, "/servers/pay/mcp", b"[" + good + b"]", proxy_daemon.token)
    assert status == 400 and "batches" in body["error"]["message"]
    huge = b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"pad": "' + b"a" * (5 * 1024 * 1024) + b'"}}'
    with contextlib.suppress(ConnectionError):  # the server may close before reading it all
        status, body = _post(proxy_daemon, "/servers/pay/mcp", huge, proxy_daemon.token)
        assert status == 413 and "max_body" in body["error"]["message"]
    status, body = _post(proxy_daemon, "/servers/pay/mcp", good, proxy_daemon.token)
    assert status == 200 and body["result"]["tools"]
    conn = UnixHTTPConnection(proxy_daemon.sock, 10.0)
    conn.request("GET", "/metrics")
    lines = conn.getresponse().read().decode()
    conn.close()
    assert "mcp_supervisor_proxy_unauthorized_total 2.0" in lines, lines[-2000:]
    assert proxy_daemon.proc.poll() is None


def _initialize(port: int, token: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/servers/notes/mcp", data=body, headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_past_the_hold_the_error_names_the_state_and_sessions_are_bounded(short_tmp: Path) -> None:
    port, gone_port = free_port(), free_port()
    notes = start_http_server()
    config = short_tmp / "mcp-supervisor.toml"
    config.write_text(f"""
[supervisor]
socket = "{short_tmp}/ctl.sock"
state_dir = "{short_tmp}/state"
[proxy]
listen = "127.0.0.1:{port}"
hold = "1s"
max_sessions = 2
[[servers]]
name = "notes"
transport = "http"
url = "{notes.url}"
[[servers]]
name = "gone"
transport = "http"
url = "http://127.0.0.1:{gone_port}/mcp"
critical = false
probe = {{ interval = "300ms", timeout = "1s", failure_threshold = 1 }}
""")
    with open(short_tmp / "daemon.log", "ab") as log:
        proc = subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(config)], stderr=log)
    try:
        token_file = short_tmp / "state" / "proxy.token"
        wait_for(lambda: token_file.exists() and (short_tmp / "ctl.sock").exists(), 30, "the daemon up")
        token = token_file.read_text().strip()
        daemon = ProxyDaemon(short_tmp, short_tmp / "ctl.sock", port, proc, short_tmp / "none", notes)

        async def held() -> str:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
            async with http:
                try:
                    async with Client(streamable_http_client(daemon.url("gone"), http_client=http), mode="legacy"):
                        return "connected"
                except Exception as exc:  # the SDK wraps it in exception groups
                    return repr(exc)

        message = asyncio.run(held())
        assert "did not come back within 1 s" in message and "its state is " in message, message
        assert [_initialize(port, token)[0] for _ in range(2)] == [200, 200]
        status, body = _initialize(port, token)
        assert status == 503 and "max_sessions" in body["error"]["message"]
        assert proc.poll() is None
    finally:
        stop(proc)
        notes.stop()


def test_run_tells_the_job_the_proxy_urls_and_the_report_counts_the_held_calls(proxy_daemon: ProxyDaemon) -> None:
    job = proxy_daemon.directory / "job.py"
    job.write_text(f"""
import asyncio, json, os, signal, sys
from pathlib import Path
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from tests.live_daemon import api

async def main():
    env = {{k: v for k, v in os.environ.items() if k.startswith("MCP_SUPERVISOR_PROXY")}}
    token = Path(os.environ["MCP_SUPERVISOR_PROXY_TOKEN_FILE"]).read_text().strip()
    http = httpx2.AsyncClient(headers={{"Authorization": "Bearer " + token}}, timeout=60)
    async with http, Client(streamable_http_client(os.environ["MCP_SUPERVISOR_PROXY_URL_PAY"], http_client=http),
                            mode="legacy") as client:
        await client.call_tool("lookup", {{"query": "1"}})
        _s, status = api(Path(os.environ["MCP_SUPERVISOR_SOCKET"]), "/v1/status")
        os.kill(next(s["pid"] for s in status["servers"] if s["name"] == "pay"), signal.SIGKILL)
        result = await client.call_tool("lookup", {{"query": "2"}})
    print(json.dumps({{"env": env, "error": result.is_error}}))

asyncio.run(main())
""")
    wait_for(lambda: proxy_daemon.pid("pay"), 60, "pay healthy")
    done = subprocess.run([str(BIN / "supervisorctl-mcp"), "--socket", str(proxy_daemon.sock), "run", "--json",
                           "--require", "pay", "--", PY, str(job)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    answer, report = json.loads(lines[0]), json.loads(lines[-1])
    env = answer["env"]
    assert env["MCP_SUPERVISOR_PROXY_URL_PAY"] == proxy_daemon.url("pay")
    assert env["MCP_SUPERVISOR_PROXY_URL_LEGACY_SSE"] == proxy_daemon.url("legacy-sse")
    assert env["MCP_SUPERVISOR_PROXY_TOKEN_FILE"] == str(proxy_daemon.directory / "state" / "proxy.token")
    assert proxy_daemon.token not in done.stdout + done.stderr
    assert answer["error"] is False
    assert any("held" in line and "pay restart" in line and "0 failed" in line for line in report["proxy"]), report


def _backend_pids(daemon: ProxyDaemon, name: str) -> list[int]:
    _status, info = api(daemon.sock, "/v1/proxy")
    return list(info["counts"]["servers"].get(name, {}).get("backend_pids", []))


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_stdio_reference_server_behind_the_proxy(proxy_daemon: ProxyDaemon, mode: str) -> None:
    async def run() -> tuple[str, str]:
        async with connect(proxy_daemon, "time", mode) as client:
            result = await client.call_tool("get_current_time", {"timezone": "UTC"})
            return client.protocol_version, text(result)

    version, answer = asyncio.run(run())
    assert "UTC" in answer and not answer.startswith("Error")
    assert (version == "2026-07-28") == (mode == "auto")


def test_stdio_backend_killed_mid_session_read_only_calls_go_on_unsafe_one_is_not_repeated(
        proxy_daemon: ProxyDaemon) -> None:
    counts = proxy_daemon.directory / "stdio-charges.txt"

    async def run() -> tuple[int, str, str]:
        async with connect(proxy_daemon, "pay-stdio", "legacy") as client:
            first = text(await client.call_tool("lookup", {"query": "a"}))
            [pid] = _backend_pids(proxy_daemon, "pay-stdio")
            os.kill(pid, signal.SIGKILL)
            failures = 0
            for _ in range(3):
                failures += bool((await client.call_tool("lookup", {"query": "b"})).is_error)
            second = text(await client.call_tool("lookup", {"query": "c"}))
            call = asyncio.ensure_future(client.call_tool("charge", {"amount": 3, "delay": 3.0}))
            await asyncio.get_running_loop().run_in_executor(None, wait_for, counts.exists, 30, "the charge started")
            [pid] = _backend_pids(proxy_daemon, "pay-stdio")
            os.kill(pid, signal.SIGKILL)
            try:
                await call
                message = "no error"
            except MCPError as exc:
                message = str(exc)
            return failures, first + " / " + second, message

    failures, answers, message = asyncio.run(run())
    assert failures == 0
    first_pid, second_pid = (part.rsplit(" ", 1)[-1] for part in answers.split(" / "))
    assert first_pid != second_pid  # a new backend process answered, in the same client session
    assert "backend restarted during the call; not retried because it may have taken effect" in message
    assert counts.read_text().split() == ["3"]


def test_warm_standby_takes_over_at_once_and_a_new_one_is_started(proxy_daemon: ProxyDaemon) -> None:
    def figures() -> dict[str, Any]:
        _status, info = api(proxy_daemon.sock, "/v1/proxy")
        return dict(info["counts"]["servers"].get("pay-stdio", {}))

    async def run() -> tuple[str, int, str]:
        async with connect(proxy_daemon, "pay-stdio", "legacy") as client:
            first = text(await client.call_tool("lookup", {"query": "a"}))
            ready = await asyncio.get_running_loop().run_in_executor(
                None, wait_for, lambda: figures().get("standbys") == ["ready"] and figures(), 60, "a ready standby")
            [standby] = ready["standby_pids"]
            [backend] = ready["backend_pids"]
            os.kill(backend, signal.SIGKILL)
            second = text(await client.call_tool("lookup", {"query": "b"}))
            await asyncio.get_running_loop().run_in_executor(
                None, wait_for, lambda: figures().get("standbys") == ["ready"]
                and figures()["standby_pids"] != [standby], 60, "a new standby")
            return first, standby, second

    first, standby, second = asyncio.run(run())
    assert first.startswith("found a") and second == f"found b (pid {standby})"


def test_import_via_proxy_rewrites_a_client_config_and_undo_puts_it_back(proxy_daemon: ProxyDaemon,
                                                                          short_tmp: Path) -> None:
    client_file = short_tmp / "mcp.json"
    original = {"mcpServers": {"pay": {"url": "http://127.0.0.1:1/mcp", "headers": {"X": "y"}},
                               "elsewhere": {"command": "npx", "args": ["some-server"]}},
                "theme": "dark"}
    client_file.write_text(json.dumps(original))
    client_file.chmod(0o640)

    def cli_import(*flags: str) -> dict[str, Any]:
        done = subprocess.run([str(BIN / "supervisorctl-mcp"), "--config", str(proxy_daemon.directory /
                               "mcp-supervisor.toml"), "--socket", str(proxy_daemon.sock), "import", *flags,
                               "--json", str(client_file)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return dict(json.loads(done.stdout))

    answer = cli_import("--via-proxy")
    assert answer["files"][0]["proxied"] == ["pay"] and answer["files"][0]["not_supervised"] == ["elsewhere"]
    rewritten = json.loads(client_file.read_text())
    entry = rewritten["mcpServers"]["pay"]
    assert entry["args"][-2:] == ["proxy", "pay"] and rewritten["mcpServers"]["elsewhere"] == original["mcpServers"][
        "elsewhere"] and rewritten["theme"] == "dark"
    assert client_file.stat().st_mode & 0o777 == 0o640

    async def through_the_entry() -> str:
        async with Client(StdioServerParameters(command=entry["command"], args=entry["args"]), mode="legacy") as client:
            return text(await client.call_tool("lookup", {"query": "imported"}))

    assert asyncio.run(through_the_entry()).startswith("found imported")
    assert cli_import("--via-proxy")["files"][0]["proxied"] == []  # twice is a no-op
    assert cli_import("--undo-proxy")["files"][0]["restored"] == ["pay"]
    assert json.loads(client_file.read_text()) == original


def test_a_failing_deep_check_is_its_own_failure_class_and_an_auth_shaped_one_needs_a_human(
        proxy_daemon: ProxyDaemon) -> None:
    broken = proxy_daemon.directory / "sse-charges.txt.broken"

    def server() -> dict[str, Any]:
        _status, body = api(proxy_daemon.sock, "/v1/status")
        return dict(next(s for s in body["servers"] if s["name"] == "legacy-sse"))

    try:
        wait_for(lambda: server()["state"] == "healthy", 30, "the checked server healthy")
        broken.write_text("upstream database answered 500")
        down = wait_for(lambda: server()["failure_class"] == "check" and server(), 30, "a check failure")
        assert "upstream database answered 500" in down["message"]
        wait_for(lambda: server()["state"] not in ("healthy", "degraded"), 30, "the server not ready")
        broken.write_text("401 Unauthorized: the Jira token expired")
        wait_for(lambda: server()["state"] == "needs_human" and server()["failure_class"] == "auth", 30,
                 "needs_human for an auth-shaped check failure")
    finally:
        broken.unlink(missing_ok=True)
    wait_for(lambda: server()["state"] == "healthy", 60, "healthy again once the check passes")


@pytest.mark.parametrize("mode", ["legacy", "auto", "bridge-auto"])
def test_a_cancelled_call_is_cancelled_at_the_server(proxy_daemon: ProxyDaemon, mode: str) -> None:
    waits = proxy_daemon.directory / "stdio-charges.txt.waits"
    waits.unlink(missing_ok=True)
    bridge = StdioServerParameters(command=str(BIN / "supervisorctl-mcp"),
                                   args=["--socket", str(proxy_daemon.sock), "proxy", "pay-stdio"])

    async def run() -> None:
        opened = Client(bridge, mode="auto") if mode == "bridge-auto" else connect(proxy_daemon, "pay-stdio", mode)
        async with opened as client:
            await client.list_tools()
            task = asyncio.ensure_future(client.call_tool("wait", {"seconds": 30}))
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, wait_for, lambda: waits.exists() and "started" in waits.read_text(), 30,
                                       "the call running at the server")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await loop.run_in_executor(None, wait_for, lambda: "cancelled" in waits.read_text(), 20,
                                       "the server saw the cancellation")

    asyncio.run(run())


def test_mcp_inspector_cli_a_client_no_one_here_wrote(proxy_daemon: ProxyDaemon) -> None:
    """MCP Inspector's CLI (npm), with the bearer token, lists and calls tools through the proxy."""
    from tests.test_spawn_nobody import BASE, _install

    target = BASE / "inspector"
    exe = target / "node_modules" / ".bin" / "mcp-inspector"
    problem = _install(exe, [["npm", "install", "--prefix", str(target), "--no-audit", "--no-fund",
                              "@modelcontextprotocol/inspector@2"]])
    if problem:
        pytest.skip(f"cannot install @modelcontextprotocol/inspector from npm: {problem}")

    def inspector(*args: str) -> dict[str, Any]:
        done = subprocess.run([str(exe), "--cli", proxy_daemon.url("pay"), "--transport", "http", "--header",
                               f"Authorization: Bearer {proxy_daemon.token}", *args],
                              capture_output=True, text=True, timeout=120, cwd=proxy_daemon.directory,
                              env={"PATH": os.environ["PATH"], "HOME": str(proxy_daemon.directory)})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return dict(json.loads(done.stdout))

    listed = inspector("--method", "tools/list")
    assert {"lookup", "charge"} <= {tool["name"] for tool in listed["tools"]}
    called = inspector("--method", "tools/call", "--tool-name", "lookup", "--tool-arg", "query=inspector")
    assert text(types.CallToolResult.model_validate(called)).startswith("found inspector"), called
