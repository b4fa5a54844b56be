"""Hundreds of servers on one daemon (issue 22), with one real SDK server serving every entry.

* 250 entries behind one address (half in the ``initialize`` era, whose kept-open sessions each
  hold a connection for their GET stream; half ``auto``): all become ready, which a hidden
  connection cap per origin used to prevent; the gateway killed: all of them leave ``healthy``
  within an interval plus a timeout; the gateway back: all of them return.
* a start-up stampede on a machine whose cores other processes hold: zero false failures, zero
  alerts, no state but ``starting`` and ``healthy`` on the record.
* a probe whose deadline expired while the daemon's own event loop was stalled is checked again,
  not counted: the server stays healthy.

Timing figures (how long until all ready, CPU per probe, ``ready`` latency in a storm) are in
``bench/bench_scale.py``; these tests only hold the behaviour.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mcp_supervisor.events import Event
from mcp_supervisor.health.model import State
from mcp_supervisor.runtime.supervisor import Supervisor
from tests.live_daemon import make_config, running, state, until, wait_until
from tests.servers.fixtures import PYTHON, ROOT, ServerProcess, kill_pids, running_http_server, start_http_server
from tests.servers.http_proxy import Proxy

pytestmark = pytest.mark.timeout(700)

MANY = int(os.environ.get("MCP_SUPERVISOR_SCALE_SERVERS", "250"))
"""More than the 200 connections the shared HTTP pool used to allow per origin."""
GATEWAY = ROOT / "tests" / "servers" / "many_paths.py"
_QUIET = {State.STARTING, State.HEALTHY}


def start_gateway(port: int | None = None) -> ServerProcess:
    """The SDK server answering at /s/<i>/mcp for every i (``tests/servers/many_paths.py``)."""
    return start_http_server(argv=[PYTHON, str(GATEWAY), "{port}"], port=port, path="/s/0/mcp", timeout=60)


def gateway_entries(port: int, count: int, *, interval: str, timeout: str, eras: tuple[str, ...]) -> str:
    """``count`` [[servers]] behind one address; one failed probe counts (any false failure shows)."""
    return "".join(f"""
[[servers]]
name = "gw{i}"
transport = "http"
url = "http://127.0.0.1:{port}/s/{i}/mcp"
protocol = "{eras[i % len(eras)]}"
probe = {{ interval = "{interval}", timeout = "{timeout}", failure_threshold = 1, tools_interval = "10m" }}
recovery = {{ backoff_initial = "200ms", backoff_max = "1s" }}
""" for i in range(count))


async def settle(supervisor: Supervisor, condition: Callable[[], bool], timeout: float, what: str,
                 seen: list[Event] | None = None) -> list[Event]:
    """``until``, saying on failure where the servers are (states and their last messages)."""
    try:
        return await until(supervisor, condition, timeout, what, seen)
    except (AssertionError, TimeoutError):
        views = supervisor.board.views.values()
        states = Counter(str(v.state) for v in views)
        messages = Counter(v.result.message[:120] for v in views if v.result is not None and not v.result.ok)
        raise AssertionError(f"{what}: not within {timeout} s; states {dict(states)}; "
                             f"failures {messages.most_common(3)}; daemon {supervisor.status()['daemon']}") from None


def count_in(supervisor: Supervisor, states: set[State]) -> int:
    return sum(1 for view in supervisor.board.views.values() if view.state in states)


def all_in(supervisor: Supervisor, count: int, states: set[State]) -> bool:
    return len(supervisor.board.views) == count and count_in(supervisor, states) == count


async def test_hundreds_behind_one_address_all_become_ready_leave_and_return(tmp_path: Path) -> None:
    gateway = start_gateway()
    try:
        config = make_config(tmp_path, gateway_entries(gateway.port, MANY, interval="10s", timeout="5s",
                                                       eras=("legacy", "auto")))
        async with running(config) as sup:
            seen: list[Event] = []
            await settle(sup, lambda: sup.readiness()["ready"] and all_in(sup, MANY, {State.HEALTHY}), 300,
                        f"all {MANY} ready", seen)  # generous: a deadline, not a figure
            assert sup.status()["daemon"]["summary"] == f"{MANY}/{MANY} ready"

            port = gateway.port
            gateway.stop()
            # one interval (the next tick) + one timeout (its verdict), and room for a loaded machine
            await settle(sup, lambda: count_in(sup, {State.HEALTHY, State.DEGRADED}) == 0, 10 + 5 + 30,
                        "every server out of healthy", seen)
            assert not sup.readiness()["ready"]

            gateway = start_gateway(port)
            await settle(sup, lambda: all_in(sup, MANY, {State.HEALTHY}), 300, f"all {MANY} back", seen)
            assert sup.readiness()["ready"]
    finally:
        gateway.stop()


async def test_a_start_up_stampede_under_load_raises_no_false_alarm(tmp_path: Path) -> None:
    count = max(1, MANY * 2 // 5)
    gateway = start_gateway()
    # two processes holding both cores for the first seconds of the start-up (they end by themselves)
    burn = "import time\nend = time.monotonic() + 8\nwhile time.monotonic() < end: pass\n"
    burners = [subprocess.Popen([PYTHON, "-c", burn]) for _ in range(2)]
    try:
        config = make_config(tmp_path, gateway_entries(gateway.port, count, interval="2s", timeout="2s",
                                                       eras=("legacy", "auto")))
        async with running(config) as sup:
            seen = await settle(sup, lambda: all_in(sup, count, {State.HEALTHY}), 120, f"all {count} healthy")
            # and another round of probes while the burners may still run
            seen += await settle(sup, lambda: sup.status()["daemon"]["probes"] >= 2 * count, 60, "two rounds")
            alarms = [e.to_json() for e in seen if e.kind == "notify"]
            moves = [e.to_json() for e in seen if e.kind == "state" and State(e.data["new"]) not in _QUIET]
            failed = [e.to_json() for e in seen if e.kind == "probe" and not e.data["ok"]
                      and not e.data["stale"] and not e.data["void"]]
            assert (alarms, moves, failed) == ([], [], [])
    finally:
        kill_pids([p.pid for p in burners])
        for proc in burners:
            proc.wait()
        gateway.stop()


async def test_a_timeout_while_the_daemons_own_loop_was_late_is_checked_again(tmp_path: Path) -> None:
    with running_http_server() as upstream:
        proxy = await Proxy(upstream.url).start()  # in this process: it shares the supervisor's loop
        try:
            config = make_config(tmp_path, f"""
