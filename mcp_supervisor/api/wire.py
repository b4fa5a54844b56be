"""HTTP/1.1 over the control socket, by hand: connect (patiently), send one request, read one response.

Why by hand, and not even ``http.client``: the CLI must answer ``ready`` close to a bare
interpreter's start-up, and a job that only asks "are MCPs ready?" should not pay for importing
aiohttp, asyncio or ``http.client`` (which pulls in the ``email`` package: ~10 ms). The daemon
speaks plain HTTP/1.1 on its own socket, so a few lines over ``socket`` suffice: one request per
connection (``Connection: close``), a Content-Length, chunked or until-close body.

Why connect retries: when hundreds of clients connect at once (someone's flood, a fleet of jobs
starting together) the socket's accept queue fills and the kernel answers ``EAGAIN`` at once; a
daemon being restarted answers ``ECONNREFUSED`` for a moment. Neither means "no supervisor": a
full queue is waited out until the caller's deadline, a refusal retried for ``REFUSED_GRACE`` (a
socket file nobody listens on must still be reported quickly as "daemon not running").
"""

from __future__ import annotations

import errno
import socket
import struct
import time

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing costs the CLI a few ms
if TYPE_CHECKING:
    from collections.abc import Iterator

MAX_LINE = 65536
REFUSED_GRACE = 1.0
"""Seconds a refused connection is retried (a daemon restarting re-listens well within this)."""
_RETRY_FIRST = 0.002
_RETRY_MAX = 0.05


class BadResponse(Exception):
    """The bytes on the socket are not an HTTP response."""


class Response:
    """One HTTP/1.1 response read from a connected socket (status, headers, then the body)."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")
        status_line = self._line()
        parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise BadResponse(f"not an HTTP status line: {status_line[:80]!r}")
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        self.headers: dict[str, str] = {}
        while True:
            line = self._line()
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise BadResponse("connection closed in the headers")
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        self._left: int | None = int(length) if length and length.isdigit() and not self._chunked else None
        self._chunk_left = 0
        self._done = False

    def close(self) -> None:
        self._file.close()

    def _line(self) -> bytes:
        line = self._file.readline(MAX_LINE)
        if len(line) >= MAX_LINE and not line.endswith(b"\n"):
            raise BadResponse("header line too long")
        return line

    def read(self) -> bytes:
        """The whole (rest of the) body."""
        if self._left is not None:
            data = self._file.read(self._left)
            self._left = 0
            return data
        out = bytearray()
        while chunk := self.read_some():
            out += chunk
        return bytes(out)

    def read_some(self) -> bytes:
        """The next piece of the body; b"" at its end (for streams: what the daemon sent so far)."""
        if self._done:
            return b""
        if self._left is not None:
            self._done = True
            return self.read()
        if not self._chunked:
            data = self._file.read1(65536)
            self._done = not data
            return data
        if self._chunk_left == 0:
            size_line = self._line()
            try:
                self._chunk_left = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadResponse(f"bad chunk size {size_line[:40]!r}") from None
            if self._chunk_left == 0:
                self._done = True
                return b""
        data = self._file.read1(self._chunk_left)
        if not data:
            raise BadResponse("connection closed inside a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._file.readline(8)  # the CRLF after the chunk
        return data

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives (for server-sent events: feed it to ``sse.parse``)."""
        while chunk := self.read_some():
            yield chunk


def _queue_timeout(sock: socket.socket, seconds: float) -> None:
    """How long a blocking connect may wait for room in a full accept queue (0: for ever)."""
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", whole, int((seconds - whole) * 1e6)))


def connect(socket_path: str, timeout: float | None) -> socket.socket:
    """A socket connected to ``socket_path`` (then in ``timeout`` mode for the request).

    The connect itself is blocking, bounded by ``SO_SNDTIMEO``: when the accept queue is full the
    kernel queues us and wakes us when there is room (no polling, no lost turn), until
    ``timeout``. A refusal (nobody listening) is retried for ``REFUSED_GRACE``. Raises the last
    OSError, TimeoutError at the deadline.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    refused_until = time.monotonic() + (REFUSED_GRACE if timeout is None else min(REFUSED_GRACE, timeout))
    pause = _RETRY_FIRST
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if deadline is not None:
                _queue_timeout(sock, max(deadline - time.monotonic(), 0.001))
            sock.connect(socket_path)
            if deadline is not None:
                _queue_timeout(sock, 0)
            sock.settimeout(timeout)
            return sock
        except OSError as exc:
            sock.close()
            now = time.monotonic()
            if exc.errno == errno.EAGAIN:  # the queue stayed full until the deadline
                if deadline is None or now + pause >= deadline:
                    raise TimeoutError(errno.ETIMEDOUT, "the supervisor's socket stayed busy (accept queue full)") from None
            elif exc.errno == errno.ECONNREFUSED:
                if now + pause >= refused_until:
                    raise
            else:
                raise
        except BaseException:
            sock.close()
            raise
        time.sleep(pause)
        pause = min(pause * 2, _RETRY_MAX)


def send(sock: socket.socket, method: str, path: str, payload: bytes | None, headers: dict[str, str]) -> None:
    head = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    if payload is not None or method in ("POST", "PUT", "PATCH"):
        head.append(f"Content-Length: {len(payload or b'')}")
    sock.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + (payload or b""))
