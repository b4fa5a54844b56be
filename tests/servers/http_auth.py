"""Misbehaving HTTP endpoints: what a gateway, a wrong URL or a wedged server answers.

- ``/mcp`` (and ``/sse``): 401 without an Authorization header, 403 with one (expired token);
- ``/html``: 200 with an HTML page (a URL pointing at a web app, not an MCP endpoint);
- ``/hang``: accepts the request and never answers.
Why aiohttp and not the SDK: the point is what answers before any MCP happens.
``python tests/servers/http_auth.py PORT`` runs it standalone.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


async def _html(request: web.Request) -> web.Response:
    return web.Response(text="<html><body>Welcome to the dashboard</body></html>", content_type="text/html")


async def _hang(request: web.Request) -> web.Response:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _handle(request: web.Request) -> web.Response:
    if "Authorization" not in request.headers:
        return web.json_response({"error": "missing token"}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="mcp"'})
    return web.json_response({"error": "token expired"}, status=403)


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/html", _html)
    app.router.add_route("*", "/hang", _hang)
    app.router.add_route("*", "/{tail:.*}", _handle)
    return app


async def start(port: int = 0) -> tuple[web.AppRunner, str]:
    """Start in the running loop on 127.0.0.1; returns the runner (call ``cleanup()``) and the URL."""
    runner = web.AppRunner(make_app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    bound = server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{bound}/mcp"


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(sys.argv[1]))
