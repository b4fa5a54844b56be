"""Events -> rows: the record's writes, decided on the event loop without I/O.

Why a separate, synchronous object: the bus delivers events on the event loop, the database
lives in a writer thread. The ``Recorder`` turns each event into SQL operations (cheap: a probe
is a dict update), the service hands batches of them to the thread. Keeping the bookkeeping here
(open intervals, recovery attempts waiting for their verdict, per-minute probe rollups) makes it
testable without a database or a loop.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mcp_supervisor.event_text import duration
from mcp_supervisor.events import Event
from mcp_supervisor.history.metrics import DOWN_STATES, UP_STATES
from mcp_supervisor.logging import REDACTOR

Op = tuple[str, tuple[Any, ...]]

MAX_DETAIL = 2000
"""Characters of detail text kept per event: enough for an error message, never a whole log."""
_SKIP_EVENT_KINDS = frozenset({"probe", "lagged"})


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class _ProbeBucket:
    count: int = 0
    failures: int = 0
    classes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


def describe(event: Event, data: dict[str, Any]) -> tuple[str | None, str | None, str]:
    """(from_state, to_state, detail) for the ``history`` table a person reads."""
    kind = event.kind
    if kind == "state":
        reason = data.get("reason") or ""
        cls = data.get("failure_class")
        return data.get("old"), data.get("new"), f"{reason} ({cls})" if cls and cls not in reason else reason
    if kind == "action":
        return None, None, f"{data.get('rung')} attempt {data.get('attempt')}"
    if kind == "action_done":
        verdict = "ok" if data.get("ok") else "failed"
        return None, None, f"{data.get('rung')} attempt {data.get('attempt')} {verdict} in " \
                           f"{duration(data.get('duration', 0))}: {data.get('detail') or ''}".rstrip(": ")
    if kind == "notify":
        return None, None, f"{data.get('notify')}: {data.get('detail') or ''}".rstrip(": ")
    if kind == "process_exit":
        text = data.get("exit")  # "killed by SIGKILL", "killed by the kernel: out of memory (limit 64M)"
        return None, None, f"process {text}" if text else f"process exited with {data.get('returncode')}"
    if kind == "container":
        return None, None, f"container {data.get('action')}"
    if kind == "command":
        return None, None, str(data.get("command"))
    if kind == "run":
        code = data.get("exit_code")
        tail = f" exit {code}" if code is not None else ""
        return None, None, f"run {data.get('run_id')} {data.get('event')}{tail}: {data.get('command') or ''}".rstrip(": ")
    if kind == "report":
        report = data.get("report") or {}
        return None, None, f"{data.get('period')} report: {report.get('health')}" if isinstance(report, dict) else ""
    if kind == "backup":
        files = data.get("files") or []
        return None, None, f"snapshot {data.get('snapshot')}: {len(files)} file(s), safe={data.get('safe')}"
    if kind == "restore":
        return None, None, f"config {data.get('config')} restored from {data.get('snapshot')}"
    if kind == "alert":
        return None, None, f"not sent ({data.get('event')} by {data.get('silence')}): {data.get('detail') or ''}"
    if kind in ("silence", "maintenance"):
        until = data.get("until", data.get("ends_at"))
        when = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(until, int | float) else "?"
        reason = f": {data.get('reason')}" if data.get("reason") else ""
        return None, None, f"{data.get('kind', kind)} {data.get('id')} {data.get('event')} (until {when}){reason}"
    compact = {k: v for k, v in data.items() if k not in ("server",) and not isinstance(v, dict | list)}
    return None, None, " ".join(f"{k}={v}" for k, v in compact.items())


class Recorder:
    """Keeps what must span events (open intervals, pending attempts, probe minutes)."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self._since: dict[str, float] = {}
        """When each open interval began: an older state event (queued while a sync ran) is stale."""
        self._pending: dict[str, tuple[str, int | None, float, bool, str]] = {}
        """server -> (rung, attempt, started, action_ok, detail): an attempt awaiting its verdict."""
        self._probes: dict[tuple[str, int], _ProbeBucket] = {}
        self.ops: list[Op] = []

    # --- intervals -----------------------------------------------------------------------------

    def open_interval(self, server: str, state: str, at: float, reason: str = "",
                      failure_class: str | None = None) -> None:
        self.ops.append(("UPDATE intervals SET ended = ? WHERE server = ? AND ended IS NULL", (at, server)))
        self.ops.append(("INSERT INTO intervals (server, state, began, failure_class, reason) VALUES (?, ?, ?, ?, ?)",
                         (server, state, at, failure_class, reason[:MAX_DETAIL])))
        self.states[server] = state
        self._since[server] = at

    def close_interval(self, server: str, at: float) -> None:
        self.ops.append(("UPDATE intervals SET ended = ? WHERE server = ? AND ended IS NULL", (at, server)))
        self.states.pop(server, None)
        self._since.pop(server, None)
        self._pending.pop(server, None)

    def sync(self, live: dict[str, str], at: float, reason: str) -> list[str]:
        """Make the open intervals match the supervisor's live states (start, reload, after a lag)."""
        changed = []
        for server in sorted(set(self.states) - set(live)):
            self.close_interval(server, at)
            changed.append(server)
        for server, state in sorted(live.items()):
            if self.states.get(server) != state:
                self.open_interval(server, state, at, reason)
                changed.append(server)
        return changed

    # --- events --------------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if event.kind == "probe":
            self._on_probe(event)
            return
        data = REDACTOR.scrub(dict(event.data))
        if event.kind == "state" and event.server:
            self._on_state(event, data)
        elif event.kind == "action" and event.server:
            self._settle(event.server, event.at, ok=False, why="superseded by another attempt")
            self._pending[event.server] = (str(data.get("rung")), _int(data.get("attempt")), event.at, False, "")
        elif event.kind == "action_done" and event.server:
            pending = self._pending.get(event.server)
            if pending is not None:
                detail = str(data.get("detail") or "")[:MAX_DETAIL]
                if data.get("ok"):
                    self._pending[event.server] = (pending[0], pending[1], pending[2], True, detail)
                else:
                    self._pending[event.server] = (pending[0], pending[1], pending[2], False, detail)
                    self._settle(event.server, event.at, ok=False, why=detail)
        elif event.kind == "config" and data.get("event") == "reloaded":
            for server in data.get("removed") or []:
                if isinstance(server, str):
                    self.close_interval(server, event.at)
        elif event.kind == "run":
            self._on_run(event, data)
        elif event.kind == "maintenance" and event.server and data.get("event") == "started":
            # after the pause it causes: the window's time is maintenance, never downtime
            self.open_interval(event.server, "maintenance", event.at, str(data.get("reason") or "maintenance"))
        if event.kind not in _SKIP_EVENT_KINDS:
            self._log_event(event, data)

    def _log_event(self, event: Event, data: dict[str, Any]) -> None:
        from_state, to_state, detail = describe(event, data)
        if event.kind in ("report", "run"):
            data = {k: v for k, v in data.items() if k != "report"}  # the report itself is not history
        blob = json.dumps(data, default=str, separators=(",", ":"))
        if len(blob) > 8 * MAX_DETAIL:
            blob = json.dumps({"truncated": True})
        self.ops.append((
            "INSERT INTO events (at, server, kind, from_state, to_state, detail, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.at, event.server, event.kind, from_state, to_state, (detail or "")[:MAX_DETAIL], blob),
        ))

    def _on_state(self, event: Event, data: dict[str, Any]) -> None:
        assert event.server is not None
        new = str(data.get("new"))
        cls = data.get("failure_class") if new in DOWN_STATES else None
        if event.at >= self._since.get(event.server, float("-inf")):
            self.open_interval(event.server, new, event.at, str(data.get("reason") or ""), cls)
        if event.server in self._pending and self._pending[event.server][3]:
            if new in UP_STATES:
                self._settle(event.server, event.at, ok=True, why="")
            elif new in ("backoff", "needs_human", "fallback", "failed"):
                self._settle(event.server, event.at, ok=False, why=str(data.get("reason") or ""))
        if new == "paused":
            self._pending.pop(event.server, None)

    def _settle(self, server: str, at: float, ok: bool, why: str) -> None:
        pending = self._pending.pop(server, None)
        if pending is None:
            return
        rung, attempt, started, _, detail = pending
        self.ops.append((
            "INSERT INTO attempts (server, rung, attempt, started, ended, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (server, rung, attempt, started, at, "ok" if ok else "failed", (detail or why)[:MAX_DETAIL]),
        ))

    def _on_run(self, event: Event, data: dict[str, Any]) -> None:
        run_id = str(data.get("run_id") or "")
        if not run_id:
            return
        if data.get("event") == "started":
            self.ops.append((
                "INSERT INTO runs (run_id, command, started) VALUES (?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET command = excluded.command, started = excluded.started",
                (run_id, str(data.get("command") or "")[:MAX_DETAIL], event.at),
            ))
        elif data.get("event") == "finished":
            report = data.get("report")
            self.ops.append((
                "INSERT INTO runs (run_id, command, finished, exit_code, report) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET finished = excluded.finished, exit_code = excluded.exit_code, "
                "report = excluded.report",
                (run_id, str(data.get("command") or "")[:MAX_DETAIL], event.at, _int(data.get("exit_code")),
                 json.dumps(report, default=str) if isinstance(report, dict) else None),
            ))

    # --- probes --------------------------------------------------------------------------------

    def _on_probe(self, event: Event) -> None:
        if not event.server or event.data.get("void"):
            return  # a void check (the daemon's loop was late) says nothing about the server
        bucket = self._probes.get((event.server, int(event.at // 60)))
        if bucket is None:
            bucket = self._probes[(event.server, int(event.at // 60))] = _ProbeBucket()
        bucket.count += 1
        data = event.data
        if not data.get("ok"):
            bucket.failures += 1
            bucket.classes[str(data.get("failure_class") or "unknown")] += 1
        latency = data.get("latency_ms")
        if isinstance(latency, int | float):
            bucket.latencies.append(float(latency))

    def flush_probes(self, before: float | None = None) -> None:
        """Write the probe minutes that ended before ``before`` (all of them when None)."""
        limit = None if before is None else int(before // 60)
        for key in [k for k in self._probes if limit is None or k[1] < limit]:
            bucket = self._probes.pop(key)
            lat = sorted(bucket.latencies)
            classes = json.dumps(dict(bucket.classes), separators=(",", ":")) if bucket.classes else None
            self.ops.append((
                "INSERT INTO probes (server, bucket, span, count, failures, classes, p50, p95, max) "
                "VALUES (?, ?, 60, ?, ?, ?, ?, ?, ?) ON CONFLICT (server, bucket, span) DO UPDATE SET "
                "count = count + excluded.count, failures = failures + excluded.failures, "
                "classes = coalesce(excluded.classes, classes), p50 = excluded.p50, "
                "p95 = max(coalesce(p95, 0), coalesce(excluded.p95, 0)), max = max(coalesce(max, 0), coalesce(excluded.max, 0))",
                (key[0], key[1] * 60, bucket.count, bucket.failures, classes,
                 _percentile(lat, 0.5), _percentile(lat, 0.95), lat[-1] if lat else None),
            ))

    def take(self) -> list[Op]:
        ops, self.ops = self.ops, []
        return ops


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
