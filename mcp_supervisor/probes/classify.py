"""Failure classes from what a probe observed: pure functions, no I/O.

Why a separate module: the SDK reports the same fault in many shapes (a 401 becomes a generic
``MCPError``, a closed port an ``httpx2.ConnectError`` inside nested ``ExceptionGroup``s, a dead
stdio server a ``CONNECTION_CLOSED`` error), and the health machine must act on the *class*
(restart for ``crashed``, alert a person for ``auth``). Keeping the mapping pure makes it testable
without servers and keeps secrets out: messages use exception types, status codes and names only.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import httpx2
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, UNSUPPORTED_PROTOCOL_VERSION
from pydantic import ValidationError

from mcp_supervisor.health.model import FailureClass
from mcp_supervisor.probes.ratelimit import rate_limit_verdict

_MAX_MESSAGE = 300


@dataclass
class Observed:
    """Side facts a probe gathered besides the exception (HTTP statuses, garbage lines, stderr)."""

    transport: str
    statuses: list[int] = field(default_factory=list)
    garbage: list[str] = field(default_factory=list)
    stderr_tail: str = ""
    headers: Sequence[str] = ()
    token_env: str | None = None
    command: str | None = None
    limits: list[tuple[str | None, str]] = field(default_factory=list)
    """HTTP 429s seen: (``Retry-After`` header, body start); shared with the session's ``HttpSink``."""


@dataclass(frozen=True)
class Verdict:
    failure: FailureClass
    message: str
    hint: str | None = None
    retry_after: float | None = None
    """``rate_limited`` only: seconds the server asked to wait, when it said."""


def leaves(exc: BaseException) -> list[BaseException]:
    """Flatten nested exception groups (and explicit causes of wrappers) into the leaf errors."""
    out: list[BaseException] = []
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if isinstance(current, BaseExceptionGroup):
            stack.extend(reversed(current.exceptions))
        else:
            out.append(current)
    return out


