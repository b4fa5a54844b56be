"""One redactor for every way out: canary tokens never leave the daemon or the CLI unmasked.

A real daemon (``mcp-supervisor`` subprocess, JSON logs at debug level) supervises a stdio server
that echoes its secrets in an exception message and an HTTP server whose URL (userinfo, query) and
headers carry tokens, to a local endpoint that echoes what it received. The canaries come from
``env``, ``headers``, the URL's query and userinfo, an ``args`` value marked in ``secret_args``,
and a ``${file:...}`` value; none may appear in the daemon's log, the API's answers, the SSE
stream, or the CLI's output, while the masks prove they were there to be masked.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.api.client import SupervisorClient
from mcp_supervisor.config import parse_config
from mcp_supervisor.logging import get_logger, setup_logging
from mcp_supervisor.redact import MASK, collect_secrets
from tests.live_daemon import supervisor_table
from tests.servers.fixtures import RUN_AS, free_port

BIN = Path(sys.executable).parent
CANARIES = {
    "env": "canary-env-8c1f2a",
    "header": "canary-header-77b0e3",
    "query": "canary-query-41d9aa",
    "userinfo": "canary-userinfo-0e6b1c",
    "arg": "canary-arg-93f7d4",
    "file": "canary-file-5a2c88",
}
LEAKY_STDIO = """
import os, sys
raise RuntimeError("refused key=" + os.environ["API_KEY"] + " arg=" + sys.argv[2] + " file=" + sys.argv[4])
"""


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers 401 with everything it was sent, as a careless upstream would."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps({"path": self.path, "headers": dict(self.headers),
                           "body": self.rfile.read(length).decode(errors="replace")}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("WWW-Authenticate", f'Bearer error="{self.headers.get("Authorization")}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echo_port() -> Iterator[int]:
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()


def write_config(directory: Path, port: int) -> Path:
    secret_file = directory / "token.txt"
    secret_file.write_text(CANARIES["file"] + "\n")
    (directory / "leaky.py").write_text(LEAKY_STDIO)
    c = CANARIES
    path = directory / "sup.toml"
    path.write_text(supervisor_table(directory, 'log_level = "debug"') + f"""

[[servers]]
name = "leaky-stdio"
transport = "stdio"
{RUN_AS}
command = "{sys.executable}"
args = ["{directory}/leaky.py", "--token", "{c['arg']}", "--file", "${{file:{secret_file}}}"]
secret_args = [2]
env = {{ API_KEY = "${{LEAKY_API_KEY}}" }}
probe = {{ interval = "300ms", timeout = "3s", failure_threshold = 1 }}

[[servers]]
name = "leaky-http"
transport = "http"
url = "http://reader:{c['userinfo']}@127.0.0.1:{port}/mcp?token={c['query']}"
headers = {{ Authorization = "Bearer {c['header']}" }}
probe = {{ interval = "300ms", timeout = "3s", failure_threshold = 1 }}
""")
    return path


def leaks(text: str) -> list[str]:
    return [name for name, value in CANARIES.items() if value in text]


def run_cli(config: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_SUPERVISOR_")}
    result = subprocess.run([BIN / "supervisorctl-mcp", *args, "--config", str(config)], capture_output=True,
                            text=True, timeout=60, env={**env, "COLUMNS": "300", "NO_COLOR": "1"})
    return result.stdout + result.stderr


def test_canaries_never_leave_unmasked(short_tmp: Path, echo_port: int) -> None:
    config = write_config(short_tmp, echo_port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_SUPERVISOR_")}
    env.update(LEAKY_API_KEY=CANARIES["env"], NOTIFY_SOCKET="")
    log_path = short_tmp / "daemon.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen([BIN / "mcp-supervisor", "--config", str(config)], env=env, stderr=log)
    sse: list[str] = []
    try:
        client = SupervisorClient(short_tmp / "ctl.sock", timeout=10)
        deadline = time.monotonic() + 60
        while True:
            assert daemon.poll() is None, log_path.read_text()
            with contextlib.suppress(Exception):
                client.health()
                break
            assert time.monotonic() < deadline, "the daemon did not come up"
            time.sleep(0.05)

        def follow() -> None:
            with contextlib.suppress(Exception):
                for event in SupervisorClient(short_tmp / "ctl.sock", timeout=None).events():
                    sse.append(json.dumps(event))

        threading.Thread(target=follow, daemon=True).start()

        def reported() -> bool:
            servers = {s["name"]: s for s in client.status()["servers"]}
            stdio, http = servers["leaky-stdio"], servers["leaky-http"]
            return MASK in stdio["message"] and http["failure_class"] == "auth"

        while not reported():
            assert time.monotonic() < deadline, f"no masked failure reported: {client.status()}"
            time.sleep(0.1)
        api_text = json.dumps(client.status()) + json.dumps(client.probe("leaky-stdio"))
        api_text += json.dumps(client.probe("leaky-http"))
        cli_text = "".join(run_cli(config, *args) for args in
                           (["status"], ["status", "--json"], ["probe", "leaky-stdio"], ["probe", "leaky-http", "--json"]))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    log_text = log_path.read_text()
    for line in log_text.splitlines():
        if line.strip():
            json.loads(line)  # every line JSON, tracebacks included
    sse_text = "\n".join(sse)
    assert "leaky-stdio" in sse_text and MASK in api_text and MASK in cli_text
    assert "RuntimeError" in api_text  # the exception message was reported, with its secrets masked
    assert leaks(log_text) == [] and leaks(api_text) == [] and leaks(sse_text) == [] and leaks(cli_text) == []


def test_stdlib_tracebacks_are_one_redacted_json_line_and_sdk_traces_one_line(tmp_path: Path) -> None:
    text = '[[servers]]\nname = "a"\ntransport = "http"\nurl = "http://127.0.0.1:1/mcp?key=' + CANARIES["query"] + '"\n'
    stream = io.StringIO()
    setup_logging("info", "json", collect_secrets(parse_config(text, environ={})), stream=stream)
    try:
        try:
            raise ConnectionError(f"lost http://127.0.0.1:1/mcp?key={CANARIES['query']}")
        except ConnectionError:
            logging.getLogger("some.library").exception("library failed")
            logging.getLogger("mcp.client.sse").exception("Error in sse_reader")
            get_logger("ours").exception("ours failed")
    finally:
        setup_logging("info", "json", (), stream=sys.stderr)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(records) == 3 and leaks(stream.getvalue()) == []
    library, sdk, ours = records
    assert "Traceback" in library["exception"] and library["logger"] == "some.library"
    assert "exception" not in sdk and sdk["event"].startswith("Error in sse_reader: ConnectionError: lost")
    assert "Traceback" in ours["exception"]
