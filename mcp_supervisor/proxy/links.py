"""The proxy's backend transports: Streamable HTTP, legacy HTTP+SSE, and stdio.

Why aiohttp (and ``http1.py`` for the per-call POSTs) and not the SDK's client transports for HTTP:
the proxy must see the HTTP status of every answer (404 or 400 means "session not found": re-run
the handshake; a refused connection means the request never reached the server, so even an unsafe
call may be sent again), and the added latency budget per call (about a millisecond) leaves no
room for a second framing layer.

A link is one connection generation: the shell makes a new one after every loss. It reports what
it sees through two callbacks and never decides anything: ``on_message(message, related)``
(``related``: the backend id of the request whose answer stream carried it) and
``on_lost(reason, unsent)`` (``unsent``: the backend id of a request that certainly did not
reach the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import aiohttp

from mcp_supervisor.auth import registry
from mcp_supervisor.config import ServerConfig
from mcp_supervisor.probes.ratelimit import parse_retry_after
from mcp_supervisor.proxy.http1 import ConnectError, Pool, Response
from mcp_supervisor.proxy.limits import limit_answer
from mcp_supervisor.proxy.wire import (
    INTERNAL_ERROR,
    SESSION_HEADER,
    VERSION_HEADER,
    Message,
    error,
    is_request,
    sse_parser,
)

OnMessage = Callable[[Message, int | None], None]
OnLost = Callable[[str, int | None], None]
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class LinkAuth:
    """An OAuth server's side of a link: its live headers (``auth.registry.probe_headers``: the
    owner's current token at each read), a renewal to ask for, and the fix to name."""

    headers: Mapping[str, str]
    refresh: Callable[[], Awaitable[bool]]
    hint: Callable[[], str | None]


def link_auth(server: ServerConfig) -> LinkAuth | None:
    """The token owner's side of ``server``'s links (None without ``auth``): the job never holds
    the token; the proxy adds it to every request it forwards."""
    if server.auth is None:
        return None
    name = server.name
    return LinkAuth(registry.probe_headers(server), lambda: registry.refresh_now(name),
                    lambda: registry.auth_hint(server))


class BackendLink(Protocol):
    async def open(self) -> None:
        """Raise OSError (or aiohttp.ClientError) when the backend is not there yet."""

    def send(self, message: Message, headers: Mapping[str, str] | None = None) -> None:
        """Hand a message to the backend; answers and failures come through the callbacks."""

    def abandon(self, backend_id: int) -> None:
        """Cancel a 2026-era request the client gave up on (HTTP: close its POST)."""

    async def close(self) -> None: ...


class _Tasks:
    """The link's background tasks: cancelled together on close."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def start(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def cancel(self) -> None:
        self.closed = True
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(BaseException):
                await task


async def tcp_reachable(url: str) -> None:
    """Raise OSError unless something accepts a TCP connection at the URL's host and port."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), CONNECT_TIMEOUT)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _session_gone(status: int, body: bytes, had_session: bool) -> bool:
    """404 (Python SDK servers) or 400 naming the session (Node servers) to a request that
    carried a session id: the server restarted and forgot it."""
    if not had_session:
        return False
    return status == 404 or (status == 400 and b"session" in body.lower())


def _http_error(message: Message, status: int, body: bytes, retry_after: str | None = None) -> Message:
    """A JSON-RPC error for a request the backend answered with an HTTP error; a 429 becomes the
    rate-limit error the core holds safe calls on (its words, its ``Retry-After`` in seconds)."""
    parsed: Any = None
    with contextlib.suppress(ValueError):
        parsed = json.loads(body)
    found = parsed.get("error") if isinstance(parsed, dict) else None
    if status == 429:
        found = found if isinstance(found, dict) else {"message": body.decode("utf-8", "replace")[:160].strip()}
        return {"jsonrpc": "2.0", "id": message["id"], "error": limit_answer(status, found,
                                                                             parse_retry_after(retry_after))}
    if isinstance(found, dict):
        return {"jsonrpc": "2.0", "id": message["id"], "error": found}
    return error(message["id"], INTERNAL_ERROR, f"the server answered HTTP {status}",
                 {"status": status})


async def _read_events(response: aiohttp.ClientResponse, deliver: Callable[[str, str], None]) -> None:
    parser = sse_parser()
    async for chunk in response.content.iter_any():
        for event in parser.feed(chunk):
            deliver(event.event, event.data)


