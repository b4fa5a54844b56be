"""``[web] listen`` and ``[proxy] listen`` parsing: a loopback ``HOST:PORT`` (pure, no aiohttp).

Why in ``config/``: the config validator rejects a public address at load (``--check``, SIGHUP),
and the status page and the proxy bind what it returns; all use this one parser, and config
imports nothing above itself."""

from __future__ import annotations

import ipaddress


class WebListenError(ValueError):
    """``[web] listen`` is not a loopback host:port."""


def parse_listen(listen: str, section: str = "web", served: str = "the status page is served") -> tuple[str, int]:
    """'127.0.0.1:8089' / '[::1]:8089' / 'localhost:8089' -> (host, port); loopback only.

    ``section`` and ``served`` name the key in the error (``[proxy] listen`` uses it too)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise WebListenError(f"[{section}] listen = {listen!r}: use HOST:PORT, e.g. '127.0.0.1:8089'")
    host = host.strip("[]")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise WebListenError(
                f"[{section}] listen = {listen!r}: {served} on loopback only (127.0.0.1, ::1 or "
                "localhost); put a reverse proxy with authentication in front of it to publish it"
            )
    return host, int(port_text)
