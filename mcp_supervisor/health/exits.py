"""A dead process's last words: its last output line, only when it is an error line.

Why a filter on the last output line: a server killed by SIGKILL printed nothing about it; its
last line is whatever it logged before, often an access-log line (``INFO: 127.0.0.1 - "POST
/mcp" 200 OK``). Shown as the reason, that line reads as if a successful request killed it. The
cause is the signal or exit code (``spawn.exit_text``); the server's own words are added only
when they are an error (a traceback's last line, a line that says error, fatal, panic ...). Pure.
"""

from __future__ import annotations

import re

_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Failure|Fault)\b(?::|$)")
"""The last line of a Python traceback: ``ValueError: boom``, ``pkg.mod.CustomError: x``."""
_ERROR_WORDS = re.compile(
    r"\b(?:error|errors|exception|fatal|panic|traceback|critical|segmentation fault|"
    r"out of memory|permission denied|no such file|not found|does not exist|cannot|can't|failed)\b",
    re.I,
)
_ROUTINE_LEVEL = re.compile(r"^\W{0,3}(?:\S+\s+){0,3}?\W?(?:INFO|DEBUG|TRACE|NOTICE)\b\W")
"""A routine log line (``INFO:``, ``2026-01-01 12:00:00 [INFO]``, ``level=INFO``): never a cause."""
MAX_LINE = 300


def is_error_line(line: str) -> bool:
    """A traceback's last line or a line that says what went wrong, and not a routine log line."""
    text = line.strip()
    if not text or _ROUTINE_LEVEL.search(text) or re.search(r"\blevel=(?:info|debug)\b", text, re.I):
        return False
    return bool(_EXCEPTION_LINE.match(text) or _ERROR_WORDS.search(text))


def error_line(output_tail: str) -> str | None:
    """The last line of ``output_tail`` if it is an error line (cut to MAX_LINE), else None."""
    lines = [line.strip() for line in output_tail.splitlines() if line.strip()]
    if not lines or not is_error_line(lines[-1]):
        return None
    return lines[-1][-MAX_LINE:]
