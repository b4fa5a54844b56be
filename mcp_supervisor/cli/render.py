"""Turning API answers into text for people; pure functions, plus one rich table.

Why no rich here: ``supervisorctl-mcp ready`` and ``status`` run in scripts on every job start and
must not pay rich's import time; the status table is plain text with optional ANSI colour.

Why server text is never handed to a markup parser: names, messages and reasons come from servers
(a stderr tail, an exception text). Read as rich console markup, ``[/INFO]`` raised MarkupError
(status exited 1, which a job reads as "not ready") and ``[crashed]`` silently vanished.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from mcp_supervisor.event_text import one_line as one_line  # the one flattener; imported from here too

_STATE_STYLES = {
    "healthy": "green",
    "degraded": "yellow",
    "rate_limited": "yellow",
    "drifted": "bold magenta",
    "starting": "cyan",
    "recovering": "yellow",
    "backoff": "yellow",
    "fallback": "magenta",
    "failed": "bold red",
    "needs_human": "bold red",
    "paused": "dim",
}


def relative(at: float | None, now: float | None = None) -> str:
    """``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``; ``-`` when unknown."""
    if at is None:
        return "-"
    now = time.time() if now is None else now
    seconds = max(0.0, now - at)
    if seconds < 60:
        return f"{int(seconds)}s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"


def latency(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms >= 1000:
        return f"{ms / 1000:.1f} s"
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def maintenance_text(server: dict[str, Any]) -> str:
    """'maintenance until 14:30: renewing certs' for a server in a maintenance window, else ''."""
    window = server.get("maintenance")
    if not isinstance(window, dict):
        return ""
    from datetime import datetime

    until = window.get("until")
    when = datetime.fromtimestamp(until).strftime("%H:%M") if isinstance(until, int | float) else "?"
    reason = f": {window.get('reason')}" if window.get("reason") else ""
    return f"maintenance until {when}{reason}"


def server_message(server: dict[str, Any]) -> str:
    if server.get("maintenance"):
        return one_line(maintenance_text(server))
    parts = []
    if server.get("failure_class"):
        parts.append(f"[{server['failure_class']}]")
    message = server.get("message") or ""
    if not message and server.get("state") not in ("healthy", "degraded", "rate_limited"):
        message = server.get("reason") or ""
    auth = auth_text(server["auth"]) if isinstance(server.get("auth"), dict) else ""
    if auth:  # first, and on top of the message's 80 characters: a long message must not cut it off
        parts.append(auth)
    if message:
        parts.append(message)
    return one_line(" ".join(parts), 80 + len(auth))


def _clock(at: float, now: float) -> str:
    """``09:04:10`` today, ``Dec 09 09:04`` on another day."""
    from datetime import datetime

    moment = datetime.fromtimestamp(at)
    same_day = moment.date() == datetime.fromtimestamp(now).date()
    return moment.strftime("%H:%M:%S") if same_day else moment.strftime("%b %d %H:%M")


def auth_text(auth: dict[str, Any], now: float | None = None) -> str:
    """``(oauth token until 09:04:10, next 09:03:20, refreshed 08:56:10, refresh token until Dec 09 09:00,
    grant client_credentials)``, most wanted first: what is known about the token, never the token
    (``auth_facts``)."""
    from mcp_supervisor.health.auth_view import auth_facts

    facts = auth_facts(auth) or {}
    now = time.time() if now is None else now
    expires, last, upcoming, refresh_end = (facts.get(k) for k in ("expires_at", "last_refresh", "next_refresh",
                                                                    "refresh_expires_at"))
    parts = [f"token until {_clock(expires, now)}" if isinstance(expires, float) else "no token"]
    if isinstance(upcoming, float):
        parts.append(f"next {_clock(upcoming, now)}")
    if isinstance(last, float):
        parts.append(f"refreshed {_clock(last, now)}")
    if isinstance(refresh_end, float):
        parts.append(f"refresh token until {_clock(refresh_end, now)}")
    if facts.get("grant"):
        parts.append(f"grant {facts['grant']}")
    return f"({facts.get('type', 'oauth')} {', '.join(parts)})"


def defaults_lines(effective: dict[str, Any]) -> list[str]:
    """``check-config``: per ``[defaults]`` key its value, the servers taking it and those with their own."""
    lines = []
    for key, entry in effective.items():
        servers = entry.get("servers", {})
        taking = [name for name, v in servers.items() if v.get("from") == "defaults"]
        own = [f"{name} = {json.dumps(v.get('value'))}" for name, v in servers.items() if v.get("from") == "server"]
        unused = [name for name, v in servers.items() if v.get("from") == "n/a"]
        line = f"[defaults] {key} = {json.dumps(entry.get('default'))}: " + (", ".join(taking) or "no server")
        if own:
            line += f"; own value: {', '.join(own)}"
        if unused:
            line += f"; does not apply to: {', '.join(unused)}"
        lines.append(line)
    return lines


def status_rows(status: dict[str, Any], now: float | None = None) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for server in status.get("servers", []):
        name = str(server.get("name", "?"))
        if server.get("critical") is False:
            name += " (optional)"
        rows.append(
            (
                name,
                "maintenance" if server.get("maintenance") else str(server.get("state", "?")),
                relative(server.get("since"), now),
                latency(server.get("latency_ms")),
                server_message(server),
            )
        )
    return rows


def wants_colour(stream: Any) -> bool:
    """Colour for a terminal only, as https://no-color.org asks (``FORCE_COLOR`` forces it)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return os.environ.get("TERM") != "dumb" and bool(getattr(stream, "isatty", lambda: False)())


