"""One real SDK Streamable-HTTP server answering at any number of paths: ``/s/<i>/mcp``.

Why: a gateway with hundreds of MCP servers behind one address is what the scale tests need, and
hundreds of processes would cost minutes of CPU on a small machine. The SDK app is mounted once;
a thin ASGI wrapper maps ``/s/<i>/mcp`` to its ``/mcp``, so every path is a full MCP endpoint
(both protocol eras, kept-open sessions with their GET streams) served by the official SDK.

Usage: python tests/servers/many_paths.py PORT
"""

from __future__ import annotations

import re
import sys
from typing import Any

from mcp.server.mcpserver import MCPServer

_PATH = re.compile(r"^/s/\d+(/mcp/?)$")


def app() -> Any:
    server = MCPServer("many-paths", version="1.0.0")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    inner = server.streamable_http_app()

    async def many(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            match = _PATH.match(scope["path"])
            if match is None:
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            scope = {**scope, "path": match.group(1), "raw_path": match.group(1).encode()}
        await inner(scope, receive, send)

    return many


def main(port: int) -> None:
    import uvicorn

    uvicorn.run(app(), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]))
