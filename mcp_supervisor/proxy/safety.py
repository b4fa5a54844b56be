"""Which calls the proxy may send a second time after a backend restart (pure).

Why this rule: everything but ``tools/call`` only reads or sets session state that the proxy
restores anyway, so it is safe to repeat; a tool call is safe only when the server says so
(``readOnlyHint`` or ``idempotentHint``) or the operator does (``retry_tools`` patterns). A call
that is not safe and may have reached the server is never repeated: a duplicate payment or
e-mail is worse than an honest error.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ToolSafety:
    """What one server's tools allow, learned from ``tools/list`` answers that pass the proxy."""

    retry_patterns: tuple[str, ...] = ()
    annotated_safe: dict[str, bool] = field(default_factory=dict)

    def learn(self, result: Mapping[str, Any]) -> None:
        """Record each listed tool's hints (a later list of the same tool overrides)."""
        tools = result.get("tools")
        if not isinstance(tools, list):
            return
        for tool in tools:
            if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
                continue
            hints = tool.get("annotations")
            safe = False
            if isinstance(hints, Mapping):
                safe = hints.get("readOnlyHint") is True or hints.get("idempotentHint") is True
            self.annotated_safe[tool["name"]] = safe

    @property
    def known(self) -> bool:
        return bool(self.annotated_safe)

    def tool_is_safe(self, name: str) -> bool:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.retry_patterns):
            return True
        return self.annotated_safe.get(name, False)

    def request_is_safe(self, method: str, params: Any) -> bool:
        if method != "tools/call":
            return True
        name = params.get("name") if isinstance(params, Mapping) else None
        return isinstance(name, str) and self.tool_is_safe(name)


def patterns(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(v for v in values if v)
