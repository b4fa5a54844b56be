"""Bounded under a flood: someone else's connections never fail a job's ``ready``, and the status
page's live streams are capped (issue 15 items 5 and 6), against a real daemon.

* 1 000 connections opened at once on the control socket: every one is queued (the backlog is
  the kernel's maximum), and ``ready`` asked meanwhile answers;
* the client waits out a full accept queue (the kernel queues a blocking connect) and retries a
  refused connect briefly (a daemon restarting), over real sockets, and still reports a socket
  nobody listens on;
* 2 000 ``/api/events`` connections on the status page: exactly ``[web] max_event_streams`` (256)
  streams are served, the rest get a JSON 503 at once; ``/metrics`` counts both, and the slots
  come back when the clients leave.

The timing of ``ready`` during the page flood is a figure in ``bench/bench_flood.py``.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_supervisor.api import wire
from mcp_supervisor.api.client import DaemonUnreachable, SupervisorClient
from mcp_supervisor.web.server import MAX_STREAMS
from tests.live_daemon import LiveDaemon, live_daemon, wait_for
from tests.test_status_page import card_states, chrome, needs_chromium

SYS_CONNECT = 42  # x86_64
SLEEP_CALLS = {35, 230}  # nanosleep, clock_nanosleep
x86_64 = pytest.mark.skipif(__import__("platform").machine() != "x86_64", reason="reads x86_64 syscall numbers")


@pytest.fixture(scope="module")
def daemon() -> Iterator[LiveDaemon]:
    with live_daemon() as running:
        wait_for(lambda: running.sock.exists() and running.states(), 60, "the control socket answers")
        yield running


def metric(sock: Path, name: str) -> float:
    conn = wire.connect(str(sock), 10)
    try:
        wire.send(conn, "GET", "/metrics", None, {})
        response = wire.Response(conn)
        text = response.read().decode()
        response.close()
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


# --- the control socket ---------------------------------------------------------------------------


def test_a_flood_on_the_control_socket_does_not_fail_a_concurrent_ready(daemon: LiveDaemon) -> None:
    flood: list[socket.socket] = []
    answers: list[dict[str, object]] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            answers.append(SupervisorClient(daemon.sock, timeout=30).ready())
        except BaseException as exc:  # the assertion below names it
            errors.append(exc)

    askers = [threading.Thread(target=ask) for _ in range(20)]
    refused = 0
    try:
        for index in range(1000):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            flood.append(sock)
            if sock.connect_ex(str(daemon.sock)) != 0:
                refused += 1
            if index == 300:
                for thread in askers:
                    thread.start()
        for thread in askers:
            thread.join(60)
    finally:
        for sock in flood:
            sock.close()
    assert refused == 0, f"{refused} of 1000 connections found the accept queue full"
    assert not errors, errors
    assert len(answers) == 20 and all("ready" in answer for answer in answers)


def _in_syscall(thread: threading.Thread, numbers: set[int]) -> bool:
    try:
        text = Path(f"/proc/self/task/{thread.native_id}/syscall").read_text()
    except OSError:
        return False
    first = text.split()[0]
    return first.lstrip("-").isdigit() and int(first) in numbers


@x86_64
def test_the_client_waits_out_a_full_accept_queue(short_tmp: Path) -> None:
    path = str(short_tmp / "busy.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    queued: list[socket.socket] = []
    got: list[socket.socket | BaseException] = []
    try:
        while True:  # fill the queue the way a flood does: until the kernel says EAGAIN
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            queued.append(sock)
            if sock.connect_ex(path) == errno.EAGAIN:
                break
        with pytest.raises(TimeoutError, match="accept queue full"):
            wire.connect(path, 0.2)  # nobody accepts: the deadline is kept

        def connect() -> None:
            try:
                got.append(wire.connect(path, 30))
            except BaseException as exc:
                got.append(exc)

        waiter = threading.Thread(target=connect)
        waiter.start()
        wait_for(lambda: _in_syscall(waiter, {SYS_CONNECT}) or got, 10, "the client queued in connect()")
        assert not got, got  # it was waiting, not refused
        accepted, _ = listener.accept()  # room in the queue: the waiting client gets in
        waiter.join(10)
        accepted.close()
        assert len(got) == 1 and isinstance(got[0], socket.socket), got
        assert got[0].getpeername() == path
        got[0].close()
    finally:
        for sock in queued:
            sock.close()
        listener.close()


@x86_64
def test_a_refused_connect_is_retried_briefly_then_reported(short_tmp: Path) -> None:
    path = short_tmp / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))  # a socket file nobody listens on: what a stopped daemon leaves
    try:
        with pytest.raises(DaemonUnreachable, match="refused"):
            SupervisorClient(path, timeout=10).status()
        got: list[socket.socket | BaseException] = []

        def connect() -> None:
            try:
                got.append(wire.connect(str(path), 10))
            except BaseException as exc:
                got.append(exc)

        waiter = threading.Thread(target=connect)
        waiter.start()
        wait_for(lambda: _in_syscall(waiter, SLEEP_CALLS) or got, 10, "the client pausing between tries")
        sock.listen(8)  # the daemon is back
        waiter.join(10)
        assert len(got) == 1 and isinstance(got[0], socket.socket), got
        got[0].close()
    finally:
        sock.close()


# --- the status page's live streams ---------------------------------------------------------------


async def _open_stream(port: int) -> tuple[int, bytes, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
    status = int(head.split(b" ", 2)[1])
    first = await asyncio.wait_for(reader.readuntil(b"\n\n") if status == 200 else reader.read(), 60)
    return status, first, writer


def test_the_status_page_caps_its_event_streams(daemon: LiveDaemon) -> None:
    async def flood() -> list[tuple[int, bytes, asyncio.StreamWriter]]:
        return await asyncio.gather(*(_open_stream(daemon.web_port) for _ in range(2000)))

    async def scenario() -> None:
        results = await flood()
        try:
            served = [first for status, first, _ in results if status == 200]
            refused = [first for status, first, _ in results if status == 503]
            assert len(served) == MAX_STREAMS and len(refused) == 2000 - MAX_STREAMS
            assert all(b"event: hello" in first for first in served)
            assert all(b'"code": "too_many_streams"' in body or b'"code":"too_many_streams"' in body for body in refused)
            ready = await asyncio.to_thread(SupervisorClient(daemon.sock, timeout=30).ready)
            assert "ready" in ready  # the control socket answers meanwhile
            assert await asyncio.to_thread(metric, daemon.sock, "mcp_supervisor_status_page_streams") == MAX_STREAMS
            assert await asyncio.to_thread(metric, daemon.sock, "mcp_supervisor_status_page_streams_refused_total") \
                >= 2000 - MAX_STREAMS
        finally:
            for _, _, writer in results:
                writer.close()
        await asyncio.to_thread(wait_for, lambda: metric(daemon.sock, "mcp_supervisor_status_page_streams") == 0,
                                30, "every stream slot freed")
        status, first, writer = await _open_stream(daemon.web_port)
        writer.close()
        assert status == 200 and b"event: hello" in first

    asyncio.run(scenario())


@needs_chromium
def test_a_page_past_the_cap_still_shows_the_states_and_says_only_live_updates_wait(daemon: LiveDaemon) -> None:
    from selenium.webdriver.common.by import By

    release = threading.Event()
    held: list[int] = []

    async def hold() -> None:  # every slot taken, as a flood leaves them
        results = await asyncio.gather(*(_open_stream(daemon.web_port) for _ in range(MAX_STREAMS)))
        held.extend(status for status, _, _ in results)
        await asyncio.to_thread(release.wait)
        for _, _, writer in results:
            writer.close()

    holder = threading.Thread(target=asyncio.run, args=(hold(),))
    holder.start()
    driver = None
    try:
        wait_for(lambda: len(held) == MAX_STREAMS, 60, "every stream slot taken")
        assert set(held) == {200}
        driver = chrome()
        driver.get(f"http://127.0.0.1:{daemon.web_port}/")
        wait_for(lambda: len(card_states(driver)) == 2, 30, "the cards, from the summary")
        wait_for(lambda: driver.find_element(By.ID, "live-note").is_displayed(), 20, "the 'live updates paused' note")
        assert not driver.find_element(By.ID, "banner").is_displayed()  # the supervisor does answer
    finally:
        release.set()
        holder.join(30)
        if driver is not None:
            driver.quit()
