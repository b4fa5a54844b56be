"""What of a guarded run may be shown and stored: its command line and texts, secrets masked.

Why the guard masks on its own and not only through the logs' redactor: the report travels (a
file in the caller's state dir, the daemon's SQLite record, Slack), and a job's argv is where
people put tokens (``--token X``, ``API_KEY=X``, ``https://user:pass@host``). Pure, and cheap to
import: a Python job's ``guarded_run`` loads it without pydantic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

MASK = "***"
SECRET_WORD = re.compile(r"(token|authorization|password|passwd|secret|api[_-]?key|cookie|credential)", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)


def redact_argv(argv: Sequence[str], secrets: Iterable[str] = ()) -> list[str]:
    """The command as it may be shown and stored: config secrets, ``--token X``, ``--token=X``,
    ``API_KEY=X`` and ``https://user:pass@host`` masked. Why here too and not only in logs: the
    report travels (file, SQLite record, Slack), and a job's argv is where people put tokens."""
    known = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(s) for s in known)) if known else None
    out: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next:
            out.append(MASK)
            mask_next = False
            continue
        text = pattern.sub(MASK, arg) if pattern is not None else arg
        text = _URL_USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
        if text.startswith("-") and SECRET_WORD.search(text.split("=", 1)[0]):
            if "=" in text:
                text = text.split("=", 1)[0] + "=" + MASK
            else:
                mask_next = True
        elif "=" in text and not text.startswith("-") and SECRET_WORD.search(text.split("=", 1)[0]):
            text = text.split("=", 1)[0] + "=" + MASK
        out.append(text)
    return out


def command_line(argv: Sequence[str]) -> str:
    import shlex

    return shlex.join(argv)


def scrubber(secrets: Iterable[str]) -> Callable[[str], str]:
    """A function masking ``secrets`` (4+ characters, longest first) and URL userinfo in a text."""
    known = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(s) for s in known)) if known else None

    def scrub(text: str) -> str:
        text = pattern.sub(MASK, text) if pattern is not None else text
        return _URL_USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)

    return scrub


def scrub_json(value: Any, scrub: Callable[[str], str]) -> Any:
    """``value`` with every string scrubbed and string values under secret-looking keys masked."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: MASK if SECRET_WORD.search(str(k)) and isinstance(v, str) and v else scrub_json(v, scrub)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_json(v, scrub) for v in value]
    return value
