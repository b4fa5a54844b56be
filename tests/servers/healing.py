"""MCP servers that break the way real ones do, for the healing tests (run as separate processes).

- ``datafile PATH``: a stdio server that reads its data file at startup, like ``mcp-server-git
  --repository DIR`` or a sqlite server: with the file moved away a fresh start dies with the
  server's own error line, while a copy started earlier keeps answering.
- ``token-file PORT PATH``: a Streamable-HTTP server that answers 401 unless the request's bearer
  token equals the one in PATH (read on every request), like a server whose credentials a person
  renews: fix the file and it accepts again, without a restart.
- ``exit-until PORT MARKER``: prints a fatal line, waits half a second and exits 1 on every start,
  until MARKER exists; then it is a healthy Streamable-HTTP server (the crash loop is "fixed").
- ``contract PORT PATH``: a Streamable-HTTP server whose release is read from PATH at startup:
  ``1.0.0`` has ``search(query)``, any other release ``search(query, limit)`` (a new required
  argument), as an upgrade (``npx pkg@latest``) changes a tool's input schema.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer


def _server(name: str) -> MCPServer:
    server = MCPServer(name, version="1.0.0")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    return server


def _datafile(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    path.read_bytes()
    _server("datafile").run("stdio")


def _token_file(port: int, token_file: Path) -> None:
    import uvicorn

    app = _server("token-file").streamable_http_app()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            expected = b"Bearer " + token_file.read_bytes().strip()
            given = dict(scope["headers"]).get(b"authorization", b"")
            if given != expected:
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"www-authenticate", b'Bearer error="invalid_token"')]})
                await send({"type": "http.response.body", "body": b'{"error": "invalid_token"}'})
                return
        await app(scope, receive, send)

    uvicorn.run(guarded, host="127.0.0.1", port=port, log_level="warning")


def _exit_until(port: int, marker: Path) -> None:
    if not marker.exists():
        print("fatal: JIRA_TOKEN rejected by https://jira.example (401)", file=sys.stderr, flush=True)
        time.sleep(0.5)
        raise SystemExit(1)
    _server("fixed").run("streamable-http", host="127.0.0.1", port=port)


def _contract(port: int, release_file: Path) -> None:
    release = release_file.read_text().strip()
    server = MCPServer("contract", version=release)
    if release == "1.0.0":
        @server.tool()
        def search(query: str) -> str:
            """Search the notes."""
            return query
    else:
        @server.tool()
        def search(query: str, limit: int) -> str:  # type: ignore[misc]  # the upgraded contract
            """Search the notes."""
            return query[:limit]
    server.run("streamable-http", host="127.0.0.1", port=port)


def main(argv: list[str]) -> None:
    mode = argv[1] if len(argv) > 1 else ""
    if mode == "datafile":
        _datafile(Path(argv[2]))
    elif mode == "token-file":
        _token_file(int(argv[2]), Path(argv[3]))
    elif mode == "exit-until":
        _exit_until(int(argv[2]), Path(argv[3]))
    elif mode == "contract":
        _contract(int(argv[2]), Path(argv[3]))
    else:
        raise SystemExit(f"usage: {argv[0]} datafile PATH | token-file PORT PATH | exit-until PORT MARKER | contract PORT PATH")


if __name__ == "__main__":
    main(sys.argv)
