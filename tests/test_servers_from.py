"""`servers_from`: the supervisor follows an MCP client file, so the user edits one place."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_supervisor.config import ConfigError, parse_config
from tests.live_daemon import BIN, api, free_port, notes_http, stop, wait_for

pytestmark = pytest.mark.timeout(120)


def client_file(path: Path, servers: dict[str, dict[str, object]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"mcpServers": servers}, indent=2))
    os.replace(tmp, path)  # the way editors and MCP clients save


def config_text(directory: Path, client: Path, *, vault: bool = True) -> str:
    backup = (f'[backup]\nkey_file = "{directory}/vault.key"\nlocations = ["{directory}/backups"]\n'
              if vault else "")
    return f"""
servers_from = "project"

[supervisor]
socket = "{directory}/ctl.sock"
state_dir = "{directory}/state"
log_format = "json"
shutdown_timeout = "2s"

{backup}
[[configs]]
name = "project"
path = "{client}"
format = "mcp-client-json"

[[servers]]
name = "tuned"
transport = "http"
url = "http://127.0.0.1:9/mcp"
critical = false
"""


def test_servers_are_read_from_the_client_file_and_explicit_entries_win(tmp_path: Path) -> None:
    client = tmp_path / ".mcp.json"
    client_file(client, {
        "notes": {"url": "http://127.0.0.1:8000/mcp", "headers": {"Authorization": "Bearer s3cr3t-canary"}},
        "tuned": {"command": "should-not-win"},
        "local": {"command": "python3", "args": ["server.py"], "env": {"TOKEN": "${HOME}"}},
    })
    config = parse_config(config_text(tmp_path, client), tmp_path / "c.toml", environ={"HOME": "/home/u"})
    servers = {s.name: s for s in config.servers}
    assert set(servers) == {"tuned", "notes", "local"}
    assert servers["tuned"].transport == "http"  # the explicit [[servers]] entry overrides the client's
    assert servers["notes"].headers == {"Authorization": "Bearer s3cr3t-canary"}  # used, never written
    assert servers["notes"].config == "project"  # so a damaged client file is restored by the ladder
    assert servers["local"].env == {"TOKEN": "/home/u"}
    assert servers["local"].cwd == tmp_path


@pytest.mark.parametrize("damage", ["cut", "missing", "symlink"])
def test_an_unreadable_client_file_is_a_config_failure_naming_it(tmp_path: Path, damage: str) -> None:
    client = tmp_path / ".mcp.json"
    if damage == "cut":
        client.write_text('{"mcpServers": {"a": ')
    elif damage == "symlink":
        (tmp_path / "elsewhere.json").write_text('{"mcpServers": {"a": {"command": "x"}}}')
        client.symlink_to(tmp_path / "elsewhere.json")
    config = parse_config(config_text(tmp_path, client), tmp_path / "c.toml", environ={})
    placeholder = next(s for s in config.servers if s.name == "project")
    assert placeholder.config_problem and str(client) in placeholder.config_problem
    assert placeholder.critical  # not ready: the job's MCP client reads the same broken file


def test_servers_from_must_name_a_client_config(tmp_path: Path) -> None:
    text = config_text(tmp_path, tmp_path / ".mcp.json").replace('servers_from = "project"', 'servers_from = "nope"')
    with pytest.raises(ConfigError, match="servers_from names 'nope'"):
        parse_config(text, tmp_path / "c.toml", environ={})


@pytest.fixture
def workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="mcpsf-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def server_names(sock: Path) -> set[str]:
    if not sock.exists():
        return set()
    status, body = api(sock, "/v1/status")
    return {s["name"] for s in body["servers"]} if status == 200 else set()


def test_daemon_follows_servers_added_and_removed_in_the_client_file(workdir: Path) -> None:
    port = free_port()
    http = notes_http(port)
    client = workdir / ".mcp.json"
    url = f"http://127.0.0.1:{port}/mcp"
    client_file(client, {"notes": {"url": url}})
    path = workdir / "mcp-supervisor.toml"
    path.write_text(config_text(workdir, client))
    env = {**os.environ}
    env.pop("MCP_SUPERVISOR_SOCKET", None)
    sock = workdir / "ctl.sock"
    with open(workdir / "daemon.log", "wb") as log:
        proc = subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(path)], env=env, stderr=log)
    try:
        wait_for(lambda: server_names(sock) == {"tuned", "notes"}, 30, "the client's server supervised")
        client_file(client, {"notes": {"url": url}, "notes-two": {"url": url}})
        wait_for(lambda: "notes-two" in server_names(sock), 20, "the added server supervised without a restart")
        status, body = api(sock, "/v1/ready?servers=notes-two&wait=20", timeout=30)
        assert status == 200 and body["ready"] is True, body
        client_file(client, {"notes-two": {"url": url}})
        wait_for(lambda: server_names(sock) == {"tuned", "notes-two"}, 20, "the removed server no longer supervised")
        assert proc.poll() is None
    except AssertionError:
        print((workdir / "daemon.log").read_text()[-3000:])
        raise
    finally:
        stop(proc, signal.SIGTERM)
        stop(http)
    assert proc.returncode == 0, (workdir / "daemon.log").read_text()[-2000:]


@pytest.mark.skipif(os.geteuid() != 0, reason="the rule is about a root daemon and a file another user owns")
def test_a_root_daemon_never_runs_commands_from_a_file_another_user_can_edit(tmp_path: Path) -> None:
    client = tmp_path / ".mcp.json"
    client_file(client, {
        "evil": {"command": "sh", "args": ["-c", "touch /etc/owned"]},
        "remote": {"url": "http://127.0.0.1:8000/mcp"},
    })
    os.chown(client, 65534, 65534)
    servers = {s.name: s for s in parse_config(config_text(tmp_path, client), tmp_path / "c.toml", environ={}).servers}
    assert servers["evil"].config_problem and "uid 65534" in servers["evil"].config_problem
    assert "supervisorctl-mcp import" in servers["evil"].config_problem
    assert servers["remote"].config_problem is None  # an HTTP server runs nothing here
    os.chown(client, 0, 0)
    servers = {s.name: s for s in parse_config(config_text(tmp_path, client), tmp_path / "c.toml", environ={}).servers}
    assert servers["evil"].config_problem is None  # root's own file: root's own commands


@pytest.mark.skipif(os.geteuid() != 0, reason="the rule is about a root daemon and a file another user owns")
async def test_the_refused_server_is_a_config_failure_and_nothing_is_spawned(tmp_path: Path) -> None:
    from mcp_supervisor.health.model import FailureClass, ProbeKind
    from mcp_supervisor.probes import ProbeContext, create_prober

    marker = tmp_path / "ran"
    client = tmp_path / ".mcp.json"
    client_file(client, {"evil": {"command": "sh", "args": ["-c", f"touch {marker}"]}})
    os.chown(client, 65534, 65534)
    server = next(s for s in parse_config(config_text(tmp_path, client), tmp_path / "c.toml", environ={}).servers
                  if s.name == "evil")
    context = ProbeContext(max_concurrent_cold=1)
    prober = create_prober(server, context)
    try:
        result = await prober.probe(ProbeKind.COLD)
    finally:
        await prober.aclose()
        await context.aclose()
    assert result.failure is FailureClass.CONFIG and "not run" in result.message
    assert result.hint and "supervisorctl-mcp import" in result.hint
    assert not marker.exists()