_ANSI = {"green": "32", "bold green": "1;32", "yellow": "33", "cyan": "36", "magenta": "35", "red": "31",
         "bold red": "1;31", "dim": "2"}


def paint(text: str, style: str, colour: bool = True) -> str:
    """``text`` in ``style`` as ANSI codes when ``colour``; server text is never read as markup."""
    code = _ANSI.get(style)
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code else text


def status_table(status: dict[str, Any], colour: bool = False) -> str:
    """The ``supervisorctl-mcp status`` table as plain text (ANSI colour on the state when asked).

    Why not rich: its import alone cost more than the rest of the command (issue 16: status within
    a bare interpreter + 30 ms). Server text is never interpreted: ``[/INFO]`` prints as is.
    """
    header = ("server", "state", "since", "latency", "message")
    rows = status_rows(status)
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(4)]
    title = paint("ready", "green", colour) if status.get("ready") else paint("NOT READY", "bold red", colour)
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + "  message"]
    for name, state, since, lat, message in rows:
        cells = [name.ljust(widths[0]), paint(state, _STATE_STYLES.get(state, ""), colour) + " " * (widths[1] - len(state)),
                 since.ljust(widths[2]), lat.ljust(widths[3])]
        lines.append(("  ".join(cells) + "  " + message).rstrip())
    return "\n".join(lines)


def ready_line(answer: dict[str, Any]) -> str:
    """The one-line verdict for ``supervisorctl-mcp ready``."""
    fallback = answer.get("fallback") or []
    if answer.get("ready"):
        line = "ready"
        if fallback:
            line += f" (in fallback: {', '.join(str(n) for n in fallback)})"
        for item in answer.get("rate_limited") or []:  # up, so ready; but calls may wait
            line += f"; warning: {item.get('name')} is {one_line(str(item.get('reason') or 'rate limited'), 80)}"
        return line
    if answer.get("daemon") == "stopping":
        return "not ready: daemon stopping"
    reasons = []
    for item in answer.get("not_ready", []):
        reason = one_line(str(item.get("reason") or ""), 60)
        if item.get("name") == "*":  # the daemon as a whole (starting, no servers)
            reasons.append(reason or str(item.get("state")))
            continue
        state = str(item.get("state"))
        reasons.append(f"{item.get('name')} is {state}" + (f" ({reason})" if reason and reason != state else ""))
    return "not ready: " + ("; ".join(reasons) if reasons else "no answer")


def event_line(event: dict[str, Any]) -> str:
    """``12:03:04 restart 2 of alpha done in 11 ms after a 0.9 s backoff`` for ``supervisorctl-mcp events``."""
    from mcp_supervisor.event_text import clock, sentence

    return f"{clock(event)} {sentence(event)}"


def action_line(verb: str, answer: dict[str, Any]) -> str:
    """A short confirmation for probe/recover/pause/resume/emergency/reload."""
    if verb == "probe":
        result = answer.get("result") or {}
        ok = result.get("ok")
        message = one_line(result.get("message") or "")
        lat = latency(result.get("latency_ms"))
        verdict = "ok" if ok else f"failed ({result.get('failure_class') or result.get('failure') or '?'})"
        return f"probe {answer.get('name')}: {verdict}, {lat}, state {answer.get('state')}" + (
            f": {message}" if message and not ok else ""
        )
    if verb == "reload":
        if not answer.get("ok", True):
            return f"reload rejected; the old config keeps running:\n{answer.get('error', '')}"
        changes = [f"{k} {', '.join(answer[k])}" for k in ("added", "removed", "changed") if answer.get(k)]
        return "reloaded" + (f": {'; '.join(changes)}" if changes else " (no changes)")
    servers = answer.get("servers") or []
    names = [s.get("name") if isinstance(s, dict) else str(s) for s in servers]
    return f"{verb}: accepted for {', '.join(str(n) for n in names) or 'all servers'}"
