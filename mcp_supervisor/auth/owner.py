"""One server's access token: obtained (machine grants) or refreshed (person grants), ahead of expiry.

Why one owner per server in the daemon: a headless job cannot wait for a person's browser, and a
rotating refresh token is single-use. The owner renews at 80 % of the token's lifetime (or
``refresh_before`` ahead), so a probe or a job never waits for it. Every renewal, in this process
or any other, happens under the server's lock file (``lock.py``) after re-reading the store: if
another process (a ``login``, a CLI refresh) already renewed, its token is taken as is and nothing
is sent. The new refresh token is written to the store (fsync'd) before the new access token is
used. A transient failure is retried with backoff (the current token stays in use until it
expires); a refusal only a person can fix (``invalid_grant``: run ``login``; ``invalid_client``:
fix the config) drops the token, so the probes' 401 makes the server ``needs_human`` naming that
fix (one alert, never a restart), and the owner waits for a new grant in the store (a ``login``
from another process is picked up within a second, no restart). A known end of the grant
(``refresh_expires_in``, or ``refresh_lifetime`` after ``login``) is warned about ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from mcp_supervisor.auth.discovery import http_client
from mcp_supervisor.auth.exchange import GrantProblem, login_command, problem_text, refresh
from mcp_supervisor.auth.lock import refresh_lock
from mcp_supervisor.auth.machine import machine_provider, obtain
from mcp_supervisor.auth.store import EncryptedTokenStorage, Record
from mcp_supervisor.config import ServerConfig
from mcp_supervisor.logging import get_logger
from mcp_supervisor.redact import REDACTOR

log = get_logger("mcp_supervisor.auth")

RENEW_AT = 0.8
"""Share of the token's lifetime after which it is renewed."""
DEFAULT_LIFETIME = 3600.0
"""Assumed lifetime of a token whose response has no ``expires_in``."""
MAX_BACKOFF = 60.0
WATCH = 1.0
"""How often the store is looked at for a token another process wrote."""

Alert = Callable[[str, dict[str, object]], None]
"""(what, data): a notification the service publishes (the refresh-token end warning)."""


@dataclass
class TokenFacts:
    """What may be shown about a token: never the token."""

    expires_at: float | None = None
    obtained_at: float | None = None
    last_refresh_at: float | None = None
    next_refresh_at: float | None = None
    refresh_expires_at: float | None = None
    renewals: int = 0
    failures: int = 0
    problem: str | None = None


def lifetime(expires_in: int | None) -> float:
    return float(expires_in) if expires_in and expires_in > 0 else DEFAULT_LIFETIME