class HttpLink:
    """Streamable HTTP: a POST per message, answers as JSON or an event stream, and (handshake
    era) a GET stream for what the server sends on its own."""

    def __init__(self, url: str, http: aiohttp.ClientSession, headers: Mapping[str, str],
                 on_message: OnMessage, on_lost: OnLost, auth: LinkAuth | None = None) -> None:
        self.url = url
        self._pool = Pool()  # the hot path's own HTTP/1.1 client (http1.py); GET/DELETE use aiohttp
        self._http = http
        self._auth = auth
        self._headers = {**headers, "Accept": "application/json, text/event-stream",
                         "Content-Type": "application/json"}
        self._on_message = on_message
        self._on_lost = on_lost
        self._tasks = _Tasks()
        self._posts: dict[int, asyncio.Task[None]] = {}
        self.session_id: str | None = None
        self.protocol_version: str | None = None

    async def open(self) -> None:
        await tcp_reachable(self.url)

    def send(self, message: Message, headers: Mapping[str, str] | None = None) -> None:
        task = self._tasks.start(self._post(message, headers))
        request_id = message.get("id")
        if isinstance(request_id, int) and "method" in message:
            self._posts[request_id] = task

            def forget(_task: asyncio.Task[None], key: int = request_id) -> None:
                if self._posts.get(key) is _task:
                    del self._posts[key]

            task.add_done_callback(forget)

    def abandon(self, backend_id: int) -> None:
        task = self._posts.pop(backend_id, None)
        if task is not None:
            task.cancel()

    def _lost(self, reason: str, unsent: int | None) -> None:
        if not self._tasks.closed:
            self._tasks.closed = True
            self._on_lost(reason, unsent)

    def _deliver(self, data: str | bytes, related: int | None, handshake: bool = False) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return  # a broken frame from the server: only its request's deadline can tell
        if not isinstance(message, dict):
            return
        result = message.get("result")
        if handshake and isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
            self.protocol_version = result["protocolVersion"]  # before anything else is sent
            self._after_handshake()
        self._on_message(message, related)

    def _request_headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = dict(self._headers)
        if self._auth is not None:
            headers.update(self._auth.headers)  # the owner's current token, read per request
        if self.session_id:
            headers[SESSION_HEADER] = self.session_id
        if self.protocol_version:
            headers[VERSION_HEADER] = self.protocol_version
        if extra:
            headers.update(extra)
        return headers

    async def _post(self, message: Message, extra: Mapping[str, str] | None) -> None:
        request_id = message.get("id") if is_request(message) else None
        related = request_id if isinstance(request_id, int) else None
        had_session = self.session_id is not None
        handshake = message.get("method") == "initialize"
        data = json.dumps(message, separators=(",", ":")).encode()
        try:
            for attempt in (1, 2):
                headers = self._request_headers(extra)
                async with self._pool.post(self.url, data, headers) as response:
                    if response.status >= 400:
                        body = await response.read()
                        if response.status == 401 and attempt == 1 and self._auth is not None:
                            if headers.get("Authorization") == self._auth.headers.get("Authorization"):
                                await self._auth.refresh()  # a 401 with the current token: renew once
                            continue
                        self._refused(message, response, body, had_session, related)
                        return
                    if message.get("method") == "initialize":
                        self.session_id = response.headers.get(SESSION_HEADER) or None
                    if request_id is None:
                        await response.read()
                        return
                    if response.headers.get("Content-Type", "").startswith("text/event-stream"):
                        parser = sse_parser()
                        async for chunk in response.chunks():
                            for event in parser.feed(chunk):
                                self._deliver(event.data, related, handshake)
                    else:
                        self._deliver(await response.read(), related, handshake)
                    return
        except ConnectError as exc:
            self._lost(f"cannot connect: {exc}", related)
        except (OSError, EOFError, ValueError) as exc:
            self._lost(f"the connection broke: {type(exc).__name__}: {exc}", None)

    def _refused(self, message: Message, response: Response, body: bytes, had_session: bool,
                 related: int | None) -> None:
        """An HTTP error to a POST: the session is gone, or the call gets an error (an OAuth
        server's 401/403 after a renewal names the fix; a 429 is the core's rate limit)."""
        status = response.status
        if _session_gone(status, body, had_session):
            self._lost("the server no longer knows the session (it restarted)", related)
        elif not is_request(message):
            return
        elif status in (401, 403) and self._auth is not None:
            self._on_message(error(message["id"], INTERNAL_ERROR, f"the server refused the access token the "
                                   f"supervisor holds (HTTP {status}): {self._auth.hint() or 'see its status'}",
                                   {"status": status}), related)
        else:
            self._on_message(_http_error(message, status, body, response.headers.get("Retry-After")), related)

    def _after_handshake(self) -> None:
        if self.session_id:
            self._tasks.start(self._listen())

    async def _listen(self) -> None:
        """The GET stream: list_changed, server requests without a related call. Its end while
        the link is open is how an idle session learns that its backend died."""
        headers = {**self._request_headers(None), "Accept": "text/event-stream"}
        headers.pop("Content-Type", None)
        try:
            async with self._http.get(self.url, headers=headers) as response:
                if response.status == 405:
                    return  # the server offers no stream of its own
                if response.status >= 400:
                    if _session_gone(response.status, await response.read(), True):
                        self._lost("the server no longer knows the session (it restarted)", None)
                    return
                await _read_events(response, lambda _event, data: self._deliver(data, None))
        except (aiohttp.ClientError, OSError, ValueError):
            pass
        self._lost("the server's event stream ended", None)

    async def close(self) -> None:
        await self._tasks.cancel()
        self._pool.close()
        if self.session_id:
            headers = self._request_headers(None)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0), self._http.delete(self.url, headers=headers):
                    pass


