"""The words of a grouped message ("12 servers down: Docker engine not answering; jira, gitlab, ...
(+9)"). Pure: no I/O, no clock reads; ``render.py`` calls these for the kind ``group``.

Why the cause first and every name in the body: the title is what a phone shows, so it says how
many and why; the body names every server (a person searching the channel for "jira" finds it),
with what is still down apart from what is back, and the few distinct things to do.
"""

from __future__ import annotations

from typing import Any

from mcp_supervisor.notify.causes import cause_text

TITLE_NAMES = 3
MAX_INSTRUCTIONS = 5


def _members(data: dict[str, Any]) -> list[dict[str, Any]]:
    members = data.get("members")
    return [m for m in members if isinstance(m, dict)] if isinstance(members, list) else []


def _names(members: list[dict[str, Any]], limit: int | None = None) -> str:
    names = [str(m.get("server") or "?") for m in members]
    if limit is None or len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... (+{len(names) - limit})"


def group_title(data: dict[str, Any], role: str, duration: Any) -> str:
    members = _members(data)
    firing = [m for m in members if m.get("resolved_at") is None]
    why = cause_text(str(data.get("headline") or data.get("cause") or ""))
    if role == "resolution" or not firing:
        took = f" after {duration(data.get('ttr_s'))}" if data.get("ttr_s") is not None else ""
        return f"{len(members)} servers back{took} ({why}): {_names(members, TITLE_NAMES)}"
    back = len(members) - len(firing)
    tail = f"; {back} back" if back else ""
    return f"{len(firing)} servers down: {why}; {_names(firing, TITLE_NAMES)}{tail}"


def group_body(data: dict[str, Any]) -> str:
    members = _members(data)
    firing = [m for m in members if m.get("resolved_at") is None]
    back = [m for m in members if m.get("resolved_at") is not None]
    lines = []
    if firing:
        lines.append(f"Down ({len(firing)}): {_names(firing)}")
    if back:
        lines.append(f"Back ({len(back)}): {_names(back)}")
    escalated = [m for m in firing if m.get("kind") in ("needs_human", "fallback", "flapping")]
    for m in escalated[:MAX_INSTRUCTIONS]:
        lines.append(f"{m.get('server')}: {str(m.get('kind')).replace('_', ' ')}")
    if data.get("repeat"):
        lines.append("Still down; repeated after repeat_interval.")
    return "\n".join(lines)


def group_instruction(data: dict[str, Any]) -> str:
    """The distinct things to do, at most a few (the same fix for 12 servers is said once)."""
    seen: list[str] = []
    for m in _members(data):
        todo = str(m.get("instruction") or "")
        if todo and m.get("resolved_at") is None and todo not in seen:
            seen.append(todo)
    if len(seen) > MAX_INSTRUCTIONS:
        seen = [*seen[:MAX_INSTRUCTIONS], f"(+{len(seen) - MAX_INSTRUCTIONS} more: supervisorctl-mcp status)"]
    return " / ".join(seen)