class TokenOwner:
    """The single holder of one server's access token in the daemon."""

    def __init__(self, server: ServerConfig, storage: EncryptedTokenStorage, timeout: float = 15.0,
                 alert: Alert | None = None) -> None:
        assert server.auth is not None
        self.server = server
        self.auth = server.auth
        self.facts = TokenFacts()
        self._storage = storage
        self._timeout = timeout
        self._alert = alert
        self._provider = machine_provider(server, storage) if self.auth.machine else None
        self._bearer: str | None = None
        self._renew_at = 0.0  # monotonic
        self._seen: tuple[int, int, int] | None = None
        self._warned: float | None = None
        self._inflight: asyncio.Task[None] | None = None
        self.fatal = False
        self.settled = asyncio.Event()
        """Set once a first token is held or a first attempt failed: the first probe waits for it."""

    @property
    def bearer(self) -> str | None:
        """The current access token, for the probes' and the proxy's Authorization header only."""
        return self._bearer

    def _renew_point(self, span: float) -> float:
        before = self.auth.refresh_before
        return max(span - before, span * 0.1) if before is not None else span * RENEW_AT

    def _newer(self, record: Record) -> bool:
        return record.token is not None and (record.obtained_at or 0.0) > (self.facts.obtained_at or 0.0)

    def _fresh(self, record: Record) -> bool:
        """The stored token is inside its renewal window (another process renewed it)."""
        if record.token is None or record.obtained_at is None:
            return False
        return time.time() - record.obtained_at < self._renew_point(lifetime(record.token.expires_in))

    def adopt(self, record: Record | None) -> bool:
        """Take a stored record newer than what is held; True when something changed."""
        if record is None or not self._newer(record):
            return False
        assert record.token is not None and record.obtained_at is not None
        self.facts.refresh_expires_at = record.refresh_expires_at or (
            record.granted_at + self.auth.refresh_lifetime
            if record.granted_at and self.auth.refresh_lifetime else None)
        span = lifetime(record.token.expires_in)
        age = time.time() - record.obtained_at
        self.facts.obtained_at = record.obtained_at
        if age < span:
            self._take(record.token.access_token, record.obtained_at, span, time.monotonic() - age,
                       record.token.refresh_token)
        elif record.token.refresh_token or self.auth.machine:
            self._renew_at = time.monotonic()  # expired while nobody held it: renew now
        else:
            return False
        if self.fatal and (age < span or record.token.refresh_token):
            self.fatal = False  # a new grant (a login): back to work without a restart
            self.facts.problem = None
            log.info("auth: new grant picked up", server=self.server.name)
        return True

    async def load(self) -> None:
        """Take the stored token, as at the start of ``run`` (kept for callers of the first API)."""
        self._look()

    async def refresh(self, force: bool = False) -> None:
        """Renew now; a renewal already running is joined, never doubled (single flight).
        ``force``: even when the stored token is fresh (``login --refresh``)."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._renew(force), name=f"oauth {self.server.name}")
        await asyncio.shield(self._inflight)

    async def run(self) -> None:
        """Renew ahead of each expiry; retry transient failures with backoff; wait out a dead grant."""
        self._look()
        if self._bearer is None and not self.auth.machine and self._renew_at == 0.0:
            self._dead(GrantProblem(self._storage.problem or f"no OAuth grant yet for {self.server.name} (a person "
                                    f"signs in once): run: {login_command(self.server)}", fatal=True))
        if self._bearer is not None or self.fatal:
            self.settled.set()
        backoff = 1.0
        while True:
            await self._until_due()
            if await self.renew_now(backoff):
                backoff = 1.0
            else:
                backoff = min(backoff * 2, MAX_BACKOFF)
            self.settled.set()

    async def renew_now(self, backoff: float = 1.0) -> bool:
        """Renew now (also ``registry.refresh_now`` on a 401); a failure becomes a sentence and a
        retry after ``backoff``, or a dead grant; never an exception."""
        try:
            await self.refresh()
            return True
        except Exception as exc:  # every failure becomes a sentence, never a crash
            problem, fatal = problem_text(self.server, exc)
            self.facts.failures += 1
            self.facts.problem = problem
            log.warning("auth: token renewal failed", server=self.server.name, problem=problem)
            if fatal:
                self._dead(exc)
            else:
                self._renew_at = time.monotonic() + backoff * (0.75 + random.random() / 2)
                self.facts.next_refresh_at = time.time() + (self._renew_at - time.monotonic())
            return False

    def _dead(self, exc: BaseException) -> None:
        self.fatal = True
        self.facts.problem = problem_text(self.server, exc)[0]
        self._bearer = None  # the probes' 401 makes it needs_human with the problem
        self.facts.next_refresh_at = None

    def _look(self) -> None:
        """Adopt what another process wrote since the last look (one stat when nothing changed)."""
        signature = self._storage.signature()
        if signature == self._seen:
            return
        self._seen = signature
        self.adopt(self._storage.read())
        if signature is not None and self._storage.signature() is None and not self.auth.machine:
            self._dead(GrantProblem(self._storage.problem or "token file set aside", fatal=True))

    async def _until_due(self) -> None:
        while True:
            self._look()
            self._warn_grant_end()
            remaining = self._renew_at - time.monotonic()
            if not self.fatal and remaining <= 0:
                return
            await asyncio.sleep(WATCH if self.fatal else min(WATCH, remaining))

    def _warn_grant_end(self) -> None:
        ends = self.facts.refresh_expires_at
        if ends is None or self.fatal or self._warned == ends or time.time() < ends - self.auth.refresh_warn:
            return
        self._warned = ends
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ends))
        detail = (f"the OAuth grant of {self.server.name} ends at {when} (its refresh token expires); before "
                  f"then a person runs: {login_command(self.server)}")
        log.warning("auth: grant ends soon", server=self.server.name, ends_at=round(ends))
        if self._alert is not None:
            self._alert("token_expiry", {"detail": detail, "level": "grant", "expires_at": ends,
                                         "fix": login_command(self.server)})

    async def _renew(self, force: bool = False) -> None:
        async with refresh_lock(self._storage.lock_path):
            record = self._storage.read()  # another process may have renewed while we waited
            if not force and record is not None and self._newer(record) and self._fresh(record):
                self.adopt(record)
                self._seen = self._storage.signature()
                return
            started_wall, started_mono = time.time(), time.monotonic()
            self._storage.requested_at = started_wall
            if self._provider is not None:
                token = await obtain(self._provider, self.server, self._timeout)
                refresh_ends = None
            elif record is not None and record.token is not None and record.token.refresh_token:
                async with http_client(self._timeout) as client:
                    refreshed = await refresh(client, self.server, record, self._storage)
                token = refreshed.token
                refresh_ends = started_wall + refreshed.refresh_expires_in if refreshed.refresh_expires_in else (
                    record.refresh_expires_at)
                # the new refresh token is on disk (fsync'd) before the new access token is used
                self._storage.update(token=token, obtained_at=started_wall, refresh_expires_at=refresh_ends)
            else:
                raise GrantProblem(self._storage.problem or f"no refresh token is stored for {self.server.name}: run: "
                                   f"{login_command(self.server)}", fatal=True)
            self._seen = self._storage.signature()
        if refresh_ends is not None:
            self.facts.refresh_expires_at = refresh_ends
        self._take(token.access_token, started_wall, lifetime(token.expires_in), started_mono, token.refresh_token)
        self.facts.renewals += 1
        self.facts.last_refresh_at = time.time()
        self.facts.problem = None
        log.info("auth: access token renewed", server=self.server.name, expires_in=token.expires_in,
                 renewals=self.facts.renewals)

    def _take(self, access_token: str, obtained_wall: float, span: float, obtained_mono: float,
              refresh_token: str | None = None) -> None:
        self._bearer = access_token
        held = [access_token, refresh_token] if refresh_token else [access_token]
        REDACTOR.live(f"oauth {self.server.name}", held)  # masked wherever either might surface
        point = self._renew_point(span)
        self._renew_at = obtained_mono + point
        self.facts.obtained_at = obtained_wall
        self.facts.expires_at = obtained_wall + span
        self.facts.next_refresh_at = obtained_wall + point

    async def aclose(self) -> None:
        REDACTOR.live(f"oauth {self.server.name}", [])
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._inflight