[[servers]]
name = "notes"
transport = "http"
url = "{proxy.url}"
probe = {{ interval = "300ms", timeout = "1s", failure_threshold = 1 }}
""")
            async with running(config) as sup:
                await settle(sup, lambda: state(sup, "notes") is State.HEALTHY, 30, "healthy")
                proxy.stall = 1.5  # longer than the probe's timeout
                proxy.mode = "stall"
                seen = await settle(sup, lambda: sup.status()["daemon"]["timeouts_rerun"] >= 1, 30, "a re-run")
                probes = sup.status()["daemon"]["probes"]
                seen += await settle(sup, lambda: sup.status()["daemon"]["probes"] >= probes + 2, 30, "two more probes")
                assert state(sup, "notes") is State.HEALTHY
                assert [e.to_json() for e in seen if e.kind in ("state", "notify")] == []
                voided = [e for e in seen if e.kind == "probe" and e.data["void"]]
                assert voided and all(e.data["failure_class"] is None for e in voided)  # not a failure
                assert [e.to_json() for e in seen if e.kind == "probe" and not e.data["ok"] and not e.data["void"]] == []
                assert sup.status()["daemon"]["loop_lag"]["max_ms"] >= 1000
        finally:
            await proxy.stop()


async def test_a_burst_of_state_changes_is_stored_in_few_transactions_and_survives(tmp_path: Path) -> None:
    """200 servers failing within half a second: the notifier's state (every incident open) is
    stored, in a handful of transactions instead of one per server (the alert itself waits for
    ``group_wait``)."""
    from mcp_supervisor.notify.outbox import Outbox
    from tests.test_notify_slack import down, fake_slack, notifier, webhook
    from tests.test_notify_slack import make_config as notify_config

    async with fake_slack() as fake, notifier(notify_config(tmp_path, webhook(fake), notify="")) as (service, bus):
        outbox = service.outbox
        assert outbox is not None
        writes: list[int] = []
        real = outbox.enqueue

        def counted(rows: Any, state: Any, now: Any = None) -> list[int]:
            writes.append(len(rows))
            return real(rows, state, now)

        outbox.enqueue = counted  # type: ignore[method-assign]  # the real write, counted
        for batch in range(40):  # 5 every 10 ms: they trickle in, as a storm's probes finish
            for i in range(5):
                down(bus, f"s{batch * 5 + i}")
            await asyncio.sleep(0.01)
        stored = Outbox(service.db_path)
        try:
            await wait_until(lambda: len(stored.load_state().get("open") or {}) == 200, 20, "every incident stored")
        finally:
            stored.close()
        assert len(writes) <= 3, f"{len(writes)} transactions for 200 state changes"
