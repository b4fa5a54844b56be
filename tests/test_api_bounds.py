"""The control socket cannot be impersonated and every request is bounded, over the real Unix socket.

* the socket's directory: created private, refused when someone else owns it or may write it
  (in-process and through the real ``mcp-supervisor`` binary);
* the default socket path is the same for every reader of a config (root and uid 65534);
* supplementary groups count for ``allowed_gids`` (a real peer with setgroups);
* bodies too deep, too large, malformed or never sent are 4xx; a header over 8 KB is a 4xx whose
  log is one redacted JSON line; connections that never finish their request are closed.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_supervisor.api.server import IDLE_TIMEOUT, ApiServer, start_api_server
from mcp_supervisor.api.unix_socket import ApiStartError, parse_groups
from mcp_supervisor.config import default_socket_path, load_config, resolve_socket_path
from mcp_supervisor.logging import setup_logging
from tests.test_api import SYSTEM_PYTHON, DrivenControl, error_of, raw

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, dropping to uid 65534)")
needs_system_python = pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no python that uid 65534 can run")
CANARY = "canary-query-token-5150"


@pytest.fixture
async def control() -> DrivenControl:
    return DrivenControl({"alpha": "healthy"})


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    setup_logging("info", "json", {CANARY}, stream=stream)
    try:
        yield stream
    finally:
        setup_logging("info", "json", (), stream=sys.stderr)


# --- the socket's directory ---------------------------------------------------------------------


async def test_a_new_socket_directory_is_private(api: ApiServer, sock_path: Path) -> None:
    assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(sock_path).st_mode) == 0o660


@as_root
async def test_a_directory_owned_by_another_user_is_refused(control: DrivenControl, sock_path: Path) -> None:
    sock_path.parent.mkdir(mode=0o700)
    os.chown(sock_path.parent, 65534, 65534)
    with pytest.raises(ApiStartError, match=r"belongs to uid 65534.*another user could replace the socket"):
        await start_api_server(control, sock_path)
    assert not os.path.lexists(sock_path)


async def test_a_group_writable_directory_is_refused(control: DrivenControl, sock_path: Path) -> None:
    sock_path.parent.mkdir()
    sock_path.parent.chmod(0o770)
    with pytest.raises(ApiStartError, match=r"writable by group or others \(mode 0770\)"):
        await start_api_server(control, sock_path)
    assert not os.path.lexists(sock_path)


@as_root
def test_the_daemon_refuses_to_start_in_a_directory_someone_else_owns(short_tmp: Path) -> None:
    planted = short_tmp / "planted"
    planted.mkdir(mode=0o755)
    os.chown(planted, 65534, 65534)  # what another local user pre-creates to answer "ready" herself
    config = short_tmp / "sup.toml"
    config.write_text(f'[supervisor]\nsocket = "{planted}/control.sock"\nstate_dir = "{short_tmp}/state"\n')
    result = subprocess.run([VENV_BIN / "mcp-supervisor", "--config", str(config)], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "NOTIFY_SOCKET": ""})
    assert result.returncode == 1
    assert f"{planted} belongs to uid 65534" in result.stderr
    assert not (planted / "control.sock").exists()


# --- the default path -----------------------------------------------------------------------------


def test_the_default_socket_follows_the_configs_owner_not_the_reader(tmp_path: Path) -> None:
    run_user = tmp_path / "run-user"
    (run_user / "1000").mkdir(parents=True)
    assert default_socket_path(0) == Path("/run/mcp-supervisor/control.sock")
    assert default_socket_path(1000, run_user) == run_user / "1000" / "mcp-supervisor" / "control.sock"
    assert default_socket_path(1001, run_user) == Path("/tmp/mcp-supervisor-1001/control.sock")


_RESOLVE = """
import sys
sys.path[:0] = [sys.argv[2], sys.argv[3]]
from mcp_supervisor.config import load_config, resolve_socket_path
print(resolve_socket_path(None, load_config(sys.argv[1], environ={}), {}))
"""


@as_root
@needs_system_python
def test_an_unprivileged_reader_of_the_system_config_finds_the_system_socket(short_tmp: Path) -> None:
    short_tmp.chmod(0o755)
    config = short_tmp / "system.toml"
    config.write_text('[[servers]]\nname = "a"\ntransport = "http"\nurl = "http://127.0.0.1:1/mcp"\n')
    config.chmod(0o644)
    as_daemon = resolve_socket_path(None, load_config(config, environ={}), {})
    site = next(p for p in sys.path if p.endswith("site-packages"))
    assert SYSTEM_PYTHON is not None
    result = subprocess.run([SYSTEM_PYTHON, "-I", "-c", _RESOLVE, str(config), str(ROOT), site], user=65534,
                            group=65534, extra_groups=[], capture_output=True, text=True, timeout=60, cwd="/",
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == as_daemon == Path("/run/mcp-supervisor/control.sock")


# --- supplementary groups -----------------------------------------------------------------------


def test_groups_are_read_from_the_status_line() -> None:
    assert parse_groups("Name:\tx\nGroups:\t4 24 27 \nNSpid:\t1\n") == frozenset({4, 24, 27})
    assert parse_groups("Name:\tx\nGroups:\t\n") == frozenset()


_PEER = """
import json, sys
sys.path.insert(0, sys.argv[2])
from mcp_supervisor.api.client import ApiError, SupervisorClient
try:
    print(json.dumps({"ok": SupervisorClient(sys.argv[1]).health()}))
