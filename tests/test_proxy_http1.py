"""The proxy's lean backend client against a real socket speaking odd but legal (or broken) HTTP.

Why: the client is hand-sized for the hot path; an interim ``100 Continue`` taken for the answer
would leave the real answer on a kept-alive connection for the next call (a reply to the wrong
request), and a malformed length must be a broken exchange the proxy reports, not a crash.
"""

from __future__ import annotations

import asyncio

import pytest

from mcp_supervisor.proxy.http1 import Pool


async def _serve(answers: list[bytes]) -> tuple[asyncio.Server, str]:
    """One canned answer per request read, in order, over kept-alive connections."""
    queue = list(answers)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while queue:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            writer.write(queue.pop(0))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/mcp"


def test_an_interim_100_continue_is_skipped_and_the_next_call_gets_its_own_answer() -> None:
    async def scenario() -> list[bytes]:
        server, url = await _serve([
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond",
        ])
        pool = Pool()
        bodies = []
        async with server:
            for _ in range(2):
                async with pool.post(url, b"{}", {"Content-Type": "application/json"}) as answer:
                    assert answer.status == 200
                    bodies.append(await answer.read())
        pool.close()
        return bodies

    assert asyncio.run(scenario()) == [b"first", b"second"]


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"SPDY/3 200 OK\r\n\r\n",
])
def test_a_malformed_answer_is_a_broken_exchange_named_as_such(answer: bytes) -> None:
    async def scenario() -> None:
        server, url = await _serve([answer])
        pool = Pool()
        async with server:
            with pytest.raises(OSError):
                async with pool.post(url, b"{}", {}) as response:
                    await response.read()
        pool.close()

    asyncio.run(scenario())
