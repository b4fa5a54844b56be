"""Tool contracts kept per server under ``state_dir/contracts/``: changes alerted, pins enforced.

Why in the daemon's state directory, one JSON file per server (0600, written atomically): the
contract must survive a daemon restart (else every restart would "accept" whatever the server now
says), and it holds only hashes and tool names, nothing secret. Written only when something
changed, never per probe.

Per server it keeps ``seen`` (the last ``tools/list``'s fingerprints and the server's version)
and ``pinned`` (the accepted contract, kept when ``pin_tools`` is set: trust on first use). A
``tools/list`` that differs from ``seen`` is one ``tools_changed`` event and one alert with the
diff; with ``pin_tools`` a difference from ``pinned`` in the pinned tools makes every successful
probe a ``drifted`` result until ``accept`` pins what the server now says.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mcp_supervisor.config import ServerConfig
from mcp_supervisor.health.model import FailureClass, Notify, ProbeResult
from mcp_supervisor.probes.contracts import Contract, ContractDiff, diff, diff_lines, diff_text
from mcp_supervisor.vault.fsutil import atomic_write

_log = logging.getLogger(__name__)


@dataclass
class _Kept:
    seen: Contract
    seen_version: str | None
    pinned: Contract | None = None
    pinned_version: str | None = None


def _pins(server: ServerConfig) -> list[str] | None:
    """The pinned tool names (None: every tool); only meaningful when ``pin_tools`` is set."""
    return list(server.pin_tools) if isinstance(server.pin_tools, list) else None


class ContractKeeper:
    """The daemon's one keeper: runners call ``check`` with each successful probe result."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "contracts"
        self._kept: dict[str, _Kept] = {}

    # --- storage -------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"  # names match config's _NAME_RE: no separators

    def _load(self, name: str) -> _Kept | None:
        kept = self._kept.get(name)
        if kept is not None:
            return kept
        try:
            raw: Any = json.loads(self._path(name).read_text())
            kept = _Kept(dict(raw["seen"]), raw.get("seen_version"), raw.get("pinned"), raw.get("pinned_version"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _log.warning("tool contract file %s is unreadable (%s); starting over from the next tools/list",
                         self._path(name), type(exc).__name__)
            return None
        self._kept[name] = kept
        return kept

    def _save(self, name: str, kept: _Kept) -> None:
        self._kept[name] = kept
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = {"seen": kept.seen, "seen_version": kept.seen_version, "pinned": kept.pinned,
                "pinned_version": kept.pinned_version}
        atomic_write(self._path(name), json.dumps(body, sort_keys=True).encode())

    # --- the checks ----------------------------------------------------------------------------

    def check(self, server: ServerConfig, result: ProbeResult) -> tuple[ProbeResult, list[Notify]]:
        """Record a successful probe's contract; (the result, or ``drifted`` instead; the alerts)."""
        notes: list[Notify] = []
        if result.tools is not None:
            notes = self._observe(server, result.tools, result.server_version)
        drift = self.drift(server)
        if drift:
            kept = self._kept[server.name]
            text = (f"{'; '.join(diff_lines(drift))} (tool contract not accepted: "
                    f"{kept.pinned_version or 'unknown version'} -> {kept.seen_version or 'unknown version'})")
            result = ProbeResult(ok=False, failure=FailureClass.DRIFTED, kind=result.kind, latency_ms=result.latency_ms,
                                 message=text, phases_ms=result.phases_ms, server_name=result.server_name,
                                 server_version=result.server_version, protocol_version=result.protocol_version,
                                 tool_count=result.tool_count, hint=f"review it: supervisorctl-mcp accept-tools {server.name}")
        return result, notes

    def _observe(self, server: ServerConfig, contract: Contract, version: str | None) -> list[Notify]:
        kept = self._load(server.name)
        pin = bool(server.pin_tools)
        if kept is None:  # first sight: nothing to compare with; a pin trusts it
            self._save(server.name, _Kept(contract, version, contract if pin else None, version if pin else None))
            return []
        notes: list[Notify] = []
        if kept.seen != contract:
            change = diff(kept.seen, contract)
            notes.append(Notify("tools_changed", diff_text(change, kept.seen_version, version), "warning"))
            kept = replace(kept, seen=contract, seen_version=version)
        elif kept.seen_version != version:
            kept = replace(kept, seen_version=version)
        if pin and kept.pinned is None:
            kept = replace(kept, pinned=kept.seen, pinned_version=kept.seen_version)
        if kept != self._kept.get(server.name) or notes:
            self._save(server.name, kept)
        return notes

    def drift(self, server: ServerConfig) -> ContractDiff:
        """What changed in the pinned tools and was not accepted (empty: nothing, or no pin)."""
        kept = self._load(server.name)
        if not server.pin_tools or kept is None or kept.pinned is None:
            return ContractDiff()
        return diff(kept.pinned, kept.seen).touches(_pins(server))

    def pending(self, server: ServerConfig) -> dict[str, Any]:
        """The API's view: the change waiting for ``accept-tools`` and the versions."""
        kept = self._load(server.name)
        change = diff(kept.pinned or kept.seen, kept.seen) if kept is not None else ContractDiff()
        return {"server": server.name, "pin_tools": server.pin_tools, "diff": change.to_json(),
                "lines": diff_lines(change), "drifted": bool(self.drift(server)),
                "before": kept.pinned_version if kept else None, "after": kept.seen_version if kept else None,
                "tools": sorted(kept.seen) if kept else []}

    def accept(self, server: ServerConfig) -> dict[str, Any]:
        """Pin what the server now says; returns what was accepted."""
        answer = self.pending(server)
        kept = self._load(server.name)
        if kept is not None:
            self._save(server.name, replace(kept, pinned=kept.seen, pinned_version=kept.seen_version))
        return {**answer, "accepted": True, "drifted": False}
