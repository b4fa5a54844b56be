"""Misbehaving stdio "MCP servers", one per failure class the probes must recognise.

Usage: python tests/servers/misbehave.py MODE
  exit          writes a message to stderr and exits at once with status 3
  exit-leak     prints $API_TOKEN on stderr and exits (the probe must not repeat it)
  hang          reads stdin and never answers (no import of the SDK: starts in ~30 ms)
  garbage       answers every line with text that is not JSON-RPC
  badversion    answers server/discover with -32022 naming only an unknown version, and
                initialize with that unknown version
  ignore-term   a real SDK server that ignores SIGTERM and has a child that ignores it too
  hang-ignore-term  never answers, ignores SIGTERM, has a child that ignores it too
When MISBEHAVE_PIDFILE is set, every process of the server appends its pid there, so a test can
check by pid that nothing survives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

_SLEEPER = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def _record_pid(pid: int) -> None:
    path = os.environ.get("MISBEHAVE_PIDFILE")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{pid}\n")


def _spawn_stubborn_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", _SLEEPER])  # same process group as this server
    _record_pid(child.pid)


def _reply(msg_id: object, *, result: object = None, error: dict[str, object] | None = None) -> None:
    body: dict[str, object] = {"jsonrpc": "2.0", "id": msg_id}
    if error is not None:
        body["error"] = error
    else:
        body["result"] = result
    sys.stdout.write(json.dumps(body) + "\n")
    sys.stdout.flush()


def _badversion() -> None:
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "id" not in msg:
            continue
        if msg.get("method") == "server/discover":
            _reply(msg["id"], error={"code": -32022, "message": "Unsupported protocol version",
                                     "data": {"supported": ["1999-01-01"], "requested": "x"}})
        elif msg.get("method") == "initialize":
            _reply(msg["id"], result={"protocolVersion": "1999-01-01", "capabilities": {},
                                      "serverInfo": {"name": "badversion", "version": "0"}})
        else:
            _reply(msg["id"], error={"code": -32601, "message": "Method not found"})


def _sdk_server() -> None:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("stubborn", version="1.0.0")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    server.run("stdio")


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    _record_pid(os.getpid())
    if mode == "exit-leak":  # a careless server that prints its token when it gives up
        sys.stderr.write(f"auth failed with token {os.environ.get('API_TOKEN', '')}\n")
        raise SystemExit(4)
    if mode == "exit":
        sys.stderr.write("fatal: JIRA_URL is not set; cannot start\n")
        sys.stderr.flush()
        raise SystemExit(3)
    if mode == "hang":
        for _line in sys.stdin:
            pass
        time.sleep(600)
    elif mode == "garbage":
        for _line in sys.stdin:
            sys.stdout.write("Welcome to my server! Loading plugins...\n")
            sys.stdout.flush()
    elif mode == "badversion":
        _badversion()
    elif mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _spawn_stubborn_child()
        _sdk_server()
    elif mode == "hang-ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _spawn_stubborn_child()
        while True:
            time.sleep(600)
    else:
        raise SystemExit(f"usage: {sys.argv[0]} exit|hang|garbage|badversion|ignore-term|hang-ignore-term")


if __name__ == "__main__":
    main()
