"""The config models' common ground: durations ("250ms", "5m", "7d") and the strict base model."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def parse_duration(value: object) -> float:
    """Seconds from ``"30s"``, ``"5m"``, ``"250ms"``, ``"1h"``, ``"2d"`` or a plain number."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30s', '5m', '250ms' or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ValueError(
                f"{value!r} is not a duration; use a number with a unit: '250ms', '30s', '5m', '1h', '2d'"
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    else:
        raise ValueError("expected a duration like '30s', '5m', '250ms' or a number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT])?(?:i?B)?\s*$", re.I)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: object) -> int:
    """Bytes from ``"512M"``, ``"2G"``, ``"64MiB"`` or a plain number (binary multiples, like systemd)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE_RE.match(value)):
        size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").upper()]
    else:
        raise ValueError(f"{value!r} is not a size; use a number with a unit: '64M', '512M', '2G' (or bytes)")
    if size <= 0:
        raise ValueError("a size must be greater than 0")
    return size


def format_size(size: int) -> str:
    """``512M`` for 536870912: the way the limit was most likely written."""
    for unit in ("T", "G", "M", "K"):
        if size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return str(size)


Size = Annotated[int, BeforeValidator(parse_size)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)
