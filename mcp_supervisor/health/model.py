"""The vocabulary shared by probes, the health machine, the executor and the API.

Plain frozen values only: the functional core (``health.machine``) consumes ``ProbeResult`` and
commands and emits ``Action`` values; the imperative shell (daemon executor) performs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class FailureClass(StrEnum):
    TIMEOUT = "timeout"
    REFUSED = "refused"
    CRASHED = "crashed"
    AUTH = "auth"
    PROTOCOL = "protocol"
    CONFIG = "config"
    OOM = "oom"
    """The kernel killed the server for memory (its ``limits.memory``): restarted with backoff like a crash."""
    CHECK = "check"
    """A deep check (``[[servers.checks]]``: a real ``tools/call``) failed while the server still
    answers probes; the message is the tool's own error text."""
    RATE_LIMITED = "rate_limited"
    """The server said "too many requests" (HTTP 429, or a rate-limit error in JSON-RPC or a tool
    result): it is up, so this is no failure toward the threshold and never a restart (a restart
    cannot lift a limit); the next probe waits for its ``Retry-After``."""
    DRIFTED = "drifted"
    """A pinned tool's contract changed (``pin_tools``) and nobody accepted it yet: the server
    answers, so never a restart (a restart cannot help), but a job must not use it."""

    @property
    def is_exit(self) -> bool:
        """The process is gone (a fact, not a blip): a crash or an OOM kill."""
        return self in (FailureClass.CRASHED, FailureClass.OOM)

    @property
    def is_answer(self) -> bool:
        """The server answered, just not usefully now: no failure toward the threshold, no restart."""
        return self in (FailureClass.RATE_LIMITED, FailureClass.DRIFTED)

    @property
    def needs_human(self) -> bool:
        """Restarting cannot fix a 401 or a missing command: a person must act."""
        return self in (FailureClass.AUTH, FailureClass.CONFIG)


class State(StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILED = "failed"
    RECOVERING = "recovering"
    BACKOFF = "backoff"
    FALLBACK = "fallback"
    NEEDS_HUMAN = "needs_human"
    PAUSED = "paused"
    RATE_LIMITED = "rate_limited"
    """Up but refusing calls for a while (HTTP 429): ready, with a warning; no downtime."""
    DRIFTED = "drifted"
    """Up, but a pinned tool contract changed: not ready until ``accept-tools``; never restarted."""


class ProbeKind(StrEnum):
    WARM = "warm"  # the frequent, cheap check (kept-open session / warm stdio instance)
    COLD = "cold"  # full path: fresh connection or fresh spawn + handshake
    TOOLS = "tools"  # tools/list + expected tools
    CONTAINER = "container"  # Docker state/health only


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    failure: FailureClass | None = None
    latency_ms: float = 0.0
    message: str = ""
    """Short, human, secret-free: what happened and, on failure, what to do."""
    kind: ProbeKind = ProbeKind.WARM
    phases_ms: dict[str, float] = field(default_factory=dict)
    """Per-phase latency, e.g. {"connect": 3.1, "handshake": 12.0, "tools": 4.2}."""
    degraded: str | None = None
    """Set when the server answers but something is off (an expected tool is missing)."""
    server_name: str | None = None
    server_version: str | None = None
    protocol_version: str | None = None
    tool_count: int | None = None
    hint: str | None = None
    """For needs-a-human failures: the env var/header involved and the fix."""
    tools: dict[str, dict[str, str]] | None = None
    """After a ``tools/list``: each tool's contract fingerprint (``probes/contracts.py``)."""
    retry_after: float | None = None
    """For ``rate_limited``: seconds the server asked us to wait (its ``Retry-After``), if it said."""

    def __post_init__(self) -> None:
        if self.ok and self.failure is not None:
            raise ValueError("a successful probe has no failure class")
        if not self.ok and self.failure is None:
            raise ValueError("a failed probe needs a failure class")


# --- Actions: what the machine asks the shell to do --------------------------------------------


@dataclass(frozen=True)
class Transition:
    old: State
    new: State
    reason: str


@dataclass(frozen=True)
class Restart:
    """Restart the managed process or container."""

    attempt: int


@dataclass(frozen=True)
class RestoreConfig:
    """Restore the server's config from the newest valid backup, then restart."""

    attempt: int


@dataclass(frozen=True)
class Recreate:
    """Recreate the container from its recorded configuration."""

    attempt: int


@dataclass(frozen=True)
class EnterFallback:
    """Check the direct-API fallback URL; report ok when it answers as expected."""

    attempt: int


@dataclass(frozen=True)
class ProbeNow:
    """Probe as soon as possible (after a recovery action, or on request)."""

    kind: ProbeKind = ProbeKind.WARM


@dataclass(frozen=True)
class Notify:
    """Tell a human: kind is e.g. 'down', 'recovered', 'needs_human', 'fallback', 'token_expiry'."""

    kind: str
    detail: str
    severity: str = "warning"  # info | warning | critical


Action = Transition | Restart | RestoreConfig | Recreate | EnterFallback | ProbeNow | Notify
RecoveryAction = Restart | RestoreConfig | Recreate | EnterFallback


# --- Commands: what an operator asks (CLI/API) ---------------------------------------------------


class Command(StrEnum):
    RECOVER = "recover"
    PAUSE = "pause"
    RESUME = "resume"
    EMERGENCY = "emergency"


class UnknownServer(KeyError):
    """A command or question named a server that is not in the running config (the API answers 404).

    Here, with the commands, because the runtime raises it and the API catches it: both import
    the vocabulary, neither imports the other's layer for it."""


# --- What the server itself said ------------------------------------------------------------------

_MARKERS = ("stderr: ", "last output: ")


def server_line(message: str) -> str | None:
    """The server's own last stderr line inside a probe or exit message, if it printed one.

    Why parse the message: probes and the process actuator report a dead server as
    ``"<what happened>; stderr: <line> | <line> | <last line>"``; the last line is what the server
    said as it died (the exception, "does not exist"), the one thing an operator wants first.
    """
    at, marker = _marker(message)
    if at < 0:
        return None
    tail = message[at + len(marker) :].strip()
    line = tail.split(" | ")[-1].strip()
    return line or None


def _marker(message: str) -> tuple[int, str]:
    return max((message.rfind(m), m) for m in _MARKERS)


def headline(result: ProbeResult) -> str:
    """A failure in one line that starts with the server's own words when there are any, so a
    reason cut to 60 characters still shows them."""
    what = f"{result.failure}: {result.message}".rstrip(": ") if result.failure else result.message
    said = server_line(result.message)
    if said is None:
        return what
    before = result.message[: _marker(result.message)[0]].rstrip("; ").strip()
    fresh = " on a fresh start" if result.kind is ProbeKind.COLD else ""
    return f"{said} ({result.failure}{fresh}: {before})" if before else f"{said} ({result.failure}{fresh})"
