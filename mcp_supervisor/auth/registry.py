"""What the rest of the daemon may read of the token owners: a header, a hint, a status entry.

Why a registry and not the owners passed around: the probes build their HTTP requests deep in
``probes/conn.py`` and ``status`` is a pure projection of a runner's view; each needs one small
read (the current ``Authorization`` value, the fix to name, the expiry), never the owner itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from mcp_supervisor.auth.owner import TokenOwner
from mcp_supervisor.config import ServerConfig

_OWNERS: dict[str, TokenOwner] = {}


def register(name: str, owner: TokenOwner) -> None:
    _OWNERS[name] = owner


def unregister(name: str, owner: TokenOwner) -> None:
    if _OWNERS.get(name) is owner:
        del _OWNERS[name]


class LiveHeaders(Mapping[str, str]):
    """A server's configured headers plus ``Authorization: Bearer <the current token>``, read at
    each request, so a kept-open probe session sends the renewed token without reconnecting."""

    def __init__(self, static: Mapping[str, str], name: str) -> None:
        self._static = dict(static)
        self._name = name

    def _now(self) -> dict[str, str]:
        owner = _OWNERS.get(self._name)
        if owner is None or owner.bearer is None:
            return self._static
        return {**self._static, "Authorization": f"Bearer {owner.bearer}"}

    def __getitem__(self, key: str) -> str:
        return self._now()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._now())

    def __len__(self) -> int:
        return len(self._now())


def probe_headers(server: ServerConfig) -> Mapping[str, str]:
    """The headers a probe sends to ``server`` (live ones for an OAuth server)."""
    return LiveHeaders(server.headers, server.name) if server.auth is not None else dict(server.headers)


def auth_hint(server: ServerConfig) -> str | None:
    """The fix to name when an OAuth server answers 401/403 (None: not an OAuth server)."""
    if server.auth is None:
        return None
    owner = _OWNERS.get(server.name)
    if owner is not None and owner.facts.problem:
        return owner.facts.problem
    if not server.auth.machine:
        return (f"the server rejected the OAuth access token of {server.name}: check auth.scopes, or sign in again: "
                f"supervisorctl-mcp login {server.name}")
    return (f"the server rejected the access token of OAuth client '{server.auth.client_id}': check "
            "auth.scopes and that the authorization server issues tokens for this server's URL (resource)")


async def refresh_now(name: str) -> bool:
    """Renew ``name``'s token now (a 401 with a token believed fresh); joins a renewal in flight.
    False: no owner, or the renewal failed (its sentence is in ``auth_status``'s ``problem``)."""
    owner = _OWNERS.get(name)
    if owner is None or owner.fatal:
        return False
    return await owner.renew_now() and owner.bearer is not None


def auth_status(name: str, server: ServerConfig | None = None) -> dict[str, Any] | None:
    """``status``'s ``auth`` entry, the one source for every display of it (CLI, dashboard, page):
    type, grant, client, the access token's expiry, the last and next refresh, the grant's end (a
    known refresh-token expiry), counts and the problem with its fix; never a token."""
    owner = _OWNERS.get(name)
    if owner is None:
        return None
    auth = owner.server.auth
    assert auth is not None
    facts = owner.facts
    return {
        "type": auth.type,
        "grant": auth.grant,
        "client_id": auth.client_id,
        "expires_at": _rounded(facts.expires_at),
        "obtained_at": _rounded(facts.obtained_at),
        "last_refresh_at": _rounded(facts.last_refresh_at),
        "next_refresh_at": _rounded(facts.next_refresh_at),
        "refresh_expires_at": _rounded(facts.refresh_expires_at),
        "login_needed": owner.fatal and not auth.machine,
        "renewals": facts.renewals,
        "failures": facts.failures,
        "problem": facts.problem,
    }


def _rounded(value: float | None) -> float | None:
    return round(value, 3) if value else None
