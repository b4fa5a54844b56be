"""A local HTTP server that answers as Slack does, for the real slack-sdk clients to talk to.

It serves an incoming webhook (``POST /services/...``: ``ok`` or an error text) and the Web API's
``chat.postMessage`` (``POST /api/chat.postMessage``: ``{"ok": true, "ts": ...}``, 429 with
``Retry-After``, ``invalid_auth``) and ``chat.update`` (edits a posted message in place: the edit is
kept in ``updates`` and the message's current content in ``current``). ``fail_with`` makes the next answers errors; every attempt and
every accepted message is recorded with its arrival time, so tests can check order, spacing and
that nothing arrived twice.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

WEBHOOK_PATH = "/services/T000TEST/B000TEST/abcdefghijklmnopqrstuvwx"
BOT_TOKEN = "xoxb-0000-test-bot-token"


@dataclass
class Attempt:
    at: float
    path: str
    status: int
    body: dict[str, Any]


@dataclass
class FakeSlack:
    attempts: list[Attempt] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Accepted messages (the JSON body Slack got, plus ``_ts`` for chat.postMessage)."""
    updates: list[dict[str, Any]] = field(default_factory=list)
    """Accepted ``chat.update`` calls, in order."""
    current: dict[str, dict[str, Any]] = field(default_factory=dict)
    """ts -> the message as it reads now (posted, then edited)."""
    script: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    mode: tuple[int, dict[str, str]] | None = None
    """A persistent failure (status, headers) until cleared; ``script`` answers come first."""
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Condition | None = None
    _runner: web.AppRunner | None = None
    port: int = 0

    async def start(self, port: int = 0) -> FakeSlack:
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post(WEBHOOK_PATH, self._webhook)
        app.router.add_post("/api/chat.postMessage", self._post_message)
        app.router.add_post("/api/chat.update", self._update)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def fail_with(self, status: int, times: int = 1, headers: dict[str, str] | None = None) -> None:
        for _ in range(times):
            self.script.append((status, headers or {}))

    async def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        assert self._changed is not None
        async with self._changed:
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait_for(lambda: bool(predicate(self)))
            except TimeoutError:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; messages: {self.titles()}, "
                    f"attempts: {[(a.status, a.path[-20:]) for a in self.attempts]}"
                ) from None

    def titles(self) -> list[str]:
        return [m["blocks"][0]["text"]["text"] for m in self.messages if m.get("blocks")]

    def texts(self) -> list[str]:
        return [json.dumps(m) for m in self.messages]

    def current_title(self, ts: str) -> str:
        return str(self.current[ts]["blocks"][0]["text"]["text"])

    async def _record(self, attempt: Attempt, accepted: dict[str, Any] | None, update: bool = False) -> None:
        assert self._changed is not None
        async with self._changed:
            self.attempts.append(attempt)
            if accepted is not None and update:
                self.updates.append(accepted)
                self.current[str(accepted.get("ts"))] = accepted
            elif accepted is not None:
                self.messages.append(accepted)
                if "_ts" in accepted:
                    self.current[accepted["_ts"]] = accepted
            self._changed.notify_all()

    def _next_failure(self) -> tuple[int, dict[str, str]] | None:
        if self.script:
            return self.script.popleft()
        return self.mode

    async def _webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        failure = self._next_failure()
        if failure is not None:
            status, headers = failure
            await self._record(Attempt(time.monotonic(), request.path, status, body), None)
            text = "rate_limited" if status == 429 else "internal_error" if status >= 500 else "invalid_payload"
            return web.Response(status=status, text=text, headers=headers)
        await self._record(Attempt(time.monotonic(), request.path, 200, body), body)
        return web.Response(text="ok")

    async def _update(self, request: web.Request) -> web.Response:
        body = await request.json() if request.content_type == "application/json" else dict(await request.post())
        if request.headers.get("Authorization") != f"Bearer {BOT_TOKEN}":
            await self._record(Attempt(time.monotonic(), request.path, 200, body), None)
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if str(body.get("ts")) not in self.current:
            await self._record(Attempt(time.monotonic(), request.path, 200, body), None)
            return web.json_response({"ok": False, "error": "message_not_found"})
        await self._record(Attempt(time.monotonic(), request.path, 200, body), body, update=True)
        return web.json_response({"ok": True, "channel": "C0TEST", "ts": body.get("ts"), "text": body.get("text")})

    async def _post_message(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            body = await request.json()
        else:
            body = dict(await request.post())
        if request.headers.get("Authorization") != f"Bearer {BOT_TOKEN}":
            await self._record(Attempt(time.monotonic(), request.path, 200, body), None)
            return web.json_response({"ok": False, "error": "invalid_auth"})
        failure = self._next_failure()
        if failure is not None:
            status, headers = failure
            await self._record(Attempt(time.monotonic(), request.path, status, body), None)
            if status == 429:
                return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=headers)
            return web.Response(status=status, text="upstream error", headers=headers)
        ts = f"1700000000.{next(self._ts):06d}"
        accepted = {**body, "_ts": ts}
        await self._record(Attempt(time.monotonic(), request.path, 200, body), accepted)
        return web.json_response({"ok": True, "channel": "C0TEST", "ts": ts, "message": {"text": body.get("text")}})
