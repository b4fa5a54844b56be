"""A backend that answers at once, for ``bench_proxy.py``: what the proxy itself adds and carries.

Not an MCP server (it answers every POST with an empty JSON-RPC result for the request's id, and
405 to the GET stream), so the figures measured against it are the proxy's own: the SDK server
behind the other figures tops out near 200 calls/s on these machines, far below the proxy.
Usage: python bench/fast_backend.py PORT
"""

from __future__ import annotations

import json
import sys

from aiohttp import web


async def answer(request: web.Request) -> web.Response:
    message = json.loads(await request.read())
    if "id" not in message:
        return web.Response(status=202)
    return web.Response(body=json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {
        "content": [{"type": "text", "text": "fast"}], "isError": False}}), content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/mcp", answer)
    app.router.add_get("/mcp", lambda request: web.Response(status=405))
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
