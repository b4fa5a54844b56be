"""Delivery channels: Slack (incoming webhook or bot token) and apprise. One attempt per call.

Why the slack-sdk clients run with no retry handlers: retries belong to the outbox, which
persists them, spaces them with backoff and survives a restart; an in-client retry loop would
hide a 429's ``Retry-After`` from it and hold the delivery task for minutes.

A ``Delivery`` says what the receiver answered: ok (with the message ``ts`` for threading), retry
(connection refused, timeout, 5xx, 429 with its ``Retry-After``), or rejected for good (a 400-type
answer about this message's content). A bad token or a revoked webhook is *not* permanent: the
messages wait (and the error is logged) until the operator fixes the config, so nothing is lost.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from mcp_supervisor.notify.incidents import Notification
from mcp_supervisor.notify.render import fallback_text, plain, slack_blocks

_CONTENT_ERRORS = frozenset(
    {"invalid_blocks", "invalid_blocks_format", "msg_too_long", "no_text", "invalid_payload", "invalid_arguments",
     "too_many_attachments", "invalid_attachments", "invalid_metadata_format", "invalid_metadata_schema"}
)


@dataclass(frozen=True)
class Delivery:
    ok: bool
    status: int | None = None
    error: str = ""
    retry_after: float | None = None
    permanent: bool = False
    remote_channel: str | None = None
    ts: str | None = None

    def summary(self) -> str:
        if self.ok:
            return f"ok ({self.status})" if self.status else "ok"
        return f"{self.status or 'no answer'}: {self.error}"


class Channel(Protocol):
    name: str
    threads: bool

    async def deliver(self, n: Notification, thread: tuple[str, str] | None) -> Delivery: ...

    async def aclose(self) -> None: ...


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After") if headers is not None else None
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def classify_http(status: int, error: str, headers: Any) -> Delivery:
    if 200 <= status < 300:
        return Delivery(ok=True, status=status)
    if status == 429:
        return Delivery(ok=False, status=status, error=error or "rate limited", retry_after=_retry_after(headers) or 30.0)
    permanent = status == 400 or error in _CONTENT_ERRORS
    return Delivery(ok=False, status=status, error=error or f"HTTP {status}", permanent=permanent)


def _connection_error(exc: BaseException) -> Delivery:
    return Delivery(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])


class SlackWebhook:
    """An incoming webhook: posts to one channel, cannot thread (no ``ts`` comes back)."""

    name = "slack"
    threads = False

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        from slack_sdk.webhook.async_client import AsyncWebhookClient

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        self._client = AsyncWebhookClient(url, timeout=int(max(1, timeout)), session=self._session, retry_handlers=[])

    async def deliver(self, n: Notification, thread: tuple[str, str] | None) -> Delivery:
        try:
            response = await self._client.send(text=fallback_text(n), blocks=slack_blocks(n))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _connection_error(exc)
        body = str(getattr(response, "body", "") or "").strip()
        return classify_http(int(response.status_code), "" if body == "ok" else body[:200], response.headers)

    async def aclose(self) -> None:
        await self._session.close()


class SlackBot:
    """``chat.postMessage`` with a bot token: follow-ups of an incident reply in its thread."""

    name = "slack"
    threads = True

    def __init__(self, token: str, channel: str, base_url: str | None = None, timeout: float = 10.0) -> None:
        from slack_sdk.web.async_client import AsyncWebClient

        self.channel = channel
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        kwargs: dict[str, Any] = {"token": token, "timeout": int(max(1, timeout)), "session": self._session,
                                  "retry_handlers": []}
        if base_url:
            kwargs["base_url"] = base_url
        self._client = AsyncWebClient(**kwargs)

    async def deliver(self, n: Notification, thread: tuple[str, str] | None) -> Delivery:
        """A group's update edits its first message in place (``chat.update``); an escalation, a
        repeat and the resolution also reply in its thread, so a phone hears about them."""
        grouped = bool(n.data.get("group"))
        if grouped and thread and n.role in ("followup", "resolution") and (n.data.get("update") or n.role == "resolution"):
            edited = await self._call("chat_update", channel=thread[0] or self.channel, ts=thread[1],
                                      text=fallback_text(n), blocks=slack_blocks(n))
            if not edited.ok or (n.role == "followup" and not n.data.get("reply")):
                return edited
        channel, thread_ts = (thread[0] or self.channel, thread[1]) if thread else (self.channel, None)
        return await self._call("chat_postMessage", channel=channel, text=fallback_text(n), blocks=slack_blocks(n),
                                thread_ts=thread_ts, unfurl_links=False, unfurl_media=False)

    async def _call(self, method: str, **kwargs: Any) -> Delivery:
        from slack_sdk.errors import SlackApiError

        channel = str(kwargs.get("channel") or self.channel)
        try:
            response = await getattr(self._client, method)(**kwargs)
        except SlackApiError as exc:
            answer = exc.response
            status = getattr(answer, "status_code", None) or getattr(answer, "status", None) or 0
            error = ""
            data = getattr(answer, "data", None)
            if isinstance(data, dict):
                error = str(data.get("error") or "")
            if int(status) in (0, 200):  # "ok": false: retried (a bad token waits for a fix), unless about content
                return Delivery(ok=False, status=int(status) or None, error=error or "not ok",
                                permanent=error in _CONTENT_ERRORS)
            return classify_http(int(status), error, getattr(answer, "headers", None))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _connection_error(exc)
        data = response.data if isinstance(response.data, dict) else {}
        return Delivery(ok=True, status=int(response.status_code), remote_channel=str(data.get("channel") or channel),
                        ts=str(data.get("ts")) if data.get("ts") else None)

    async def aclose(self) -> None:
        await self._session.close()


class AppriseChannel:
    """E-mail, Teams, Discord, ntfy, ... through apprise URLs; the same messages as markdown."""

    name = "apprise"
    threads = False

    def __init__(self, urls: list[str]) -> None:
        try:
            import apprise
        except ImportError:
            raise RuntimeError(
                "[notify.apprise] is set but apprise is not installed: pip install 'mcp-supervisor[apprise]'"
            ) from None
        self._apprise = apprise.Apprise()
        for url in urls:
            if not self._apprise.add(url):
                raise RuntimeError("[notify.apprise] urls: one URL is not understood by apprise (check its scheme)")

    async def deliver(self, n: Notification, thread: tuple[str, str] | None) -> Delivery:
        import apprise

        head, text = plain(n)
        kind = {"critical": apprise.NotifyType.FAILURE, "warning": apprise.NotifyType.WARNING}.get(
            n.severity, apprise.NotifyType.SUCCESS if n.kind == "recovered" else apprise.NotifyType.INFO
        )
        try:
            ok = await asyncio.to_thread(
                self._apprise.notify, title=head, body=text, notify_type=kind, body_format=apprise.NotifyFormat.MARKDOWN
            )
        except Exception as exc:  # apprise plugins raise their own types
            return _connection_error(exc)
        # apprise answers one bool for all its URLs and retries none of them: retry the whole message
        return Delivery(ok=True) if ok else Delivery(ok=False, error="apprise: at least one URL failed")

    async def aclose(self) -> None:
        return None
