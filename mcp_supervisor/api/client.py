"""A small synchronous client for the control socket, for the CLI and for user jobs: transport only.

Why stdlib only: the CLI must answer ``ready`` close to a bare interpreter's start-up, and a job
that only asks "are MCPs ready?" should not pay for importing aiohttp, pydantic, rich or asyncio.
The bytes on the socket are ``api/wire.py``; the event stream's format is ``mcp_supervisor/sse.py``.
The guarded run for a Python job (``guarded_run``, ``NotReady``) is ``mcp_supervisor.guard``.

    from mcp_supervisor.api.client import wait_ready
    if not wait_ready(timeout=60):
        raise SystemExit("MCP servers are not ready")
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from mcp_supervisor import sse
from mcp_supervisor.api.wire import BadResponse, Response, connect, send

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing costs the CLI a few ms
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

DEFAULT_TIMEOUT = 10.0
"""Seconds for one request/response, on top of any long-poll wait the caller asked for."""


class ClientError(Exception):
    """Base class for everything this client raises."""


class DaemonUnreachable(ClientError):
    """Nothing answers on the socket: the daemon is not running, or the path is wrong."""

    def __init__(self, socket_path: Path | str, reason: str) -> None:
        self.socket_path = Path(socket_path)
        self.reason = reason
        super().__init__(
            f"cannot reach the supervisor at {self.socket_path}: {reason} (is mcp-supervisor running? "
            "choose the socket with --socket or MCP_SUPERVISOR_SOCKET)"
        )


class ApiError(ClientError):
    """The daemon answered with an error: HTTP ``status``, machine ``code``, human ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{message} ({status} {code})")


def default_socket_path(config: str | Path | None = None) -> Path:
    """``MCP_SUPERVISOR_SOCKET``, else the config's ``[supervisor] socket``, else the default.

    The config (and pydantic with it) is only imported when the environment does not decide.
    """
    env = os.environ.get("MCP_SUPERVISOR_SOCKET")
    if env:
        return Path(os.path.expanduser(env))
    from mcp_supervisor.config import ConfigError, find_config, load_config, resolve_socket_path

    path = find_config(config)
    loaded = None
    if path is not None:
        try:
            loaded = load_config(path)
        except ConfigError:
            if config is not None:
                raise
    return resolve_socket_path(None, loaded)


