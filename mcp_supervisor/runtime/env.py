"""What every runner shares with the supervisor: the bus, the executor, probe resources, counters.

Why its own module: it is the contract between the supervisor (which builds it once) and the
runners (which only read it and call its hooks); neither needs the other's class to agree on it.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mcp_supervisor.config import ServerConfig
from mcp_supervisor.events import EventBus
from mcp_supervisor.health.model import Transition
from mcp_supervisor.runtime.executor import Executor
from mcp_supervisor.runtime.loop_lag import LoopLag
from mcp_supervisor.runtime.observe import OverloadNotice
from mcp_supervisor.runtime.snapshot import ServerView


@dataclass
class RunnerEnv:
    """What every runner shares with the supervisor."""

    bus: EventBus
    executor: Executor
    probe_context: Any
    log_dir: Any
    on_transition: Callable[[Transition], None]
    """Called after a runner published the view of its new state."""
    docker: Callable[[], Awaitable[Any]] = field(default=lambda: _no_docker())
    process_grace: float = 2.0
    can_restore: Callable[[ServerConfig], bool] = lambda server: False
    rng: random.Random = field(default_factory=random.Random)
    drift_ms: deque[float] = field(default_factory=lambda: deque(maxlen=8192))
    counters: dict[str, int] = field(default_factory=lambda: {"probes": 0, "actions": 0, "reruns": 0})
    on_view: Callable[[ServerView], None] = lambda view: None
    """Receives the runner's new ``ServerView`` after every change a reader can see."""
    lag: LoopLag | None = None
    overload: OverloadNotice = field(default_factory=OverloadNotice)
    """Says (once a minute at most) that checks are re-run because the daemon itself was late."""
    contracts: Any = None
    """The ``runtime.contracts.ContractKeeper`` (tool contracts), None when there is no state dir."""


async def _no_docker() -> None:
    return None
