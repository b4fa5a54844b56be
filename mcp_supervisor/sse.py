"""Server-sent events as bytes: the frames the daemon writes and the parser every reader uses.

Why one module for both directions, and why stdlib only: the control API and the status page
write the same frames, and the CLI client, the guardian and the dashboard read them; one codec
means one reading of the format (``text/event-stream`` in the HTML standard). It sits below every
package so that all of them may use it; the synchronous client imports it on its fast path, so it
imports nothing (not even ``typing`` or ``dataclasses``, which cost the CLI milliseconds).

The aiohttp side (a stream per subscriber, heartbeats, a cap on open streams) is
``api/event_stream.py``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: see the module docstring
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
"""Response headers of every stream: no cache, and no buffering by a reverse proxy in front."""
MAX_LINE = 1 << 20
"""A line longer than this (no newline in a megabyte) is a broken or hostile stream: dropped."""


class SseEvent:
    """One dispatched event: ``data`` (lines joined by ``\\n``), its ``event`` type and last ``id``."""

    __slots__ = ("data", "event", "id")

    def __init__(self, data: str, event: str = "message", id: str = "") -> None:
        self.data = data
        self.event = event
        self.id = id

    def __repr__(self) -> str:
        return f"SseEvent(event={self.event!r}, id={self.id!r}, data={self.data[:60]!r})"


def _clean(value: str) -> str:
    """A field value cannot hold a line break (it would end the field)."""
    return value.replace("\r", " ").replace("\n", " ")


def frame(data: str, *, event: str | None = None, id: str | int | None = None) -> bytes:
    """One event as bytes; a multi-line ``data`` becomes several ``data:`` lines (the reader
    joins them back with ``\\n``)."""
    head = ""
    if id is not None and id != "":
        head += f"id: {_clean(str(id))}\n"
    if event:
        head += f"event: {_clean(event)}\n"
    body = "".join(f"data: {line}\n" for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return (head + body + "\n").encode()


def comment(text: str) -> bytes:
    """A comment line (``: text``): readers skip it; it keeps idle connections (and proxies) awake."""
    return f": {_clean(text)}\n\n".encode()


class SseParser:
    """Incremental: feed it bytes as they arrive (any chunking), get the complete events back.

    Lines end with LF or CRLF (a lone CR, allowed by the standard but written by no server we
    talk to, is not a line end here). Comments and events without data are skipped, as the
    standard says; an unknown field is ignored.
    """

    __slots__ = ("_data", "_event", "_id", "_max_line", "_pending")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max_line = max_line
        """The proxy passes more: an MCP message (one ``data:`` line) may be larger than a megabyte."""
        self._pending = b""
        self._data: list[str] = []
        self._event = ""
        self._id = ""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        out: list[SseEvent] = []
        if not chunk:
            return out
        self._pending += chunk
        if b"\n" not in chunk:
            if len(self._pending) > self._max_line:
                self._pending = b""
            return out
        *lines, self._pending = self._pending.split(b"\n")
        for raw in lines:
            event = self._line(raw.decode("utf-8", "replace").removesuffix("\r"))
            if event is not None:
                out.append(event)
        return out

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SseEvent("\n".join(self._data), self._event or "message", self._id)
            self._data, self._event = [], ""
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


def parse(chunks: Iterable[bytes]) -> Iterator[SseEvent]:
    """Every event in a stream of byte chunks, as they complete (a synchronous reader's loop)."""
    parser = SseParser()
    for chunk in chunks:
        yield from parser.feed(chunk)