class SseLink:
    """Legacy HTTP+SSE: one GET event stream carries every answer; messages are POSTed to the
    endpoint the stream names first."""

    def __init__(self, url: str, http: aiohttp.ClientSession, headers: Mapping[str, str],
                 on_message: OnMessage, on_lost: OnLost, auth: LinkAuth | None = None) -> None:
        self.url = url
        self._http = http
        self._static = dict(headers)
        self._auth = auth
        self._on_message = on_message
        self._on_lost = on_lost
        self._tasks = _Tasks()
        self._endpoint: asyncio.Future[str] | None = None

    @property
    def _headers(self) -> dict[str, str]:
        return {**self._static, **self._auth.headers} if self._auth is not None else self._static

    async def open(self) -> None:
        self._endpoint = asyncio.get_running_loop().create_future()
        self._tasks.start(self._stream())
        await asyncio.wait_for(asyncio.shield(self._endpoint), CONNECT_TIMEOUT)

    def _lost(self, reason: str, unsent: int | None) -> None:
        if not self._tasks.closed:
            self._tasks.closed = True
            self._on_lost(reason, unsent)

    async def _stream(self) -> None:
        assert self._endpoint is not None
        endpoint = self._endpoint
        try:
            async with self._http.get(self.url, headers={**self._headers, "Accept": "text/event-stream"}) as response:
                response.raise_for_status()

                def deliver(event: str, data: str) -> None:
                    if event == "endpoint" and not endpoint.done():
                        endpoint.set_result(urljoin(self.url, data))
                    elif event == "message":
                        with contextlib.suppress(ValueError):
                            message = json.loads(data)
                            if isinstance(message, dict):
                                self._on_message(message, None)

                await _read_events(response, deliver)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            if not endpoint.done():
                endpoint.set_exception(OSError(f"cannot open the event stream: {exc}"))
                return
        if not endpoint.done():
            endpoint.set_exception(OSError("the event stream ended before naming its endpoint"))
            return
        self._lost("the server's event stream ended", None)

    def send(self, message: Message, headers: Mapping[str, str] | None = None) -> None:
        self._tasks.start(self._post(message))

    def abandon(self, backend_id: int) -> None:
        self.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": backend_id}})

    async def _post(self, message: Message) -> None:
        assert self._endpoint is not None
        request_id = message.get("id") if is_request(message) else None
        related = request_id if isinstance(request_id, int) else None
        try:
            endpoint = await self._endpoint
            async with self._http.post(endpoint, data=json.dumps(message),
                                       headers={**self._headers, "Content-Type": "application/json"}) as response:
                body = await response.read()
                if _session_gone(response.status, body, True):
                    self._lost("the server no longer knows the session (it restarted)", related)
                elif response.status >= 400 and request_id is not None:
                    self._on_message(_http_error(message, response.status, body,
                                                 response.headers.get("Retry-After")), related)
        except aiohttp.ClientConnectorError as exc:
            self._lost(f"cannot connect: {exc.os_error or exc}", related)
        except (aiohttp.ClientError, OSError) as exc:
            self._lost(f"the connection broke: {type(exc).__name__}: {exc}", None)

    async def close(self) -> None:
        await self._tasks.cancel()
