"""A recording, switchable HTTP proxy in front of a real MCP server (for the light warm check tests).

It forwards every request to the upstream server unchanged (streaming SSE answers through) and
records what the client sent: the JSON-RPC method, the routing headers and the client's name.
``mode`` turns it into a fault on demand, while the upstream server keeps running:
``"pass"`` forwards, ``"hang"`` accepts and never answers, ``"401"`` answers 401 as a gateway
whose token was revoked, ``"html"`` answers 200 with a web page, ``"no-raw"`` answers 400 to the
supervisor's raw light check only (a server that takes the SDK's requests but not that one),
``"stall"`` blocks the event loop it shares with an in-process supervisor for ``stall`` seconds
once, then forwards (the daemon's own loop was late; the server was fine), ``"429"`` answers
"too many requests" as a rate-limiting gateway (``Retry-After: retry_after`` unless None).
Why a proxy and not a patched server: the server stays the official SDK's, untouched.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass
class Seen:
    method: str | None
    mcp_method: str | None
    protocol_header: str | None
    session_id: str | None
    client_name: str | None
    request_id: object = None
    authorization: str | None = None


@dataclass
class Proxy:
    upstream: str
    mode: str = "pass"
    seen: list[Seen] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""
    stall: float = 1.5
    retry_after: str | None = "5"
    _client: aiohttp.ClientSession | None = None

    def methods(self) -> list[str | None]:
        return [s.method for s in self.seen]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self._record(request, body)
        if self.mode == "stall":
            self.mode = "pass"
            time.sleep(self.stall)  # on purpose: the whole event loop stops, as under a daemon's own load
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.mode == "401":
            return web.json_response({"error": "token revoked"}, status=401)
        if self.mode == "no-raw" and self.seen[-1].client_name == "mcp-supervisor":
            return web.json_response({"jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "no"}}, status=400)
        if self.mode == "429":
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return web.json_response({"error": {"code": 429, "message": "slow down: 60 requests a minute"}},
                                     status=429, headers=headers)
        if self.mode == "html":
            return web.Response(text="<html><body>maintenance</body></html>", content_type="text/html")
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._client.request(request.method, self.upstream, data=body or None, headers=headers) as up:
            out = web.StreamResponse(status=up.status)
            for key, value in up.headers.items():
                if key.lower() not in _HOP:
                    out.headers[key] = value
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    def _record(self, request: web.Request, body: bytes) -> None:
        method = client = request_id = None
        if body:
            try:
                message: Any = json.loads(body)
            except ValueError:
                message = None
            if isinstance(message, dict):
                method = message.get("method")
                request_id = message.get("id")
                meta = (message.get("params") or {}).get("_meta") or {}
                info = meta.get("io.modelcontextprotocol/clientInfo") or (message.get("params") or {}).get("clientInfo")
                client = info.get("name") if isinstance(info, dict) else None
        self.seen.append(Seen(method, request.headers.get("Mcp-Method"), request.headers.get("MCP-Protocol-Version"),
                              request.headers.get("Mcp-Session-Id"), client, request_id,
                              request.headers.get("Authorization")))

    async def start(self, port: int = 0) -> Proxy:
        self._client = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)  # a port again: the same address back
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp"
        return self

    async def stop(self) -> None:
        runner, client, self.runner, self._client = self.runner, self._client, None, None
        if runner is not None:
            await runner.cleanup()
        if client is not None:
            await client.close()
