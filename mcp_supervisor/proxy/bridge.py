"""The stdio bridge: MCP on stdin/stdout, carried to the daemon's proxy over the control socket.

Why: many MCP clients only spawn commands. ``supervisorctl-mcp proxy NAME`` is such a command:
each line on stdin is POSTed to ``/v1/proxy/NAME/mcp`` on the Unix socket (whose uid/gid rule
decides who may; no token), every answer (JSON or an event stream) becomes lines on stdout, and
after the handshake a GET stream carries what the server sends on its own. The session lives in
the daemon, so a restart of the server behind it never reaches this process.

A stdio client of the 2026-07-28 era sends no HTTP headers, so the bridge adds what that era's HTTP
needs: the routing headers, the ``Mcp-Param-*`` headers a tool's ``x-mcp-header`` schema asks for
(learned from the ``tools/list`` answers it relays, or one list of its own before the first call),
and cancellation the HTTP way: a ``notifications/cancelled`` naming a request in flight closes
that request's POST (the daemon then abandons the backend call), it is not POSTed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

from mcp_supervisor.proxy.wire import (
    INTERNAL_ERROR,
    PARSE_ERROR,
    SESSION_HEADER,
    VERSION_HEADER,
    BadMessage,
    Message,
    error,
    is_request,
    modern_version,
    parse_message,
    sse_parser,
)

MAX_LINE = 16 * 1024 * 1024


def modern_headers(message: Message, param_maps: dict[str, dict[tuple[str, ...], str]] | None = None) -> dict[str, str]:
    """The headers a 2026-era request needs over HTTP (a stdio client sends none): version, method,
    name, and for ``tools/call`` the ``Mcp-Param-*`` headers of the tool's ``x-mcp-header`` map."""
    version = modern_version(message, None)
    if version is None or not is_request(message):
        return {}
    from mcp.shared.inbound import (
        MCP_METHOD_HEADER,
        MCP_NAME_HEADER,
        NAME_BEARING_METHODS,
        encode_header_value,
        mcp_param_headers,
    )

    headers = {VERSION_HEADER: version, MCP_METHOD_HEADER: message["method"]}
    key = NAME_BEARING_METHODS.get(message["method"])
    params = message.get("params") or {}
    if key is not None and isinstance(params.get(key), str):
        headers[MCP_NAME_HEADER] = encode_header_value(params[key])
    tool = params.get("name") if message["method"] == "tools/call" else None
    header_map = (param_maps or {}).get(tool) if isinstance(tool, str) else None
    if header_map and isinstance(params.get("arguments"), dict):
        headers.update(mcp_param_headers(header_map, params["arguments"]))
    return headers


def learn_param_maps(result: Any, into: dict[str, dict[tuple[str, ...], str]]) -> bool:
    """Record each listed tool's ``x-mcp-header`` map (a tool whose annotations are invalid gets
    none, as the SDK client drops it); True when ``result`` was a tools/list result."""
    tools = result.get("tools") if isinstance(result, dict) else None
    if not isinstance(tools, list):
        return False
    from mcp.shared.inbound import find_invalid_x_mcp_header, x_mcp_header_map

    for tool in tools:
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
            schema = tool.get("inputSchema")
            valid = find_invalid_x_mcp_header(schema) is None
            into[tool["name"]] = x_mcp_header_map(schema) if valid else {}
    return True