class SupervisorClient:
    """One short connection per call; thread-safe because it holds no connection between calls."""

    def __init__(self, socket_path: Path | str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = Path(socket_path) if socket_path is not None else default_socket_path()
        self.timeout = timeout

    # --- plumbing ---------------------------------------------------------------------------

    def _connect(self, timeout: float | None) -> socket.socket:
        """Connected socket; DaemonUnreachable when nothing listens (or the path is wrong)."""
        try:
            return connect(str(self.socket_path), timeout)
        except TimeoutError:
            raise DaemonUnreachable(self.socket_path, "no answer in time") from None
        except OSError as exc:
            raise DaemonUnreachable(self.socket_path, exc.strerror or str(exc) or type(exc).__name__) from None

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON body). Raises DaemonUnreachable, or ApiError for a status not in ``ok``."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn = self._connect(self.timeout if timeout is None else timeout)
        response: Response | None = None
        try:
            try:
                send(conn, method, path, payload, headers)
            except TimeoutError:
                raise DaemonUnreachable(self.socket_path, "no answer in time") from None
            except OSError as exc:
                raise DaemonUnreachable(self.socket_path, exc.strerror or str(exc) or type(exc).__name__) from None
            try:
                response = Response(conn)
                raw = response.read()
            except TimeoutError:
                raise DaemonUnreachable(self.socket_path, "no answer in time") from None
            except (OSError, BadResponse) as exc:
                raise DaemonUnreachable(self.socket_path, f"connection broken: {exc}") from None
        finally:
            if response is not None:
                response.close()
            conn.close()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            raise ApiError(response.status, "bad_response", f"the daemon sent non-JSON: {raw[:200]!r}") from None
        if response.status not in ok:
            error = data.get("error") if isinstance(data, dict) else None
            if isinstance(error, dict):
                raise ApiError(response.status, str(error.get("code", "error")), str(error.get("message", "")))
            raise ApiError(response.status, "http_error", f"HTTP {response.status} {response.reason}")
        if not isinstance(data, dict):
            raise ApiError(response.status, "bad_response", "the daemon sent a JSON value that is not an object")
        return response.status, data

    # --- the API ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/v1/health")[1]

    def status(self) -> dict[str, Any]:
        """``{"ready": bool, "servers": [{"name", "state", "since", ...}], ...}``"""
        return self.request("GET", "/v1/status")[1]

    def ready(self, servers: list[str] | None = None, wait: float | None = None) -> dict[str, Any]:
        """``{"ready", "not_ready": [{"name", "state", "reason"}], "fallback"}``; waits up to
        ``wait`` seconds for readiness (the daemon caps this at 300)."""
        query: dict[str, str] = {}
        if servers:
            query["servers"] = ",".join(servers)
        if wait:
            query["wait"] = f"{wait:g}"
        if query:
            from urllib.parse import urlencode

            path = "/v1/ready?" + urlencode(query)
        else:
            path = "/v1/ready"
        return self.request("GET", path, timeout=self.timeout + (wait or 0.0), ok=(200, 503))[1]

    def ready_within(self, timeout: float, servers: list[str] | None = None) -> dict[str, Any]:
        """Like ``ready(wait=timeout)``, but a daemon that is not listening yet (still starting,
        restarting) is retried until the deadline; DaemonUnreachable only if it never answers."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            remaining = deadline - time.monotonic()
            try:
                answer = self.ready(servers, wait=max(0.0, min(remaining, 300.0)))
            except DaemonUnreachable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
                continue
            # a stopping daemon's "no" is final: the job hears it now, not at its deadline
            if answer.get("ready") or answer.get("daemon") == "stopping" or time.monotonic() >= deadline - 0.001:
                return answer

    def _server_action(self, name: str, action: str) -> dict[str, Any]:
        from urllib.parse import quote

        return self.request("POST", f"/v1/servers/{quote(name, safe='')}/{action}", body={}, timeout=self.timeout + 60)[1]

    def probe(self, name: str) -> dict[str, Any]:
        return self._server_action(name, "probe")

    def recover(self, name: str) -> dict[str, Any]:
        return self._server_action(name, "recover")

    def pause(self, name: str) -> dict[str, Any]:
        return self._server_action(name, "pause")

    def resume(self, name: str) -> dict[str, Any]:
        return self._server_action(name, "resume")

    def emergency(self, name: str | None = None) -> dict[str, Any]:
        body = {"server": name} if name else {}
        return self.request("POST", "/v1/emergency", body=body, timeout=self.timeout + 60)[1]

    def reload(self) -> dict[str, Any]:
        """``{"ok": bool, ...}``; an invalid config comes back as ok=false with the error text."""
        return self.request("POST", "/v1/reload", body={}, timeout=self.timeout + 60, ok=(200, 422))[1]

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Every event the daemon publishes, as dicts, until the connection closes.

        ``timeout`` bounds the silence between two lines (the daemon sends a heartbeat every
        15 s); None waits forever.
        """
        conn = self._connect(timeout)
        response: Response | None = None
        try:
            try:
                send(conn, "GET", "/v1/events", None, {"Accept": "text/event-stream"})
                response = Response(conn)
            except (OSError, BadResponse) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
                raise DaemonUnreachable(self.socket_path, reason) from None
            if response.status != 200:
                raw = response.read()
                try:
                    error = json.loads(raw).get("error", {})
                except (ValueError, AttributeError):
                    error = {}
                raise ApiError(response.status, str(error.get("code", "http_error")), str(error.get("message", "")))
            for message in sse.parse(response.chunks()):
                try:
                    event = json.loads(message.data)
                except ValueError:
                    event = {"kind": "unparsed", "data": message.data}
                if isinstance(event, dict):
                    yield event
        finally:
            if response is not None:
                response.close()
            conn.close()


def wait_ready(
    timeout: float = 60.0,
    servers: list[str] | None = None,
    socket: Path | str | None = None,
) -> bool:
    """True once the (critical, or the named) servers are ready; False if not within ``timeout``.

    A daemon that is still starting is waited for too; if it never answers in ``timeout`` this
    raises DaemonUnreachable, because "no supervisor" is a different problem from "not ready".
    ApiError (e.g. an unknown server name) is raised as is.
    """
    return bool(SupervisorClient(socket).ready_within(timeout, servers).get("ready"))