except ApiError as exc:
    print(json.dumps({"status": exc.status, "code": exc.code}))
"""


@as_root
@needs_system_python
@pytest.mark.parametrize(("extra", "allowed"), [([4242], True), ([4243], False)])
async def test_a_supplementary_group_counts_for_allowed_gids(
    control: DrivenControl, short_tmp: Path, extra: list[int], allowed: bool
) -> None:
    short_tmp.chmod(0o755)
    sock_path = short_tmp / "run" / "ctl.sock"
    server = await start_api_server(control, sock_path, allowed_gids=[4242])
    try:
        assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == 0o711  # others may reach the socket
        assert SYSTEM_PYTHON is not None
        result = await asyncio.to_thread(
            subprocess.run, [SYSTEM_PYTHON, "-I", "-c", _PEER, str(sock_path), str(ROOT)], user=65534, group=65534,
            extra_groups=extra, capture_output=True, text=True, timeout=60, cwd="/", env={"PATH": "/usr/bin:/bin"},
        )
    finally:
        await server.close()
    answer = json.loads(result.stdout)
    assert (answer.get("ok", {}).get("ok") is True) if allowed else (answer["status"] == 403)


# --- bounded requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"[" * 1000 + b"]" * 1000, b'{"a":' * 1000 + b"1" + b"}" * 1000, b"[" * 100_000, b'{"server": "al'],
    ids=["deep-list", "deep-object", "unclosed-deep", "truncated"],
)
async def test_a_deep_or_malformed_body_is_a_400_not_a_500(api: ApiServer, sock_path: Path, body: bytes) -> None:
    status, _, payload = await raw(sock_path, "POST", "/v1/emergency", body)
    assert status == 400 and error_of(payload)["code"] == "bad_json"


async def test_a_body_that_never_arrives_is_a_408(api: ApiServer, sock_path: Path, control: DrivenControl) -> None:
    reader, writer = await asyncio.open_unix_connection(str(sock_path))
    writer.write(b"POST /v1/emergency HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 60)
    writer.close()
    assert data.split(b" ", 2)[1] == b"408"
    assert control.commands == []


async def test_a_header_over_8kb_is_a_4xx_logged_as_one_redacted_json_line(
    api: ApiServer, sock_path: Path, json_log: io.StringIO
) -> None:
    reader, writer = await asyncio.open_unix_connection(str(sock_path))
    writer.write(f"GET /v1/status?token={CANARY} HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 9000}\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert 400 <= int(data.split(b" ", 2)[1]) < 500
    assert error_of(data.partition(b"\r\n\r\n")[2])["code"] == "bad_request"  # the API's JSON, not aiohttp's text
    lines = [line for line in json_log.getvalue().splitlines() if line.strip()]
    assert lines, "the refused request was not logged at all"
    records = [json.loads(line) for line in lines]  # every line is JSON: no plain-text traceback
    assert any(r.get("logger") == "aiohttp.server" and r["level"] == "warning" for r in records)
    assert CANARY not in json_log.getvalue()
    assert all("exception" not in r for r in records)


@pytest.mark.parametrize("request_bytes", [
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40) + b"\r\n\r\n",  # TLS to a plain socket
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
], ids=["bad-content-length", "tls-hello", "bad-header-name"])
async def test_a_request_aiohttp_cannot_parse_gets_the_api_json_error(
    api: ApiServer, sock_path: Path, request_bytes: bytes
) -> None:
    reader, writer = await asyncio.open_unix_connection(str(sock_path))
    writer.write(request_bytes)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"400"
    assert b"application/json" in head
    error = error_of(payload)
    assert error["code"] == "bad_request" and error["message"].startswith("malformed HTTP/1.1 request")


async def test_connections_that_never_finish_their_request_are_closed(api: ApiServer, sock_path: Path) -> None:
    count = 200
    connections = [await asyncio.open_unix_connection(str(sock_path)) for _ in range(count)]
    for index, (_, writer) in enumerate(connections):
        if index % 2:  # half send an unfinished header, half send nothing at all
            writer.write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    began = time.monotonic()

    async def closed(reader: asyncio.StreamReader) -> bytes:
        return await reader.read()

    results = await asyncio.wait_for(asyncio.gather(*(closed(r) for r, _ in connections)), IDLE_TIMEOUT * 8 + 30)
    waited = time.monotonic() - began
    for _, writer in connections:
        writer.close()
    assert all(r == b"" or r.startswith(b"HTTP/1.1 4") for r in results)
    assert waited >= IDLE_TIMEOUT * 0.5  # closed for idling, not refused outright
    status, _, _ = await raw(sock_path, "GET", "/v1/health")
    assert status == 200  # and the API still answers
