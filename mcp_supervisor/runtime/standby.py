"""The warm standby of a managed HTTP/SSE server: a second instance, started, supervised, probed.

Why a pair that looks like one process: the runner supervises "its process" (start, restart,
stop, exit); with ``standby = 1`` that process is a ``StandbyPair``, which hands every such call
to the current primary and keeps the second instance (``ServerConfig.standby_instance()``: the
same program on the standby port) running beside it, through the same one spawn path
(``ManagedProcess``: user, clean environment, records, limits). So the runner and its machine
stay as they are, and the standby's own loop (start, probe, restart with backoff) lives here.

Roles swap: when the primary dies while the server is settled and the standby is healthy, the
standby becomes the primary at once (the runner's process, config and prober now point at it;
no failure is counted: the job's proxy switched to a healthy instance) and the dead one is
restarted as the new standby. Otherwise the exit goes to the runner as usual (restart, ladder).

The standby counts for readiness only while it is healthy (``ServerView.standby``); the proxy
asks ``serving_url``/``other_url`` where its links go and ``wait_healthy`` before it prepares a
session on an instance.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

from mcp_supervisor.actuators.process import ManagedProcess, ProcessStartError
from mcp_supervisor.config import ServerConfig
from mcp_supervisor.config.standby import url_port
from mcp_supervisor.events import Event
from mcp_supervisor.health.model import ProbeKind, ProbeResult, State
from mcp_supervisor.health.policy import backoff_delay
from mcp_supervisor.logging import get_logger
from mcp_supervisor.probes import create_prober
from mcp_supervisor.runtime.announce import exit_event
from mcp_supervisor.runtime.exit_report import exit_text
from mcp_supervisor.runtime.port_conflict import exit_port_conflict, managed_answer
from mcp_supervisor.runtime.snapshot import ServerView

log = get_logger("mcp_supervisor.standby")

SETTLED = (State.HEALTHY, State.DEGRADED, State.RATE_LIMITED)
STARTING_EVERY = 0.1
RETIRE_AFTER = 1.0
RESPAWN_AFTER_SWAP = 0.05
"""While an instance boots it is checked this often: the sooner it is healthy, the sooner it covers."""


def _record_name(server: ServerConfig) -> ServerConfig:
    """Each instance's process is on record (and logs) under a name of its own: ``notes.8766``."""
    return server.model_copy(update={"name": f"{server.name}.{url_port(server.url or '')}"})


class _Records:
    """``records.current(name)`` of whichever process is primary now (``runtime/port_conflict.py``)."""

    def __init__(self, pair: StandbyPair) -> None:
        self._pair = pair

    def current(self, _name: str) -> Any:
        primary = self._pair.primary
        return primary.records.current(primary.server.name)


