"""What the end (or failed start) of a managed process says, as the observation the machine gets.

Why apart from the runner: the wording of a failure is what an operator reads first (status, the
record, Slack), and it has its own rules (systemd-style exit text, the server's last output line,
a port held by another process named with its pid); the runner only decides *when* it counts.
"""

from __future__ import annotations

from typing import Any

from mcp_supervisor.config import ServerConfig
from mcp_supervisor.health.exits import error_line
from mcp_supervisor.health.model import FailureClass, ProbeKind, ProbeResult
from mcp_supervisor.runtime.port_conflict import exit_port_conflict
from mcp_supervisor.spawn import exit_text

__all__ = ["exit_result", "exit_text", "last_output_line", "start_failure"]


def last_output_line(process: Any) -> str | None:
    """The process's last log line, only when it is an error line (``health.exits.error_line``):
    a killed server's access-log line (``INFO: ... "POST /mcp" 200 OK``) is not why it died."""
    log_file = getattr(process, "log", None)
    return error_line(log_file.tail(2000)) if log_file is not None else None


def exit_result(server: ServerConfig, process: Any, exited: str, *, oom: bool = False) -> ProbeResult:
    """The ``crashed`` (or ``oom``: the kernel killed it at its memory limit) observation of a process
    that ``exited`` (``exit_text``) on its own."""
    said = last_output_line(process)
    conflict = exit_port_conflict(server.name, server.url, process)  # names a port holder
    message = f"managed process {exited}" + (f"; last output: {said}" if said else "")
    if conflict:
        message = f"{conflict} (the process {exited})"
    failure = FailureClass.OOM if oom else FailureClass.CRASHED
    return ProbeResult(ok=False, failure=failure, kind=ProbeKind.WARM, message=message)


def start_failure(server: ServerConfig, exc: Exception) -> ProbeResult:
    """A process that could not be started: a config failure of this server (a restart cannot help)."""
    return ProbeResult(
        ok=False,
        failure=FailureClass.CONFIG,
        message=str(exc)[:300],
        hint=f"fix 'command', 'args' or 'cwd' of this server, then: supervisorctl-mcp recover {server.name}",
    )