def _short(text: str, limit: int = _MAX_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _auth_hint(obs: Observed, status: int) -> str:
    where: list[str] = []
    if obs.token_env:
        where.append(f"environment variable {obs.token_env}")
    if obs.headers:
        where.append("header " + ", ".join(sorted(obs.headers)))
    if not where:
        return (f"the server answered {status} and no credentials are configured: add a header "
                "(e.g. headers.Authorization = \"Bearer ${TOKEN}\") with a token from the environment")
    verb = "rejected" if status == 401 else "refused access with"
    return f"the server {verb} the credentials in {' / '.join(where)}: renew the token and reload"


def _crash_message(obs: Observed, during: str) -> str:
    tail = obs.stderr_tail.strip()
    base = f"server process exited {during}"
    return _short(f"{base}; stderr: {tail}" if tail else f"{base} (nothing on stderr)")


def _is_closed(exc: BaseException) -> bool:
    import anyio

    if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
        return True
    return isinstance(exc, anyio.ClosedResourceError | anyio.BrokenResourceError | anyio.EndOfStream | BrokenPipeError)


def classify(exc: BaseException, obs: Observed, *, phase: str) -> Verdict:
    """Map one failed probe phase to a failure class and a short, secret-free message."""
    errors = leaves(exc)
    limited = rate_limit_verdict(errors, obs.statuses, obs.limits)
    if limited is not None:
        return Verdict(FailureClass.RATE_LIMITED, limited[0], retry_after=limited[1])
    auth_status = next((s for s in obs.statuses if s in (401, 403)), None)
    if auth_status is not None:
        return Verdict(
            FailureClass.AUTH,
            f"HTTP {auth_status} {'Unauthorized' if auth_status == 401 else 'Forbidden'} during {phase}",
            _auth_hint(obs, auth_status),
        )
    for err in errors:
        if isinstance(err, httpx2.HTTPStatusError) and err.response.status_code in (401, 403):
            status = err.response.status_code
            return Verdict(FailureClass.AUTH, f"HTTP {status} during {phase}", _auth_hint(obs, status))
    for err in errors:
        verdict = _classify_one(err, obs, phase)
        if verdict is not None:
            return verdict
    first = errors[0] if errors else exc
    if obs.garbage:
        return _garbage(obs, phase)
    return Verdict(FailureClass.PROTOCOL, _short(f"{phase} failed: {type(first).__name__}: {first}"))


def refused_verdict(phase: str) -> Verdict:
    """A port nobody listens on: the one wording, whichever path found it (``probes/refusal.py``)."""
    return Verdict(FailureClass.REFUSED, f"connection refused during {phase} (is the server listening?)")


def is_refused(verdict: Verdict) -> bool:
    """Whether ``verdict`` is ``refused_verdict``'s: nobody listened (not a connection closed later)."""
    return verdict.failure is FailureClass.REFUSED and verdict.message.startswith("connection refused during ")


def _garbage(obs: Observed, phase: str) -> Verdict:
    sample = obs.garbage[0][:80]
    return Verdict(
        FailureClass.PROTOCOL,
        _short(f"{phase}: the server wrote output that is not JSON-RPC (e.g. {sample!r}); "
               "a stdio server must keep stdout for protocol messages only"),
    )


def _classify_one(err: BaseException, obs: Observed, phase: str) -> Verdict | None:
    if isinstance(err, TimeoutError | httpx2.TimeoutException):
        if obs.garbage:
            return _garbage(obs, phase)
        return Verdict(FailureClass.TIMEOUT, f"no answer within the deadline during {phase}")
    if isinstance(err, httpx2.ConnectError):
        text = str(err)
        if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
            return Verdict(FailureClass.CONFIG, f"cannot resolve the host in the URL during {phase}; fix 'url'")
        return refused_verdict(phase)
    if isinstance(err, httpx2.InvalidURL | httpx2.UnsupportedProtocol):
        return Verdict(FailureClass.CONFIG, f"bad URL ({type(err).__name__}); fix 'url'")
    if isinstance(err, ConnectionRefusedError):
        return refused_verdict(phase)
    if isinstance(err, httpx2.HTTPStatusError):
        status = err.response.status_code
        return Verdict(FailureClass.PROTOCOL, f"unexpected HTTP {status} during {phase}")
    if isinstance(err, httpx2.SSEError):
        return Verdict(FailureClass.PROTOCOL, _short(f"{phase}: not an MCP SSE endpoint ({err})"))
    if isinstance(err, httpx2.TransportError):
        return Verdict(FailureClass.REFUSED, _short(f"connection failed during {phase}: {type(err).__name__}"))
    if isinstance(err, FileNotFoundError | PermissionError | NotADirectoryError) and phase in ("spawn", "connect"):
        what = obs.command or "the command"
        if isinstance(err, PermissionError):
            return Verdict(FailureClass.CONFIG, _short(f"{what} is not executable; fix 'command' or its mode"),
                           f"check 'command' = {what!r}")
        return Verdict(FailureClass.CONFIG, _short(f"command not found: {what} (or 'cwd' does not exist); "
                                                   "fix 'command'/'cwd' or install it"),
                       f"check 'command' = {what!r}")
    if isinstance(err, OSError) and err.errno == errno.ENOEXEC:
        return Verdict(FailureClass.CONFIG, _short(f"{obs.command} is not a program (exec format error)"))
    if _is_closed(err):
        if obs.transport == "stdio":
            if obs.garbage and not obs.stderr_tail.strip():
                return _garbage(obs, phase)
            return Verdict(FailureClass.CRASHED, _crash_message(obs, f"during {phase}"))
        return Verdict(FailureClass.REFUSED, f"connection closed by the server during {phase}")
    if isinstance(err, MCPError):
        if err.code == UNSUPPORTED_PROTOCOL_VERSION:
            return Verdict(FailureClass.PROTOCOL, _short(f"no common protocol version during {phase}: {err.message}"))
        bad = next((s for s in reversed(obs.statuses) if s >= 400), None)
        if bad is not None:
            return Verdict(FailureClass.PROTOCOL, _short(f"HTTP {bad} during {phase}: {err.message}"))
        if obs.garbage:
            return _garbage(obs, phase)
        return Verdict(FailureClass.PROTOCOL, _short(f"{phase}: server error {err.code}: {err.message}"))
    if isinstance(err, ValidationError):
        return Verdict(FailureClass.PROTOCOL, _short(f"{phase}: malformed reply ({err.error_count()} validation errors)"))
    if isinstance(err, RuntimeError) and "version" in str(err).lower():
        return Verdict(FailureClass.PROTOCOL, _short(f"no common protocol version during {phase}: {err}"))
    return None


def missing_tools(expected: Iterable[str], present: Iterable[str]) -> list[str]:
    have = set(present)
    return [name for name in expected if name not in have]
