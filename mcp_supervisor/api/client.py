"""A small synchronous client for the control socket, for the CLI and for user jobs.

Why stdlib only (http.client over AF_UNIX): the CLI must answer ``ready`` in well under 150 ms and
a job that only asks "are MCPs ready?" should not pay for importing aiohttp, pydantic or rich.

    from mcp_supervisor.api.client import wait_ready
    if not wait_ready(timeout=60):
        raise SystemExit("MCP servers are not ready")
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

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


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


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

    def _connect(self, timeout: float | None) -> _UnixHTTPConnection:
        return _UnixHTTPConnection(str(self.socket_path), timeout)

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
        conn = self._connect(self.timeout if timeout is None else timeout)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            try:
                conn.request(method, path, body=payload, headers=headers)
            except (FileNotFoundError, ConnectionRefusedError, PermissionError, NotADirectoryError) as exc:
                raise DaemonUnreachable(self.socket_path, exc.strerror or type(exc).__name__) from None
            except OSError as exc:
                raise DaemonUnreachable(self.socket_path, exc.strerror or str(exc) or type(exc).__name__) from None
            try:
                response = conn.getresponse()
                raw = response.read()
            except TimeoutError:
                raise DaemonUnreachable(self.socket_path, "no answer in time") from None
            except (OSError, http.client.HTTPException) as exc:
                raise DaemonUnreachable(self.socket_path, f"connection broken: {exc}") from None
        finally:
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
        path = "/v1/ready" + ("?" + urlencode(query) if query else "")
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
        try:
            try:
                conn.request("GET", "/v1/events", headers={"Accept": "text/event-stream"})
                response = conn.getresponse()
            except OSError as exc:
                raise DaemonUnreachable(self.socket_path, exc.strerror or str(exc) or type(exc).__name__) from None
            if response.status != 200:
                raw = response.read()
                try:
                    error = json.loads(raw).get("error", {})
                except (ValueError, AttributeError):
                    error = {}
                raise ApiError(response.status, str(error.get("code", "http_error")), str(error.get("message", "")))
            data: list[str] = []
            while True:
                line = response.readline()
                if not line:
                    return
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                if text.startswith("data:"):
                    data.append(text[5:].lstrip(" "))
                elif text == "" and data:
                    try:
                        event = json.loads("\n".join(data))
                    except ValueError:
                        event = {"kind": "unparsed", "data": "\n".join(data)}
                    data = []
                    if isinstance(event, dict):
                        yield event
        finally:
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


# --- the guarded run, for a Python job (loaded only when used) ---------------------------------


def guarded_run(require: list[str] | None = None, **options: Any) -> Any:
    """The guardian around a block of a Python job (``supervisorctl-mcp run`` for a ``with``)::

        from mcp_supervisor.api.client import NotReady, guarded_run
        with guarded_run(require=["jira"], wait=300) as run:
            ...  # run.fallback: servers to reach through their own API

    Options: ``wait``, ``allow_fallback``, ``socket``, ``config``. Raises NotReady (``exit_code``
    75, or 3 without a daemon) instead of entering the block. See ``mcp_supervisor.guard.session``.
    """
    from mcp_supervisor.guard.session import guarded_run as _guarded_run

    return _guarded_run(require, **options)


class NotReady(ClientError):
    """``guarded_run`` did not enter its block: ``exit_code`` 75 (required servers not ready) or 3
    (no daemon); ``report`` is the stored run report, ``not_ready`` the servers and why."""

    def __init__(self, message: str, exit_code: int, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.report = report
        run = report.get("run") or {}
        self.not_ready: list[dict[str, Any]] = list((run.get("precheck") or {}).get("not_ready", []))
