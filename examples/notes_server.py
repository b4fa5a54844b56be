"""A small MCP server for the example config: `make run` supervises it over stdio and HTTP.

Built with the official SDK so the example exercises exactly what a real deployment would.
Usage: python examples/notes_server.py [stdio | http PORT | sse PORT]
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from mcp.server.mcpserver import MCPServer

server = MCPServer("example-notes", version="1.0.0")
_notes: list[str] = []


@server.tool()
def add_note(text: str) -> str:
    """Store a note in memory."""
    _notes.append(text)
    return f"stored note #{len(_notes)}"


@server.tool()
def list_notes() -> list[str]:
    """Return every stored note."""
    return list(_notes)


@server.tool()
def utc_now() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(UTC).isoformat()


def main(argv: list[str]) -> None:
    transport = argv[1] if len(argv) > 1 else "stdio"
    port = int(argv[2]) if len(argv) > 2 else 8765
    if transport == "stdio":
        server.run("stdio")
    elif transport == "http":
        server.run("streamable-http", host="127.0.0.1", port=port)
    elif transport == "sse":
        server.run("sse", host="127.0.0.1", port=port)
    else:
        raise SystemExit(f"usage: {argv[0]} [stdio | http PORT | sse PORT]")


if __name__ == "__main__":
    main(sys.argv)
