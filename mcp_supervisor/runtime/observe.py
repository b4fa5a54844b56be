"""Taking one observation of a server: the probe under a last-resort deadline, errors made results,
and a timeout the daemon itself caused taken again instead of counted.

Why apart from the runner: the runner decides what an observation means (the machine, the epoch,
the events); this module only answers "what did the server say", and owns the one rule that keeps
the daemon's load out of the servers' record: a timeout that expired while the event loop was late
(``LoopLag``) says nothing about the server. The runner then drops the verdict and checks again
at once, for as long as ``void_grace`` since the first void check of the run; after that the
timeout counts (a real outage under a daemon that stays overloaded is still reported, that much
later), and its message says how late the loop was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from mcp_supervisor.config import ServerConfig
from mcp_supervisor.health.model import FailureClass, ProbeKind, ProbeResult
from mcp_supervisor.logging import get_logger
from mcp_supervisor.probes.context import OUTER_DEADLINE
from mcp_supervisor.runtime.loop_lag import LoopLag

log = get_logger("mcp_supervisor.observe")

PROBE_SAFETY_MARGIN = 5.0
"""The prober enforces its own deadlines; this outer one only guards against a prober bug."""
VOID_GRACE = 60.0
"""Seconds (at least; five intervals when longer) during which void timeouts are checked again."""


def void_grace(interval: float) -> float:
    return max(VOID_GRACE, 5 * interval)
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
) -> ProbeResult:
    """One probe; never raises but CancelledError. CONTAINER asks the engine, the rest the server."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(server.probe.timeout * 4 + PROBE_SAFETY_MARGIN) as outer:
            token = OUTER_DEADLINE.set(outer)  # a wait for a handshake turn moves it (probes/context.py)
            try:
                if kind is ProbeKind.CONTAINER:  # the engine's view (state, health), when there is one
                    engine = await docker() if server.container else None
                    if engine is not None:
                        from mcp_supervisor.actuators.container import container_probe_result

                        return container_probe_result(await engine.inspect(server.container))
                    kind = ProbeKind.WARM
                return await probe(kind)
            finally:
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
) -> Observation:
    """``observe_once``, and whether its timeout happened while the loop itself was late."""
    mark = lag.mark() if lag is not None else 0.0
    result = await observe_once(server, kind, probe, docker)
    if result.ok or result.failure is not FailureClass.TIMEOUT or lag is None:
        return Observation(result)
    stolen = lag.stolen_since(mark)
    return Observation(result, stolen) if loop_was_late(stolen, server.probe.timeout) else Observation(result)


def counted_anyway(observation: Observation) -> ProbeResult:
    """The result of a void timeout that counts (past ``void_grace``), saying why it may be ours."""
    late = observation.loop_late
    result = observation.result
    return replace(result, message=f"{result.message} (the supervisor's event loop was also {late:.2f} s late "
                                   "during this check)")
