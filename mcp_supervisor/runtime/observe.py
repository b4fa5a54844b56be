"""Taking one observation of a server: the probe under a last-resort deadline, errors made results,
and a timeout the daemon itself caused taken again instead of counted.

Why apart from the runner: the runner decides what an observation means (the machine, the epoch,
the events); this module only answers "what did the server say", and owns the one rule that keeps
the daemon's load out of the servers' record: a timeout that expired while the event loop was late
(``LoopLag``) says nothing about the server. The runner then drops the verdict and checks again
at once with deadlines twice as long (``widened``: 2, 4, then 8 times ``probe.timeout``), so a
server that answers slowly only because the daemon (or the machine) is short of CPU gets the time
it needs, while one that does not answer at all is still caught: the longer the deadline, the more
of it the loop must lose for a timeout to be void again. Only at the widest deadline does the old
rule apply: void checks for ``void_grace`` more, then the timeout counts (its message says how late
the loop was). The daemon's overload is said once a minute in the log (``OverloadNotice``), in
``status`` (``daemon.timeouts_rerun``, ``loop_lag``) and in the metrics, never as a server's failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from mcp_supervisor.config import ServerConfig
from mcp_supervisor.health.model import FailureClass, ProbeKind, ProbeResult
from mcp_supervisor.logging import get_logger
from mcp_supervisor.probes.context import OUTER_DEADLINE, TIMEOUT_SCALE, TURN_GRANTED
from mcp_supervisor.runtime.loop_lag import LoopLag

log = get_logger("mcp_supervisor.observe")

PROBE_SAFETY_MARGIN = 5.0
"""The prober enforces its own deadlines; this outer one only guards against a prober bug."""
VOID_GRACE = 60.0
"""Seconds (at least; five intervals when longer) during which void timeouts at the widest deadline
are checked again."""
MAX_WIDEN = 8.0
"""The widest deadline of a re-run check, in units of ``probe.timeout``."""
OVERLOAD_TOLD_EVERY = 60.0


def void_grace(interval: float) -> float:
    return max(VOID_GRACE, 5 * interval)


def widened(void_runs: int) -> float:
    """How many times ``probe.timeout`` the deadlines of a check are after ``void_runs`` void ones."""
    return min(MAX_WIDEN, 2.0 ** void_runs)


class OverloadNotice:
    """One log line a minute at most while checks are re-run because the daemon itself was late."""

    def __init__(self) -> None:
        self._told_at = -OVERLOAD_TOLD_EVERY

    def tell(self, now: float, late: float, reruns: int) -> None:
        if now - self._told_at >= OVERLOAD_TOLD_EVERY:
            self._told_at = now
            log.warning("the supervisor is short of CPU: probe timeouts are checked again with longer "
                        "deadlines instead of being counted against the servers", loop_late_s=round(late, 3),
                        timeouts_rerun=reruns)


LATE_FRACTION = 0.1
"""The loop losing this share of a probe's timeout during the probe makes its timeout untrustworthy."""


def loop_was_late(stolen: float, timeout: float) -> bool:
    """Whether ``stolen`` seconds of loop lateness during a probe void its timeout verdict."""
    return stolen >= max(0.02, LATE_FRACTION * timeout)


async def observe_once(
    server: ServerConfig,
    kind: ProbeKind,
    probe: Callable[[ProbeKind], Awaitable[ProbeResult]],
    docker: Callable[[], Awaitable[Any]],
    scale: float = 1.0,
) -> ProbeResult:
    """One probe; never raises but CancelledError. CONTAINER asks the engine, the rest the server.
    ``scale``: its deadlines are that many times ``probe.timeout`` (``widened``)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(server.probe.timeout * scale * 4 + PROBE_SAFETY_MARGIN) as outer:
            token = OUTER_DEADLINE.set(outer)  # a wait for a handshake turn moves it (probes/context.py)
            widen = TIMEOUT_SCALE.set(scale)
            try:
                if kind is ProbeKind.CONTAINER:  # the engine's view (state, health), when there is one
                    engine = await docker() if server.container else None
                    if engine is not None:
                        from mcp_supervisor.actuators.container import container_probe_result

                        return container_probe_result(await engine.inspect(server.container))
                    kind = ProbeKind.WARM
                return await probe(kind)
            finally:
                TIMEOUT_SCALE.reset(widen)
                OUTER_DEADLINE.reset(token)
    except TimeoutError:
        return ProbeResult(
            ok=False,
            failure=FailureClass.TIMEOUT,
            kind=kind,
            latency_ms=(loop.time() - started) * 1000.0,
            message="probe overran every deadline",
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("prober raised", server=server.name)
        return ProbeResult(
            ok=False, failure=FailureClass.PROTOCOL, kind=kind, message=f"probe error: {type(exc).__name__}"
        )


@dataclass(frozen=True)
class Observation:
    result: ProbeResult
    loop_late: float = 0.0
    """Seconds the event loop lost during a probe that timed out (0.0: the verdict stands)."""

    @property
    def void(self) -> bool:
        """A timeout measured by a late loop says nothing about the server."""
        return self.loop_late > 0.0


async def observe(
    server: ServerConfig,
    kind: ProbeKind,
    probe: Callable[[ProbeKind], Awaitable[ProbeResult]],
    docker: Callable[[], Awaitable[Any]],
    lag: LoopLag | None,
    scale: float = 1.0,
) -> Observation:
    """``observe_once``, and whether its timeout happened while the loop itself was late."""
    if lag is None:
        return Observation(await observe_once(server, kind, probe, docker, scale))
    marks = [lag.mark()]
    token = TURN_GRANTED.set(lambda: marks.__setitem__(0, lag.mark()))  # a queue wait is not the check's
    try:
        result = await observe_once(server, kind, probe, docker, scale)
    finally:
        TURN_GRANTED.reset(token)
    if result.ok or result.failure is not FailureClass.TIMEOUT:
        return Observation(result)
    stolen = lag.stolen_since(marks[0])
    return Observation(result, stolen) if loop_was_late(stolen, server.probe.timeout * scale) else Observation(result)


def counted_anyway(observation: Observation) -> ProbeResult:
    """The result of a void timeout that counts (past ``void_grace``), saying why it may be ours."""
    late = observation.loop_late
    result = observation.result
    return replace(result, message=f"{result.message} (the supervisor's event loop was also {late:.2f} s late "
                                   "during this check)")