class StandbyPair:
    """The runner's process for a server with ``standby = 1``: the primary plus a warm standby."""

    def __init__(self, runner: Any, primary: ManagedProcess) -> None:
        env = runner.env
        self._runner = runner
        self._env = env
        self.name: str = runner.server.name
        self.primary = primary
        self._runner_exit = primary.on_exit
        primary.on_exit = self._primary_exit
        standby_server = runner.server.standby_instance()
        assert standby_server is not None
        self.standby_server: ServerConfig = standby_server
        self.standby = ManagedProcess(_record_name(standby_server), env.log_dir, grace=env.process_grace,
                                      on_exit=self._standby_exit, records=primary.records)
        self._prober: Any = create_prober(standby_server, env.probe_context)
        self.records = _Records(self)
        self.state = "starting"
        self.reason = "starting"
        self.since = asyncio.get_running_loop().time()
        self.swaps = 0
        self.last_swap: str | None = None
        self._fails = 0
        """Starts and exits in a row (the backoff's step); back to 0 after ``stable_after`` healthy."""
        self._misses = 0
        self._gen = 0
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._retiring: list[Any] = []
        self._closer: asyncio.Task[None] | None = None

    def attach(self, tg: asyncio.TaskGroup) -> None:
        self._task = tg.create_task(self._run(), name=f"standby:{self.name}")

    # --- what the runner uses (a ManagedProcess's surface, for the primary) ------------------

    @property
    def pid(self) -> int | None:
        return self.primary.pid

    @property
    def running(self) -> bool:
        return self.primary.running

    @property
    def started_at(self) -> float | None:
        return self.primary.started_at

    @property
    def exit_info(self) -> Any:
        return self.primary.exit_info

    @property
    def returncode(self) -> int | None:
        return self.primary.returncode

    @property
    def log(self) -> Any:
        return self.primary.log

    @property
    def on_exit(self) -> Any:
        return self._runner_exit

    async def start(self) -> None:
        await self.primary.start()

    async def restart(self) -> bool:
        return await self.primary.restart()

    async def stop(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await asyncio.gather(self.primary.stop(), self.standby.stop(), return_exceptions=True)
        if self._closer is not None:
            self._closer.cancel()
            with contextlib.suppress(BaseException):
                await self._closer
        self._retiring.append(self._prober)
        await self._close_retired(0.0)

    def kill(self) -> None:
        for process in (self.primary, self.standby):
            with contextlib.suppress(Exception):
                process.kill()

    # --- readers: status, readiness, the proxy ------------------------------------------------

    def standby_view(self) -> dict[str, Any]:
        """The ``standby`` entry of the server's status (``ServerView.standby``)."""
        return {
            "state": self.state,
            "healthy": self.state == "healthy",
            "reason": self.reason,
            "port": url_port(self.standby_server.url or ""),
            "url": self.standby_server.url,
            "pid": self.standby.pid,
            "primary_port": url_port(self._runner.server.url or ""),
            "since": self.since,
            "swaps": self.swaps,
            "last_swap": self.last_swap,
        }

    def _primary_ok(self) -> bool:
        return self.primary.running and self._runner.machine.state in SETTLED

    def healthy(self, url: str) -> bool:
        if url == self._runner.server.url:
            return self._primary_ok()
        return url == self.standby_server.url and self.state == "healthy"

    def serving_url(self) -> str:
        """Where a new proxy link goes: the primary, unless it is down and the standby is healthy."""
        if not self._primary_ok() and self.state == "healthy":
            return self.standby_server.url or ""
        return self._runner.server.url or ""

    def other_url(self, url: str) -> str:
        primary = self._runner.server.url or ""
        return self.standby_server.url or "" if url == primary else primary

    async def wait_healthy(self, url: str, timeout: float) -> None:
        """Return once the instance at ``url`` is healthy; OSError past ``timeout``. Woken by the
        standby's own changes; the primary's state is looked at again every 0.25 s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.healthy(url):
            if self._closed or loop.time() >= deadline:
                raise OSError(f"the instance at {url} is not healthy")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(0.25, max(0.0, deadline - loop.time())))

    # --- the swap -----------------------------------------------------------------------------

    def _primary_exit(self, code: int | None) -> None:
        runner = self._runner
        settled = runner.machine.state in SETTLED and not runner.machine.busy()
        if self._closed or not settled or self.state != "healthy" or not self.standby.running:
            if self._runner_exit is not None:
                self._runner_exit(code)  # no healthy standby: the runner's usual path (restart, ladder)
            return
        dead, dead_server = self.primary, runner.server
        info = dead.exit_info
        text = info.text if info is not None else exit_text(code)
        self.primary, self.standby = self.standby, dead
        self.primary.on_exit, self.standby.on_exit = self._primary_exit, self._standby_exit
        runner.server, self.standby_server = self.standby_server, dead_server
        self._retire(runner.prober)
        runner.prober = create_prober(runner.server, self._env.probe_context)
        self._retire(self._prober)
        self._prober = create_prober(dead_server, self._env.probe_context)
        runner._epoch += 1  # a probe in flight talked to the dead one: it is not the check after this
        runner.last_exit = text
        self._gen += 1
        self.swaps += 1
        self.last_swap = f"the primary on port {url_port(dead_server.url or '')} {text}; the standby took over"
        self._fails = 0
        self._set("down", f"was primary until it {text}; restarting as the standby")
        oom = bool(getattr(info, "oom", False))
        log.warning("primary died; the standby took over", server=self.name, exit=text,
                    port=url_port(runner.server.url or ""))
        self._env.bus.publish(exit_event(dead_server, code, text, oom=oom))
        self._env.bus.publish(Event(kind="standby", server=self.name, data={
            "event": "promoted", "port": url_port(runner.server.url or ""), "pid": self.primary.pid,
            "exit": text, "swaps": self.swaps}))
        runner.publish()  # no probe now: the standby answered its own a moment ago, and the held calls go first
        # the dead one starts again as the standby right after the held calls went out (a spawn
        # forks the daemon: not in the same loop turn as the switch)
        asyncio.get_running_loop().call_later(RESPAWN_AFTER_SWAP, self._wake.set)

    def _retire(self, prober: Any) -> None:
        """Close a prober a second from now: not in the moment the held calls go to the new
        primary (closing an SDK session costs CPU on the loop), and after a probe in flight."""
        self._retiring.append(prober)
        if self._closer is None or self._closer.done():
            self._closer = asyncio.ensure_future(self._close_retired(RETIRE_AFTER))

    async def _close_retired(self, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._runner._probe_lock:  # the runner's old prober may be in use until then
            while self._retiring:
                with contextlib.suppress(Exception):
                    await self._retiring.pop().aclose()

    # --- the standby's own loop ---------------------------------------------------------------

    def _standby_exit(self, code: int | None) -> None:
        info = self.standby.exit_info
        text = info.text if info is not None else exit_text(code)
        self._gen += 1
        self._fails += 1
        held = exit_port_conflict(self.standby.server.name, self.standby_server.url, self.standby)  # a port taken
        self._set("down", f"{held} (the standby {text})" if held else f"the standby {text}")
        log.warning("standby instance exited", server=self.name, exit=text)
        self._wake.set()

    def _set(self, state: str, reason: str) -> None:
        if state != self.state:
            self.since = asyncio.get_running_loop().time()
            self._env.bus.publish(Event(kind="standby", server=self.name, data={
                "event": "state", "state": state, "old": self.state, "reason": reason,
                "port": url_port(self.standby_server.url or "")}))
        self.state, self.reason = state, reason
        self._changed.set()
        self._runner.publish()

    async def _run(self) -> None:
        while not self._closed:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the standby's trouble must never take the primary's runner down
                log.exception("standby step failed; continuing", server=self.name)
                await asyncio.sleep(1.0)

    async def _pause(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _step(self) -> None:
        server = self.standby_server
        recovery, probe = server.recovery, server.probe
        if not self.standby.running:
            if self._fails > 1:
                ceiling = min(recovery.backoff_max, recovery.backoff_initial * recovery.backoff_factor ** (self._fails - 2))
                delay = backoff_delay(ceiling, self._env.rng)
                self._set("backoff", f"{self.reason}; next start in {delay:.1f} s")
                await asyncio.sleep(delay)
            try:
                await self.standby.start()
            except ProcessStartError as exc:
                self._fails += 1
                self._set("failed", str(exc))
                return
            self._set("starting", f"started (pid {self.standby.pid}) on port {url_port(server.url or '')}")
        gen, prober = self._gen, self._prober
        try:
            result: ProbeResult = await asyncio.wait_for(prober.probe(ProbeKind.WARM), probe.timeout + 1.0)
        except TimeoutError:
            result = ProbeResult(ok=False, kind=ProbeKind.WARM, message=f"no answer within {probe.timeout:g} s")
        if gen != self._gen or self._closed:
            return  # a swap or an exit came in between: that answer was about another process
        if result.ok:  # an answer from a process that is not our standby (a port taken) is no standby
            result = managed_answer(self.standby.server.name, server.url, self.standby, result,
                                    settled=self.state == "healthy")
        now = asyncio.get_running_loop().time()
        if result.ok:
            self._misses = 0
            if self.state == "healthy" and now - self.since >= recovery.stable_after:
                self._fails = 0
            self._set("healthy", f"answers on port {url_port(server.url or '')} (pid {self.standby.pid})")
            await self._pause(probe.interval)
            return
        if self.state == "starting" and now - self.since < max(probe.start_period, 5.0):
            await self._pause(STARTING_EVERY)
            return
        self._misses += 1
        if self.state == "healthy" and self._misses < probe.failure_threshold:
            await self._pause(min(1.0, probe.interval))
            return
        self._fails += 1
        self._set("failed", f"the standby does not answer: {result.message}")
        await self.standby.stop()  # the next step starts it again, after the backoff


def attach_standby(runner: Any, tg: asyncio.TaskGroup) -> None:
    """Give a managed http/sse server with ``standby = 1`` its second instance (after ``runner.start``)."""
    server = runner.server
    if not (server.standby and server.managed and server.transport != "stdio"):
        return
    if not isinstance(runner.process, ManagedProcess):
        return
    pair = StandbyPair(runner, runner.process)
    runner.process = pair
    pair.attach(tg)
    runner.publish()


def with_standby(view: ServerView, runner: Any) -> ServerView:
    """The runner's view with its standby's state (``ServerView.standby``), if it has one."""
    process = getattr(runner, "process", None)
    return replace(view, standby=process.standby_view()) if isinstance(process, StandbyPair) else view


def pair_of(runners: dict[str, Any], name: str) -> StandbyPair | None:
    runner = runners.get(name)
    process = getattr(runner, "process", None)
    return process if isinstance(process, StandbyPair) else None
