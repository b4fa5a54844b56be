"""What may be shown about a server's OAuth token: its kind and times, never the token.

Why its own module (standard library only, unlike ``tokens.py``, which needs the config): the
status table, the dashboard and the page all show it, and ``supervisorctl-mcp status`` must not pay
pydantic's import for a few dictionary reads.
"""

from __future__ import annotations

from collections.abc import Mapping


def _when(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


def _word(value: object) -> str | None:
    return value[:64] if isinstance(value, str) and value.replace("_", "").replace("-", "").isalnum() else None


def auth_facts(entry: object) -> dict[str, object] | None:
    """``status``'s ``auth`` entry reduced to what the table, the dashboard and the page show.

    Why a whitelist of keys, each of a known kind (a time, a word): whatever the token owner adds to
    its status entry later, nothing but these facts can reach a screen, so a token never can.
    Tolerant of both spellings the owners have used (``obtained_at``/``last_refresh``,
    ``next_refresh_at``/``next_refresh``); a key that is absent is None (shown as unknown)."""
    if not isinstance(entry, Mapping):
        return None

    def pick(*names: str) -> object:
        return next((entry[n] for n in names if entry.get(n) is not None), None)

    problem = pick("problem")
    return {
        "type": _word(pick("type")) or "oauth",
        "grant": _word(pick("grant")),
        "expires_at": _when(pick("expires_at")),
        "last_refresh": _when(pick("last_refresh", "last_refresh_at", "obtained_at")),
        "next_refresh": _when(pick("next_refresh", "next_refresh_at")),
        "refresh_expires_at": _when(pick("refresh_expires_at")),
        "problem": problem if isinstance(problem, str) else None,
    }
