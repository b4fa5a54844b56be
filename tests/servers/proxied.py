"""An SDK server for the proxy tests: a read-only tool, a non-idempotent one that counts its runs.

Usage: python tests/servers/proxied.py (stdio | http PORT | sse PORT) COUNT_FILE

``charge`` appends one line to COUNT_FILE when it starts, then waits ``delay`` seconds: the test
kills the server in that window and reads the file to prove the call ran at most once.
``lookup`` is annotated readOnlyHint; ``slow_lookup`` too, with a delay and progress notifications;
``regional_lookup`` declares ``x-mcp-header`` (a 2026-era HTTP call needs ``Mcp-Param-Region``);
``ask_name`` sends the client an elicitation and a roots/list request; ``upstream`` fails with the
text of COUNT_FILE.broken while it exists (a broken upstream behind a healthy server).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

server = MCPServer("proxied", version="1.0.0")
COUNT = Path(sys.argv[3] if len(sys.argv) > 3 else sys.argv[2] if len(sys.argv) > 2 else os.devnull)
READ_ONLY = ToolAnnotations(readOnlyHint=True)


@server.tool(annotations=READ_ONLY)
def lookup(query: str) -> str:
    """Find something (read-only)."""
    return f"found {query} (pid {os.getpid()})"


@server.tool(annotations=READ_ONLY)
async def slow_lookup(query: str, delay: float, ctx: Context) -> str:
    """Find something slowly, reporting progress (read-only)."""
    await ctx.report_progress(0.5, 1.0, "half way")
    await asyncio.sleep(delay)
    return f"found {query} slowly"


@server.tool(annotations=READ_ONLY)
def regional_lookup(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})], query: str) -> str:
    """Find something in a region; the region is mirrored into an ``Mcp-Param-Region`` header (2026 era)."""
    return f"found {query} in {region}"


class Name(BaseModel):
    name: str


@server.tool()
async def ask_name(ctx: Context) -> str:
    """Ask the client (elicitation) and the client's roots: server-to-client requests."""
    answer = await ctx.elicit("Who are you?", Name)
    roots = await ctx.request_context.session.list_roots()
    who = answer.data.name if answer.action == "accept" and answer.data else answer.action
    return f"hello {who}, {len(roots.roots)} root(s)"


@server.tool(annotations=READ_ONLY)
async def wait(seconds: float) -> str:
    """Wait; writes 'started', then 'cancelled' when the client's cancellation reaches it, to COUNT_FILE.waits."""
    with COUNT.with_name(COUNT.name + ".waits").open("a") as handle:
        handle.write("started\n")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        with COUNT.with_name(COUNT.name + ".waits").open("a") as handle:
            handle.write("cancelled\n")
        raise
    return "waited"


@server.tool(annotations=READ_ONLY)
def upstream() -> str:
    """What a deep check calls: fails with the text in COUNT_FILE.broken while that file exists."""
    broken = COUNT.with_name(COUNT.name + ".broken")
    if broken.exists():
        raise ToolError(broken.read_text().strip())  # its text reaches the client, like a real upstream error
    return "upstream ok"


@server.tool()
async def charge(amount: int, delay: float = 0.0) -> str:
    """Charge a card: not safe to repeat. Each run is counted in the count file."""
    with COUNT.open("a") as handle:
        handle.write(f"{amount}\n")
    await asyncio.sleep(delay)
    return f"charged {amount}"


def main() -> None:
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if transport == "stdio":
        server.run("stdio")
    elif transport in ("http", "sse"):
        server.run("streamable-http" if transport == "http" else "sse", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
