"""The one SSE codec (``mcp_supervisor/sse.py``): what the daemon writes, every reader reads back,
however the bytes are cut on the way (the control API's and the page's streams run through it in
tests/test_api.py, test_status_page.py, test_guardian.py and test_dashboard.py)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mcp_supervisor import sse


def test_frames_round_trip_with_type_id_and_multiline_data() -> None:
    stream = (sse.comment("connected") + sse.frame('{"a": 1}', event="state", id=7)
              + sse.comment("heartbeat") + sse.frame("line one\nline two") + sse.frame("x", event="evil\nevent: y"))
    events = list(sse.parse([stream]))
    assert [(e.event, e.id, e.data) for e in events] == [
        ("state", "7", '{"a": 1}'),
        ("message", "7", "line one\nline two"),  # the last id stays, as the standard says
        ("evil event: y", "7", "x"),  # a line break cannot smuggle a field in
    ]


def test_what_other_servers_write_is_read_too() -> None:
    raw = b"retry: 1000\r\n: a comment\r\nevent: ping\r\n\r\ndata:no-space\r\ndata:  two spaces\r\nunknown: x\r\n\r\n"
    events = list(sse.parse([raw]))
    assert [(e.event, e.data) for e in events] == [("message", "no-space\n two spaces")]  # no data: no event


@given(st.lists(st.text(max_size=40), min_size=1, max_size=6), st.lists(st.integers(1, 30), max_size=20))
def test_any_cut_of_the_bytes_gives_the_same_events(payloads: list[str], cuts: list[int]) -> None:
    stream = b"".join(sse.frame(json.dumps(p), event="e", id=i) for i, p in enumerate(payloads))
    chunks, rest = [], stream
    for size in cuts:
        chunks.append(rest[:size])
        rest = rest[size:]
    chunks.append(rest)
    assert [json.loads(e.data) for e in sse.parse(chunks)] == payloads


def test_an_endless_line_is_dropped_not_buffered() -> None:
    parser = sse.SseParser()
    for _ in range(3):
        assert parser.feed(b"x" * (sse.MAX_LINE // 2)) == []
    assert len(parser._pending) <= sse.MAX_LINE
    assert [e.data for e in parser.feed(b"\n\ndata: ok\n\n")] == ["ok"]
