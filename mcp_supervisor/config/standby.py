"""The warm standby of a managed HTTP/SSE server: which two ports, and each instance's command.

Why a module of its own: a standby instance is the same program started a second time, so the
only thing that tells the two apart is the port each one listens on. That port comes from
``standby_port = N`` (the primary keeps the port of ``url``) or from ``ports = [a, b]`` (the
primary gets ``a``); ``{port}`` in ``args``, ``env`` values and ``url`` is filled with each
instance's own port. The checks here turn every way this can be wrong into a message naming the
field and the fix, at load time, not at the first failover. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PLACEHOLDER = "{port}"


@dataclass(frozen=True)
class Filled:
    """One instance's fields with ``{port}`` replaced."""

    port: int
    args: list[str]
    env: dict[str, str]
    url: str


def url_port(url: str) -> int | None:
    """The explicit port of an http(s) URL (None without one or with ``{port}`` in it)."""
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def _with_port(url: str, port: int) -> str:
    """``url`` with ``{port}`` filled, or its explicit port replaced by ``port``."""
    if PLACEHOLDER in url:
        return url.replace(PLACEHOLDER, str(port))
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    auth = parts.netloc.rpartition("@")[0]
    netloc = (f"{auth}@" if auth else "") + f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _fill(args: list[str], env: dict[str, str], url: str, port: int) -> Filled:
    text = str(port)
    return Filled(port, [a.replace(PLACEHOLDER, text) for a in args],
                  {k: v.replace(PLACEHOLDER, text) for k, v in env.items()}, _with_port(url, port))


def instances(data: Any) -> tuple[Filled, Filled | None] | None:
    """Check a server's standby fields; return (primary, standby) with ``{port}`` filled, or None
    when the server uses none of them. Raises ValueError naming the field and the fix."""
    standby = bool(data.standby)
    ports: list[int] = list(data.ports)
    standby_port: int | None = data.standby_port
    url: str = data.url or ""
    templated = any(PLACEHOLDER in a for a in data.args) or any(PLACEHOLDER in v for v in data.env.values())
    if not (standby or ports or standby_port is not None or templated or PLACEHOLDER in url):
        return None
    if data.transport == "stdio":
        if ports or standby_port is not None:
            raise ValueError("'ports' and 'standby_port' are for managed http/sse servers; a stdio standby is "
                             "a second process on its own pipes: remove them")
        return None
    if standby and not data.managed:
        raise ValueError("standby = 1 on an http/sse server needs managed = true (the supervisor starts the "
                         "second instance itself); for a server it does not start, remove standby")
    if not standby and (ports or standby_port is not None):
        raise ValueError("'ports' and 'standby_port' choose the standby instance's port: set standby = 1, "
                         "or remove them")
    if ports and standby_port is not None:
        raise ValueError("use either 'standby_port' or 'ports = [primary, standby]', not both")
    if ports and len(ports) != 2:
        raise ValueError(f"ports = {ports} must list exactly two ports: [primary, standby] "
                         "(e.g. ports = [8765, 8766])")
    for port in ports + ([standby_port] if standby_port is not None else []):
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not a TCP port (1-65535)")
    own = url_port(url)
    if PLACEHOLDER in url and not ports:
        raise ValueError("url contains {port}, which is filled from 'ports = [primary, standby]'; add ports, "
                         "or write the primary's port in url")
    primary = ports[0] if ports else own
    if primary is None:
        raise ValueError("url names no port, so the standby's port cannot be told apart: write the port in url "
                         "(e.g. 'http://127.0.0.1:8765/mcp') or use {port} with ports = [a, b]")
    if ports and own is not None and own != primary and PLACEHOLDER not in url:
        raise ValueError(f"url's port {own} is not the primary's port {primary} from ports = {ports}; write "
                         "{port} in url (it is filled with each instance's port)")
    first = _fill(list(data.args), dict(data.env), url, primary)
    if not standby:
        return first, None
    second_port = ports[1] if ports else standby_port
    if second_port is None:
        raise ValueError("standby = 1 on an http/sse server needs a second port for the standby instance: add "
                         "standby_port = N (the primary keeps url's port) or ports = [primary, standby] with "
                         "{port} in args")
    if second_port == primary:
        field = "ports" if ports else "standby_port"
        raise ValueError(f"{field}: the standby's port {second_port} is the primary's port too; two instances "
                         "cannot listen on one port: choose another")
    if not templated:
        raise ValueError("the standby instance must be told its port: put {port} in 'args' (e.g. "
                         "args = [\"server.py\", \"--port\", \"{port}\"]) or in an 'env' value; it is filled "
                         "with each instance's port")
    return first, _fill(list(data.args), dict(data.env), url, second_port)


def local_port_clash(servers: list[Any]) -> str | None:
    """A standby server whose instances claim a port another server uses: the message, else None."""
    claims: dict[tuple[str, int], list[str]] = {}
    for server in servers:
        if server.transport == "stdio" or not server.url:
            continue
        host = urlsplit(server.url).hostname or ""
        host = "127.0.0.1" if host in ("localhost", "::1", "0.0.0.0") else host
        for port in {url_port(server.url), server.standby_instance_port} - {None}:
            claims.setdefault((host, port), []).append(server.name)
    for server in servers:
        if not server.standby or server.standby_instance_port is None:
            continue
        for (_, port), names in claims.items():
            if server.name in names and len(names) > 1:
                other = next(n for n in names if n != server.name)
                return (f"server {server.name!r}: port {port} is used by server {other!r} too; each instance "
                        "needs a port of its own: change standby_port or ports (or the other server's url)")
    return None