class Bridge:
    def __init__(self, socket_path: Path, name: str, out: Any = None) -> None:
        self._path = f"/v1/proxy/{name}/mcp"
        self._socket = socket_path
        self._out = out if out is not None else sys.stdout.buffer
        self._session_id: str | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._modern_posts: dict[Any, asyncio.Task[None]] = {}
        """2026-era requests in flight by the client's id: a cancel closes the POST."""
        self._param_maps: dict[str, dict[tuple[str, ...], str]] = {}
        self._listed: asyncio.Task[None] | None = None

    def _write(self, message: Message) -> None:
        learn_param_maps(message.get("result"), self._param_maps)
        self._out.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        self._out.flush()

    async def run(self, stdin: asyncio.StreamReader) -> int:
        connector = aiohttp.UnixConnector(path=str(self._socket))
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as http:
            self._http = http
            while True:
                try:
                    line = await stdin.readline()
                except ValueError:  # a line longer than the limit
                    self._write(error(None, PARSE_ERROR, f"a line longer than {MAX_LINE} bytes was dropped"))
                    continue
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    message = parse_message(line)
                except BadMessage as exc:
                    self._write(error(None, exc.code, str(exc)))
                    continue
                if not self._cancel(message):
                    task = self._start(self._forward(message))
                    if is_request(message) and modern_version(message, None) is not None:
                        self._track(message["id"], task)
            for task in list(self._tasks):
                if task.get_name() != "listen":
                    with contextlib.suppress(Exception, asyncio.CancelledError):  # a cancelled call
                        await task
            await self._close()
        return 0

    def _start(self, coro: Any, name: str = "forward") -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _track(self, request_id: Any, task: asyncio.Task[None]) -> None:
        key = (type(request_id).__name__, request_id)  # "1" and 1 are different ids
        self._modern_posts[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._modern_posts.get(key) is done:
                del self._modern_posts[key]

        task.add_done_callback(forget)

    def _cancel(self, message: Message) -> bool:
        """A 2026-era cancellation: close the named request's POST instead of sending the notification."""
        if message.get("method") != "notifications/cancelled":
            return False
        params = message.get("params")
        target = params.get("requestId") if isinstance(params, dict) else None
        task = self._modern_posts.pop((type(target).__name__, target), None)
        if task is None:
            return False  # a handshake-era request: the notification itself is the signal
        task.cancel()
        return True

    def _headers(self, message: Message | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if self._session_id:
            headers[SESSION_HEADER] = self._session_id
        if message is not None:
            headers.update(modern_headers(message, self._param_maps))
        return headers

    async def _list_tools(self, message: Message) -> None:
        """One tools/list of the bridge's own (not relayed) before the first 2026-era tool call the
        client makes without having listed: the ``Mcp-Param-*`` headers need each tool's schema."""
        assert self._http is not None
        params = message.get("params") or {}
        meta = params.get("_meta") if isinstance(params, dict) else None
        listing = {"jsonrpc": "2.0", "id": "mcp-supervisor-bridge-tools", "method": "tools/list",
                   "params": {"_meta": meta} if isinstance(meta, dict) else {}}
        with contextlib.suppress(aiohttp.ClientError, OSError, ValueError):
            async with self._http.post(f"http://daemon{self._path}", data=json.dumps(listing),
                                       headers=self._headers(listing)) as response:
                if response.headers.get("Content-Type", "").startswith("text/event-stream"):
                    parser = sse_parser()
                    async for chunk in response.content.iter_any():
                        for event in parser.feed(chunk):
                            learn_param_maps(json.loads(event.data).get("result"), self._param_maps)
                else:
                    learn_param_maps((await response.json(content_type=None)).get("result"), self._param_maps)

    async def _forward(self, message: Message) -> None:
        assert self._http is not None
        request_id = message.get("id") if is_request(message) else None
        params = message.get("params")
        if (request_id is not None and message["method"] == "tools/call" and isinstance(params, dict)
                and params.get("name") not in self._param_maps and modern_version(message, None) is not None):
            if self._listed is None:
                self._listed = asyncio.ensure_future(self._list_tools(message))
            await asyncio.shield(self._listed)
        try:
            async with self._http.post(f"http://daemon{self._path}", data=json.dumps(message),
                                       headers=self._headers(message)) as response:
                if message.get("method") == "initialize" and response.headers.get(SESSION_HEADER):
                    self._session_id = response.headers[SESSION_HEADER]
                    self._start(self._listen(), "listen")
                if response.status == 202 or request_id is None:
                    return
                if response.headers.get("Content-Type", "").startswith("text/event-stream"):
                    await self._relay(response)
                    return
                self._write(_as_rpc(await response.read(), request_id, response.status))
        except (aiohttp.ClientError, OSError) as exc:
            if request_id is not None:
                self._write(error(request_id, INTERNAL_ERROR, f"cannot reach the supervisor at {self._socket}: {exc} "
                                  "(is mcp-supervisor running?)"))

    async def _listen(self) -> None:
        assert self._http is not None
        with contextlib.suppress(aiohttp.ClientError, OSError, ValueError):
            async with self._http.get(f"http://daemon{self._path}", headers=self._headers()) as response:
                if response.status != 200:
                    return
                await self._relay(response)

    async def _relay(self, response: aiohttp.ClientResponse) -> None:
        """Each event of an answer stream as one line on stdout."""
        parser = sse_parser()
        async for chunk in response.content.iter_any():
            for event in parser.feed(chunk):
                self._write(json.loads(event.data))

    async def _close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session_id and self._http is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0), self._http.delete(f"http://daemon{self._path}",
                                                                   headers=self._headers()):
                    pass


def _as_rpc(body: bytes, request_id: Any, status: int) -> Message:
    """The daemon's answer as a JSON-RPC message (its API errors are ``{"error": {...}}``)."""
    try:
        data = json.loads(body)
    except ValueError:
        return error(request_id, INTERNAL_ERROR, f"the supervisor answered HTTP {status} without JSON")
    if isinstance(data, dict) and data.get("jsonrpc") == "2.0":
        return {**data, "id": data.get("id") if data.get("id") is not None else request_id}
    problem = data.get("error") if isinstance(data, dict) else None
    text = problem.get("message") if isinstance(problem, dict) else f"HTTP {status}"
    return error(request_id, INTERNAL_ERROR, f"the supervisor refused: {text}")


async def bridge_stdio(socket_path: Path, name: str) -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return await Bridge(socket_path, name).run(reader)
