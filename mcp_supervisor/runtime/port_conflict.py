"""Why a managed server could not come up: its port is held by another process.

The classic case is an orphan (a server started by a daemon that died, or by hand): the new copy
dies with "address already in use" while the orphan answers the probes. The operator needs the
holder's pid and command, not "exited (code 1)".
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from mcp_supervisor.health.model import FailureClass, ProbeResult
from mcp_supervisor.spawn import procfs

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::", "[::1]"})
_BIND_ERRORS = ("address already in use", "eaddrinuse", "errno 98")


def local_port(url: str | None) -> int | None:
    """The TCP port of a URL served on this machine; None for a remote host or no URL."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return port if (parts.hostname or "") in _LOCAL_HOSTS else None


def says_address_in_use(output: str) -> bool:
    lowered = output.lower()
    return any(marker in lowered for marker in _BIND_ERRORS)


def port_conflict(url: str | None, own_pgid: int | None, output: str = "", own_start: int | None = None) -> str | None:
    """A sentence naming who holds the server's port, if a process outside the server's own
    process group does (or its output says the address is in use); None otherwise.

    With ``own_start`` (the server's start time in ticks) only a holder that was there before
    the server started counts: a listener the server's command set up elsewhere (``docker run
    -p`` makes docker-proxy listen) is newer, and is not a conflict.
    """
    port = local_port(url)
    if port is None:
        return None
    holders = [pid for pid in procfs.port_listeners(port) if _foreign(pid, own_pgid, own_start)]
    if holders:
        return (
            f"cannot bind port {port}: it is held by {procfs.describe(holders[0])}, which this supervisor "
            "does not manage; stop that process or change the server's port"
        )
    if output and says_address_in_use(output[-2000:]):
        return f"cannot bind port {port}: address already in use"
    return None


def _foreign(pid: int, own_pgid: int | None, own_start: int | None) -> bool:
    stat = procfs.read_stat(pid)
    if stat is None:
        return False
    if own_pgid is not None and stat.pgid == own_pgid:
        return False
    return own_start is None or stat.start_ticks < own_start


def exit_port_conflict(server: str, url: str | None, process: Any) -> str | None:
    """``port_conflict`` for a managed process that just exited (its output and group known)."""
    if local_port(url) is None or process is None:
        return None
    records = getattr(process, "records", None)
    record = records.current(server) if records is not None else None
    log = getattr(process, "log", None)
    try:
        output = log.tail() if log is not None else ""
    except Exception:
        output = ""
    if record is None:
        return port_conflict(url, None, output)
    return port_conflict(url, record.pgid, output, own_start=record.start_ticks)


def managed_answer(server: str, url: str | None, process: Any, result: ProbeResult, *, settled: bool) -> ProbeResult:
    """A managed server's successful probe, unless another process gave the answer.

    Our process dead: whatever answered on its port is someone else (``crashed``). Our process
    alive but not yet settled (starting, recovering): the answer counts only if the port's
    listener is in our process group; otherwise our copy cannot bind (``refused``, which
    ``start_period`` still forgives while it boots). A settled server is not checked: that is the
    hot path, and its process exiting is noticed at once anyway.
    """
    if not result.ok or local_port(url) is None:
        return result
    if not getattr(process, "running", True):
        message = exit_port_conflict(server, url, process) or (
            "the managed process is not running, yet something answers on its port; stop that process"
        )
        return _failed(result, FailureClass.CRASHED, message)
    if settled:
        return result
    records = getattr(process, "records", None)
    record = records.current(server) if records is not None else None
    if record is None:
        return result  # not on record (records unavailable): no way to tell whose answer it is
    conflict = port_conflict(url, record.pgid, own_start=record.start_ticks)
    return _failed(result, FailureClass.REFUSED, conflict) if conflict else result


def _failed(result: ProbeResult, failure: FailureClass, message: str) -> ProbeResult:
    return ProbeResult(ok=False, failure=failure, kind=result.kind, latency_ms=result.latency_ms, message=message,
                       hint="supervisorctl-mcp status shows the holder; stop it, or give this server another port")
