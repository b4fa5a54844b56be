"""Words a person reads: one sentence per event (CLI ``events`` and the dashboard panel), durations
rounded to what a person needs, and a dead process's honest cause (never an access-log line)."""

from __future__ import annotations

import pytest

from mcp_supervisor.event_text import duration, sentence, tone
from mcp_supervisor.health.exits import error_line, is_error_line
from mcp_supervisor.spawn import exit_text

ACCESS = 'INFO:     127.0.0.1:54042 - "POST /mcp HTTP/1.1" 200 OK'


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0112, "11 ms"), (0.9338042456718074, "0.9 s"), (2.345, "2.3 s"), (12.4, "12 s"), (300, "5 min"),
    (9000, "2.5 h"), (3 * 86400, "3.0 d"), (None, "?"),
])
def test_durations_are_rounded_to_what_a_person_needs(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_a_recovery_reads_as_a_sentence_not_a_dictionary() -> None:
    done = {"seq": 9, "kind": "action_done", "server": "notes-http", "at": 0, "rung": "restart", "attempt": 2,
            "ok": True, "detail": "", "duration": 0.0112, "delay": 0.9338042456718074}
    assert sentence(done) == "restart 2 of notes-http done in 11 ms after a 0.9 s backoff"
    failed = {**done, "ok": False, "detail": "port 8080 is held by pid 12", "rung": "restore_config", "delay": 0}
    assert sentence(failed) == "restore config 2 of notes-http failed in 11 ms: port 8080 is held by pid 12"
    assert tone(done) == "good" and tone(failed) == "bad"
    begins = {"kind": "action", "server": "a", "rung": "restart", "attempt": 1, "delay": 4.2}
    assert sentence(begins) == "restart 1 of a begins after a 4.2 s backoff"


def test_every_kind_the_daemon_publishes_is_words() -> None:
    events = [
        {"kind": "state", "server": "a", "old": "healthy", "new": "failed", "reason": "killed by SIGKILL"},
        {"kind": "probe", "server": "a", "ok": False, "probe": "warm", "failure_class": "timeout",
         "latency_ms": 5012.3, "stale": False},
        {"kind": "process_exit", "server": "a", "returncode": -9, "exit": "killed by SIGKILL"},
        {"kind": "notify", "server": "a", "notify": "needs_human", "severity": "critical", "detail": "401"},
        {"kind": "config", "event": "reloaded", "added": ["b"], "removed": [], "changed": ["a"]},
        {"kind": "daemon", "event": "started", "servers": 3},
        {"kind": "run", "event": "finished", "run_id": "r1", "exit_code": 3, "report": {"health": "GOOD"}},
        {"kind": "backup", "snapshot": "s1", "files": ["x", "y"], "safe": True},
        {"kind": "something_new", "server": "a", "count": 2, "nested": {"x": 1}},
    ]
    assert [sentence(e) for e in events] == [
        "a went from healthy to failed: killed by SIGKILL",
        "warm probe of a failed (timeout) after 5.0 s",
        "the process of a was killed by SIGKILL",
        "critical alert for a: needs human: 401",
        "config reloaded: added b; changed a",
        "the daemon started with 3 server(s)",
        "run r1 finished with exit code 3, MCP health GOOD",
        "backup s1 taken: 2 file(s)",
        "something new of a: count 2",
    ]
    assert not any("{" in sentence(e) for e in events)


def test_exit_text_names_the_signal() -> None:
    assert exit_text(-9) == "killed by SIGKILL" and exit_text(1) == "exited with code 1" and exit_text(None) == "exited"


def test_only_an_error_line_is_a_dead_servers_last_words() -> None:
    assert error_line(f"INFO:     Started server process\n{ACCESS}\n") is None
    assert not is_error_line('2026-12-07 12:00:00 [INFO] GET /error 200')
    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: port must be a number\n'
    assert error_line(traceback) == "ValueError: port must be a number"
    assert error_line("ERROR:    [Errno 98] address already in use\n") == "ERROR:    [Errno 98] address already in use"
    assert error_line("fatal: bad token") == "fatal: bad token"
    assert error_line("ModuleNotFoundError: No module named 'mcp'") is not None
    assert error_line("") is None
