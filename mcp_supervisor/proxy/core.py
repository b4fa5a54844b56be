"""The proxy's session logic, sans-I/O: one client session's calls over a backend that may restart.

Why a pure state machine: what to forward, hold, retry or answer with an error when the backend
dies mid-call is the whole value of the proxy, and it must be testable as a table of events and
by hypothesis without processes or sockets (like ``health/machine.py``). The shell
(``session.py``) performs the actions and feeds back what the link saw; time is passed in.

One core serves either a handshake-era client session (``legacy``: the proxy re-runs the
client's own ``initialize`` after every backend restart, restores subscriptions and the log
level) or all stateless 2026-era requests to one server (``modern``: nothing to restore).

The promise: every client request gets exactly one final answer; a request is sent to the
backend again only if it is safe (``safety.py``) or certainly never reached the old backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mcp_supervisor.proxy.actions import Abandon, Action, Call, Connect, Deliver, Link, Send, Stats
from mcp_supervisor.proxy.limits import DEFAULT_WAIT, limit_of, limited_error
from mcp_supervisor.proxy.safety import ToolSafety
from mcp_supervisor.proxy.wire import (
    BACKEND_UNAVAILABLE,
    INTERNAL_ERROR,
    Message,
    RequestId,
    call_label,
    error,
    is_request,
    is_response,
    not_retried,
    progress_token,
    with_id,
)


@dataclass
class SessionCore:
    era: str
    """``legacy`` (initialize handshake, one backend session per client session) or ``modern``."""
    server: str
    hold: float
    safety: ToolSafety = field(default_factory=ToolSafety)
    link: Link = Link.DOWN
    generation: int = 0
    init_params: dict[str, Any] | None = None
    init_result: dict[str, Any] | None = None
    subscriptions: set[str] = field(default_factory=set)
    log_level: str | None = None
    stats: Stats = field(default_factory=Stats)
    calls: dict[int, Call] = field(default_factory=dict)
    _keys: int = 0
    _ids: int = 0
    _by_backend: dict[int, int] = field(default_factory=dict)
    _internal: dict[int, tuple[str, Any]] = field(default_factory=dict)
    _server_requests: dict[int, tuple[int, RequestId]] = field(default_factory=dict)
    _progress: dict[Any, int] = field(default_factory=dict)
    _init_key: int | None = None
    _lost: bool = False
    limited_until: float | None = None  # rate limited until (a 429's Retry-After, or the machine's hold)
    limit_words: str = ""
    wall_offset: float = 0.0  # wall clock minus now's clock: "rate limited until 09:04:10"

    # --- events from the client -------------------------------------------------------------

    def on_request(self, message: Message, now: float) -> tuple[int, list[Action]]:
        """A client request; returns the call's key (the shell waits on it) and the actions."""
        self._keys += 1
        key = self._keys
        method = message["method"]
        if method == "initialize" and self.era == "legacy":
            if self.init_params is not None:
                return key, [Deliver(error(message["id"], INTERNAL_ERROR, "this session is already initialized"),
                                     key, final=True)]
            self.init_params = dict(message.get("params") or {})
            self._init_key = key
            self.calls[key] = Call(key, message["id"], message, safe=True, arrived=now)
            self._hold(self.calls[key], now)
            return key, self._connect()
        call = Call(key, message["id"], message, self.safety.request_is_safe(method, message.get("params")), now)
        self.calls[key] = call
        token = progress_token(message)
        if token is not None:
            self._progress[token] = key
        if self.link is Link.UP:
            if call.safe and self.limited_until is not None and now < self.limited_until:
                return key, self._wait_limit(call, now)
            return key, [self._send(call)]
        self._hold(call, now)
        return key, self._connect() if self.link is Link.DOWN else []

    def note_limit(self, until: float, words: str) -> None:
        """The server is rate limited until ``until`` (the supervisor's probes saw a 429)."""
        if self.limited_until is None or until > self.limited_until:
            self.limited_until, self.limit_words = until, words

    def on_notification(self, message: Message, now: float) -> list[Action]:
        method = message["method"]
        if method == "notifications/initialized":
            return []  # the proxy sends its own after each handshake
        if method == "notifications/cancelled":
            return self._cancel(message)
        if self.link is not Link.UP:
            return []  # a notification to a backend that is not there: nothing to keep it for
        return [Send(message, self.generation)]

    def on_client_response(self, message: Message) -> list[Action]:
        """The client's answer to a server-to-client request (sampling, elicitation, roots)."""
        entry = self._server_requests.pop(message["id"], None) if isinstance(message["id"], int) else None
        if entry is None or entry[0] != self.generation or self.link is not Link.UP:
            return []  # its backend is gone: the new one never asked
        return [Send(with_id(message, entry[1]), self.generation)]

    def on_client_gone(self, key: int) -> list[Action]:
        """The client stopped waiting for call ``key`` (it disconnected or, in the 2026 era,
        cancelled by closing the stream): its answer is dropped and the backend is told."""
        call = self.calls.pop(key, None)
        if call is None or call.backend_id is None:
            return []
        self._by_backend.pop(call.backend_id, None)
        if self.link is not Link.UP:
            return []
        if self.era == "modern":
            return [Abandon(call.backend_id, self.generation)]
        return [Send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": call.backend_id, "reason": "the client went away"}}, self.generation)]

    # --- events from the backend ------------------------------------------------------------

    def on_backend(self, generation: int, message: Message, related: int | None, now: float) -> list[Action]:
        """A message from the backend of ``generation``; ``related``: the backend id of the
        request whose answer stream carried it (HTTP), if known."""
        if generation != self.generation:
            return []
        if is_response(message):
            return self._on_response(message, now)
        key = self._related_key(message, related)
        if is_request(message):
            self._ids += 1
            self._server_requests[self._ids] = (generation, message["id"])
            return [Deliver(with_id(message, self._ids), key)]
        return [Deliver(message, key)]

    def on_link_up(self, generation: int, now: float, handshaken: bool = False) -> list[Action]:
        """The link of ``generation`` is open. ``handshaken``: it is a standby the shell already
        initialized with this session's parameters, so only subscriptions and the log level are
        restored before the held calls go out."""
        if generation != self.generation or self.link is not Link.CONNECTING:
            return []
        if self.era == "legacy" and not (handshaken and self.init_result is not None):
            self.link = Link.HANDSHAKE
            return [self._internal_send("initialize", None, self.init_params or {})]
        return self._restore(now)

    def on_link_failed(self, generation: int, now: float) -> list[Action]:
        """The (re)connection did not work; the shell tries again later if ``wants_link``."""
        if generation == self.generation and self.link is Link.CONNECTING:
            self.link = Link.DOWN
        return []

    def on_link_lost(self, generation: int, now: float, unsent: int | None = None) -> list[Action]:
        """The backend died or forgot the session. ``unsent``: a backend id whose request
        certainly never reached it (the connection was refused), so it may be sent again."""
        if generation != self.generation or self.link is Link.DOWN:
            return []
        self.link = Link.DOWN
        self._lost = True
        self._internal.clear()
        self._server_requests.clear()
        actions: list[Action] = []
        for call in list(self.calls.values()):
            if call.backend_id is None:
                if call.held_since is None:
                    self._hold(call, now)
                call.held_by_loss = True
                continue
            self._by_backend.pop(call.backend_id, None)
            reached = call.backend_id != unsent
            call.backend_id = None
            if reached and not call.safe and call.key != self._init_key:
                actions.append(self._finish(call, not_retried(call.client_id, self.server, call.message), now))
                self.stats.failed += 1
            else:
                self._hold(call, now)
        if self.wants_link:
            actions += self._connect()
        return actions

    def on_timer(self, now: float, state: str) -> list[Action]:
        """Calls whose rate-limit wait is over go out; calls held past ``hold`` get an error naming
        the server's ``state`` (from status)."""
        actions: list[Action] = []
        for call in sorted(self.calls.values(), key=lambda c: c.key):
            if call.wait_until is not None and call.wait_until <= now:
                call.wait_until = None
                if self.limited_until is not None and now < self.limited_until:
                    actions += self._wait_limit(call, now)
                elif self.link is Link.UP and call.backend_id is None and call.held_since is not None:
                    call.held_total += now - call.held_since
                    call.held_since = None
                    actions.append(self._send(call))
        for call in list(self.calls.values()):
            if call.held_since is not None and now - call.held_since >= self.hold:
                text = (f"server {self.server!r} did not come back within {self.hold:g} s "
                        f"({call.message['method']} not answered): {state}")
                actions.append(self._finish(call, error(call.client_id, BACKEND_UNAVAILABLE, text,
                                                        {"server": self.server, "state": state}), now))
                self.stats.failed += 1
                if call.key == self._init_key or self.init_result is None:
                    self.init_params = None  # the session never started: stop trying
        return actions

    def next_deadline(self) -> float | None:
        times = [c.held_since + self.hold for c in self.calls.values() if c.held_since is not None]
        times += [c.wait_until for c in self.calls.values() if c.wait_until is not None]
        return min(times) if times else None

    @property
    def restoring(self) -> bool:
        """Between a loss (or a rate limit) and the moment every call held by it has its answer."""
        return self._lost or any(c.held_by_loss or c.held_by_limit for c in self.calls.values())

    @property
    def wants_link(self) -> bool:
        """A link is worth (re)opening: calls wait, or a legacy session must be restored."""
        if self.era == "legacy":
            return self.init_params is not None
        return any(c.held_since is not None for c in self.calls.values())

    # --- internals --------------------------------------------------------------------------

    def _hold(self, call: Call, now: float) -> None:
        call.held_since = now
        call.held_by_loss = call.held_by_loss or self._lost

    def _connect(self) -> list[Action]:
        if self.link is not Link.DOWN:
            return []
        self.generation += 1
        self.link = Link.CONNECTING
        return [Connect(self.generation)]

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _send(self, call: Call) -> Send:
        call.backend_id = self._next_id()
        call.attempts += 1
        if call.attempts > 1:
            self.stats.retried += 1
        self._by_backend[call.backend_id] = call.key
        return Send(with_id(call.message, call.backend_id), self.generation, call.key)

    def _internal_send(self, method: str, purpose: Any, params: dict[str, Any]) -> Send:
        backend_id = self._next_id()
        self._internal[backend_id] = (method, purpose)
        return Send({"jsonrpc": "2.0", "id": backend_id, "method": method, "params": params}, self.generation)

    def _up(self, now: float) -> list[Action]:
        self.link = Link.UP
        self._lost = False
        actions: list[Action] = []
        for call in sorted(self.calls.values(), key=lambda c: c.key):
            if call.key == self._init_key or (call.wait_until is not None and call.wait_until > now):
                continue
            if call.safe and self.limited_until is not None and now < self.limited_until:
                actions += self._wait_limit(call, now)
                continue
            if call.held_since is not None:
                held = now - call.held_since
                call.held_total += held
                call.held_since = None
            actions.append(self._send(call))
        return actions

    def _on_response(self, message: Message, now: float) -> list[Action]:
        backend_id = message["id"]
        internal = self._internal.pop(backend_id, None) if isinstance(backend_id, int) else None
        if internal is not None:
            return self._on_internal(internal[0], message, now)
        key = self._by_backend.pop(backend_id, None) if isinstance(backend_id, int) else None
        call = self.calls.get(key) if key is not None else None
        if call is None:
            return []  # answered after the client left or after a cancel
        limit = limit_of(message) if "error" in message and key != self._init_key else None
        if limit is not None:
            wait = DEFAULT_WAIT if limit[1] is None else limit[1]
            self.note_limit(now + wait, limit[0])
            call.backend_id = None
            return self._wait_limit(call, now)
        self._observe(call.message, message)
        return [self._finish(call, with_id(message, call.client_id), now)]

    def _on_internal(self, method: str, message: Message, now: float) -> list[Action]:
        if method != "initialize":
            return []  # restored subscriptions and log level: best effort
        if "error" in message:
            self.link = Link.DOWN
            if self.init_result is None:
                self.init_params = None  # the server refused this client's handshake: nothing to restore
            actions: list[Action] = []
            for call in list(self.calls.values()):
                answer = with_id(message, call.client_id)
                actions.append(self._finish(call, answer, now))
            return actions
        first = self.init_result is None
        self.init_result = message.get("result")
        init = self.calls.get(self._init_key) if self._init_key is not None else None
        if init is not None:
            init.held_since = None
        actions = [Send({"jsonrpc": "2.0", "method": "notifications/initialized"}, self.generation)]
        if first and self._init_key is not None and self._init_key in self.calls:
            actions.append(self._finish(self.calls[self._init_key], with_id(message, self.calls[self._init_key].client_id),
                                        now))
        return actions + self._restore(now)

    def _restore(self, now: float) -> list[Action]:
        self.link = Link.UP
        actions: list[Action] = []
        for uri in sorted(self.subscriptions):
            actions.append(self._internal_send("resources/subscribe", uri, {"uri": uri}))
        if self.log_level is not None:
            actions.append(self._internal_send("logging/setLevel", None, {"level": self.log_level}))
        return actions + self._up(now)

    def _observe(self, request: Message, answer: Message) -> None:
        """Learn from answers: tool hints, subscriptions, log level (restored after a restart)."""
        result = answer.get("result")
        if not isinstance(result, dict):
            return
        method, params = request["method"], request.get("params") or {}
        if method == "tools/list":
            self.safety.learn(result)
        elif method == "resources/subscribe" and isinstance(params.get("uri"), str):
            self.subscriptions.add(params["uri"])
        elif method == "resources/unsubscribe":
            self.subscriptions.discard(params.get("uri"))
        elif method == "logging/setLevel" and isinstance(params.get("level"), str):
            self.log_level = params["level"]

    def _wait_limit(self, call: Call, now: float) -> list[Action]:
        """Hold a safe call until the limit lifts, if that is within ``hold`` of its first wait;
        else (or an unsafe call the server refused with a 429) the honest error at once."""
        until = self.limited_until if self.limited_until is not None else now
        start = call.held_since if call.held_since is not None else now
        if call.safe and until - start <= self.hold:
            call.wait_until, call.held_by_limit = until, True
            if call.held_since is None:
                self._hold(call, now)
            return []
        why = (f"not waited for: that is past the proxy's hold of {self.hold:g} s" if call.safe else
               "not sent again: it is not marked safe to repeat")
        self.stats.failed += 1
        answer = limited_error(call.client_id, self.server, call_label(call.message), self.limit_words, until - now,
                               now + self.wall_offset, why)
        return [self._finish(call, answer, now)]

    def _finish(self, call: Call, answer: Message, now: float) -> Deliver:
        self.calls.pop(call.key, None)
        if call.backend_id is not None:
            self._by_backend.pop(call.backend_id, None)
        token = progress_token(call.message)
        if token is not None and self._progress.get(token) == call.key:
            del self._progress[token]
        if call.held_since is not None:
            call.held_total += now - call.held_since
        if call.held_by_loss or call.held_by_limit:
            self.stats.held += 1
            self.stats.held_seconds += call.held_total
            self.stats.max_held = max(self.stats.max_held, call.held_total)
        if call.key == self._init_key:
            self._init_key = None
        return Deliver(answer, call.key, final=True)

    def _cancel(self, message: Message) -> list[Action]:
        params = message.get("params") or {}
        target = params.get("requestId") if isinstance(params, dict) else None
        call = next((c for c in self.calls.values() if c.client_id == target and c.key != self._init_key), None)
        if call is None:
            return []
        actions: list[Action] = []
        if call.backend_id is not None and self.link is Link.UP:
            actions.append(Send({**message, "params": {**params, "requestId": call.backend_id}}, self.generation))
        # the client stops waiting after a cancel; end the call so nothing waits for an answer
        # the backend may never send
        call.held_since = None
        call.held_total = 0.0
        actions.append(self._finish(call, error(call.client_id, INTERNAL_ERROR, "cancelled by the client"), 0.0))
        return actions

    def _related_key(self, message: Message, related: int | None) -> int | None:
        token = progress_token(message) if message.get("method") != "notifications/progress" else (
            (message.get("params") or {}).get("progressToken"))
        if token is not None and token in self._progress:
            return self._progress[token]
        return self._by_backend.get(related) if related is not None else None
