"""A small synchronous client for the control socket, for the CLI and for user jobs.

Why stdlib only, and not even ``http.client``: the CLI must answer ``ready`` close to a bare
interpreter's start-up, and a job that only asks "are MCPs ready?" should not pay for importing
aiohttp, pydantic, rich, asyncio or ``http.client`` (which pulls in the ``email`` package: ~10 ms).
The daemon speaks plain HTTP/1.1 on its own socket, so a few lines over ``socket`` suffice:
one request per connection (``Connection: close``), a Content-Length, chunked or until-close body.

    from mcp_supervisor.api.client import wait_ready
    if not wait_ready(timeout=60):
        raise SystemExit("MCP servers are not ready")
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing costs the CLI a few ms
if TYPE_CHECKING:
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


class _BadResponse(Exception):
    """The bytes on the socket are not an HTTP response."""


_MAX_LINE = 65536


class _Response:
    """One HTTP/1.1 response read from a connected socket (status, headers, then the body)."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")
        status_line = self._line()
        parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise _BadResponse(f"not an HTTP status line: {status_line[:80]!r}")
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        self.headers: dict[str, str] = {}
        while True:
            line = self._line()
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise _BadResponse("connection closed in the headers")
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        self._left: int | None = int(length) if length and length.isdigit() and not self._chunked else None
        self._chunk_left = 0
        self._done = False

    def close(self) -> None:
        self._file.close()

    def _line(self) -> bytes:
        line = self._file.readline(_MAX_LINE)
        if len(line) >= _MAX_LINE and not line.endswith(b"\n"):
            raise _BadResponse("header line too long")
        return line

    def read(self) -> bytes:
        """The whole (rest of the) body."""
        if self._left is not None:
            data = self._file.read(self._left)
            self._left = 0
            return data
        out = bytearray()
        while chunk := self.read_some():
            out += chunk
        return bytes(out)

    def read_some(self) -> bytes:
        """The next piece of the body; b"" at its end (for streams: what the daemon sent so far)."""
        if self._done:
            return b""
        if self._left is not None:
            self._done = True
            return self.read()
        if not self._chunked:
            data = self._file.read1(65536)
            self._done = not data
            return data
        if self._chunk_left == 0:
            size_line = self._line()
            try:
                self._chunk_left = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadResponse(f"bad chunk size {size_line[:40]!r}") from None
            if self._chunk_left == 0:
                self._done = True
                return b""
        data = self._file.read1(self._chunk_left)
        if not data:
            raise _BadResponse("connection closed inside a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._file.readline(8)  # the CRLF after the chunk
        return data

    def lines(self) -> Iterator[bytes]:
        """The body split into lines as it arrives (for server-sent events)."""
        pending = b""
        while chunk := self.read_some():
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line + b"\n"
        if pending:
            yield pending


def sse_payloads(lines: Iterable[bytes]) -> Iterator[str]:
    """The ``data:`` of each server-sent event in a stream of lines (comments and heartbeats skipped)."""
    data: list[str] = []
    for line in lines:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if text.startswith("data:"):
            data.append(text[5:].lstrip(" "))
        elif text == "" and data:
            yield "\n".join(data)
            data = []


def _open(socket_path: str, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(socket_path)
    except BaseException:
        sock.close()
        raise
    return sock


def _send(sock: socket.socket, method: str, path: str, payload: bytes | None, headers: dict[str, str]) -> None:
    head = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    if payload is not None or method in ("POST", "PUT", "PATCH"):
        head.append(f"Content-Length: {len(payload or b'')}")
    sock.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + (payload or b""))


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
            return _open(str(self.socket_path), timeout)
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
        response: _Response | None = None
        try:
            try:
                _send(conn, method, path, payload, headers)
            except TimeoutError:
                raise DaemonUnreachable(self.socket_path, "no answer in time") from None
            except OSError as exc:
                raise DaemonUnreachable(self.socket_path, exc.strerror or str(exc) or type(exc).__name__) from None
            try:
                response = _Response(conn)
                raw = response.read()
            except TimeoutError:
                raise DaemonUnreachable(self.socket_path, "no answer in time") from None
            except (OSError, _BadResponse) as exc:
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
        response: _Response | None = None
        try:
            try:
                _send(conn, "GET", "/v1/events", None, {"Accept": "text/event-stream"})
                response = _Response(conn)
            except (OSError, _BadResponse) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
                raise DaemonUnreachable(self.socket_path, reason) from None
            if response.status != 200:
                raw = response.read()
                try:
                    error = json.loads(raw).get("error", {})
                except (ValueError, AttributeError):
                    error = {}
                raise ApiError(response.status, str(error.get("code", "http_error")), str(error.get("message", "")))
            for payload in sse_payloads(response.lines()):
                try:
                    event = json.loads(payload)
                except ValueError:
                    event = {"kind": "unparsed", "data": payload}
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
