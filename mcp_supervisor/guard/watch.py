"""Following the daemon's events during a guarded run, in a thread.

Why a thread with the stdlib client: the guardian's main thread is busy waiting for the job (and
handling signals); the user's ``with guarded_run()`` block may not run an event loop at all.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from mcp_supervisor import sse
from mcp_supervisor.api.client import ClientError, SupervisorClient
from mcp_supervisor.api.wire import BadResponse, Response, connect, send
from mcp_supervisor.guard.timeline import GOOD_STATES, NO_RESTART_CLASSES, RECOVERABLE_STATES

KEPT_KINDS = frozenset({"state", "action", "action_done", "process_exit", "notify", "command", "daemon", "lagged",
                        "config", "restore", "backup", "proxy"})
"""Event kinds the run keeps (in memory, for the report); everything else is only looked at."""
STREAM_SILENCE = 60.0
"""The daemon sends an SSE heartbeat every 15 s; this much silence means it is gone or wedged."""


class EventWatcher(threading.Thread):
    """Follows ``/v1/events`` during the run, keeps every event, and asks the daemon to recover a
    required server the moment it fails (once per incident). A daemon that goes away is noted
    (``guardian`` event ``daemon_lost``), retried, and its return noted with the states it shows
    then (so an incident that began or ended while nobody watched is still closed or opened)."""

    def __init__(self, socket_path: Path, required: list[str], states: dict[str, str]) -> None:
        super().__init__(name="guardian-events", daemon=True)
        self.socket_path = socket_path
        self.required = set(required)
        self.events: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self._states = dict(states)
        self._asked: set[str] = set()
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._sock: socket.socket | None = None
        self._lost = False

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def stop(self) -> None:
        self._stop_event.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.join(timeout=5.0)

    def _record(self, event: dict[str, Any]) -> None:
        event.setdefault("at", time.time())
        with self._lock:
            self.events.append(event)

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self._follow()
            except (OSError, ClientError, ValueError, BadResponse):
                pass
            if self._stop_event.is_set():
                return
            if not self._lost:
                self._lost = True
                self._record({"kind": "guardian", "event": "daemon_lost"})
            self._stop_event.wait(0.5)

    def _follow(self) -> None:
        sock = connect(str(self.socket_path), STREAM_SILENCE)
        response: Response | None = None
        try:
            self._sock = sock
            if self._stop_event.is_set():
                return
            send(sock, "GET", "/v1/events", None, {"Accept": "text/event-stream"})
            response = Response(sock)
            if response.status != 200:
                return
            if self._lost:
                self._came_back()
            self.connected.set()
            for message in sse.parse(response.chunks()):  # stop() shuts the socket: the stream ends
                if self._stop_event.is_set():
                    return
                try:
                    event = json.loads(message.data)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    self._on_event(event)
        finally:
            self._sock = None
            if response is not None:
                response.close()
            sock.close()

    def _came_back(self) -> None:
        """The daemon answers again: note it, and what changed while nobody watched."""
        self._lost = False
        self._record({"kind": "guardian", "event": "daemon_back"})
        try:
            self.reconcile(SupervisorClient(self.socket_path, timeout=5.0).status())
        except ClientError:
            pass

    def reconcile(self, status: dict[str, Any]) -> None:
        """State changes the stream did not deliver (the daemon was away, or the job ended while
        the last events were in flight), as state events at the server's ``since`` time."""
        for server in status.get("servers", []):
            name, state = server.get("name"), server.get("state")
            if isinstance(name, str) and isinstance(state, str) and self._states.get(name, state) != state:
                since = server.get("since")
                self._on_event({"kind": "state", "server": name, "at": since if isinstance(since, int | float)
                                else time.time(), "old": self._states.get(name), "new": state,
                                "reason": server.get("reason") or "", "failure_class": server.get("failure_class"),
                                "synthetic": True}, act=False)

    def _on_event(self, event: dict[str, Any], act: bool = True) -> None:
        if event.get("kind") not in KEPT_KINDS:
            return  # probe results arrive many times a second; the report needs the transitions
        self._record(event)
        if event.get("kind") != "state" or not isinstance(event.get("server"), str):
            return
        name, new = event["server"], str(event.get("new"))
        self._states[name] = new
        if new in GOOD_STATES:
            self._asked.discard(name)
            return
        if (
            act
            and name in self.required
            and name not in self._asked
            and new in RECOVERABLE_STATES
            and event.get("failure_class") not in NO_RESTART_CLASSES
        ):
            self._asked.add(name)
            try:
                SupervisorClient(self.socket_path, timeout=10.0).recover(name)
            except ClientError:
                return
            self._record({"kind": "guardian", "event": "recover_requested", "server": name})
