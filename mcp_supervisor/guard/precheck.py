"""Before the job: probe now, ask for recovery, wait for readiness, take a backup.

Why the guardian asks instead of deciding: the daemon owns health (thresholds, the ladder,
backoff); the guardian only makes it look now and act now, then waits on its long-poll.
"""

from __future__ import annotations

import contextlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from mcp_supervisor.api.client import ApiError, ClientError, SupervisorClient
from mcp_supervisor.guard.timeline import GOOD_STATES, NO_RESTART_CLASSES, RECOVERABLE_STATES

if TYPE_CHECKING:
    from mcp_supervisor.config import Config


def say(text: str) -> None:
    """A progress line for a person (stderr: the job's stdout is the job's)."""
    print(f"supervisorctl-mcp run: {text}", file=sys.stderr, flush=True)


def servers_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(s.get("name")): s for s in status.get("servers", []) if isinstance(s, dict)}


def _enrich(not_ready: list[dict[str, Any]], servers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for entry in not_ready:
        info = servers.get(str(entry.get("name")), {})
        out.append({**entry, "failure_class": info.get("failure_class"), "hint": info.get("hint")})
    return out


def _probe_all(client: SupervisorClient, names: list[str]) -> dict[str, dict[str, Any]]:
    def one(name: str) -> tuple[str, dict[str, Any]]:
        try:
            return name, client.probe(name)
        except ClientError as exc:
            return name, {"name": name, "error": str(exc)}

    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        return dict(pool.map(one, names))


def _probe_ok(answer: dict[str, Any]) -> bool:
    return bool((answer.get("result") or {}).get("ok"))


def _recoverable(entry: dict[str, Any]) -> bool:
    if entry.get("state") in RECOVERABLE_STATES:
        return True
    return entry.get("state") in ("needs_human", "fallback") and entry.get("failure_class") not in NO_RESTART_CLASSES


def precheck(client: SupervisorClient, required: list[str], wait: float, started: float) -> dict[str, Any]:
    """Probe every server now, confirm doubtful required ones, ask for recovery of the failed ones,
    long-poll readiness until ``wait`` runs out. Raises DaemonUnreachable/ApiError to the caller."""
    deadline = time.monotonic() + wait
    servers = servers_of(client.status())
    probes = _probe_all(client, list(servers))
    # a required server whose probe just failed may still read "healthy" (failure_threshold):
    # probe it again until the daemon's verdict catches up, so "ready" is not a stale answer
    for name in required:
        answer = probes.get(name, {})
        tries = 0
        while not _probe_ok(answer) and answer.get("state") in GOOD_STATES and tries < 5:
            if time.monotonic() >= deadline:
                break
            answer = _probe_all(client, [name])[name]
            tries += 1
        probes[name] = answer
    readiness = client.ready(required)
    asked: list[str] = []
    if not readiness.get("ready"):
        servers = servers_of(client.status())
        for entry in _enrich(readiness.get("not_ready", []), servers):
            if _recoverable(entry):
                with contextlib.suppress(ApiError):
                    client.recover(str(entry["name"]))
                    asked.append(str(entry["name"]))
        remaining = max(0.0, deadline - time.monotonic())
        if remaining > 0:
            names = ", ".join(str(e.get("name")) for e in readiness.get("not_ready", []))
            say(f"waiting up to {remaining:.0f} s for {names} (the supervisor is recovering)")
            readiness = client.ready_within(remaining, required)
    servers = servers_of(client.status())
    return {
        "mode": "daemon",
        "ready": bool(readiness.get("ready")),
        "waited_s": round(time.time() - started, 3),
        "probed": {name: _probe_ok(answer) for name, answer in probes.items()},
        "recover_requested": asked,
        "not_ready": _enrich(list(readiness.get("not_ready", [])), servers),
        "fallback": list(readiness.get("fallback", [])),
        "servers": servers,
    }


def standalone_precheck(config: Config, required: list[str], started: float) -> dict[str, Any]:
    """No daemon: one cold probe of each required server, in this process (no recovery)."""
    import asyncio

    from mcp_supervisor.health.model import ProbeKind
    from mcp_supervisor.probes import ProbeContext, create_prober

    async def check() -> dict[str, Any]:
        context = ProbeContext(max_concurrent_cold=config.supervisor.max_concurrent_cold_probes)
        probers = [create_prober(config.server(name), context) for name in required]
        try:
            results = await asyncio.gather(*(p.probe(ProbeKind.COLD) for p in probers))
        finally:
            await asyncio.gather(*(p.aclose() for p in probers), return_exceptions=True)
            await context.aclose()
        return dict(zip(required, results, strict=True))

    results = asyncio.run(check())
    not_ready = [
        {"name": name, "state": "failed", "reason": r.message, "failure_class": str(r.failure) if r.failure else None,
         "hint": r.hint}
        for name, r in results.items() if not r.ok
    ]
    servers = {name: {"name": name, "state": "healthy" if r.ok else "failed",
                      "critical": config.server(name).critical} for name, r in results.items()}
    return {
        "mode": "standalone",
        "ready": not not_ready,
        "waited_s": round(time.time() - started, 3),
        "probed": {name: r.ok for name, r in results.items()},
        "recover_requested": [],
        "not_ready": not_ready,
        "fallback": [],
        "servers": servers,
    }


def take_backup(client: SupervisorClient) -> dict[str, Any]:
    """A fresh snapshot of the watched configs before the job (skipped when there is no vault)."""
    try:
        _, answer = client.request("POST", "/v1/backups", body={}, timeout=120.0)
    except ApiError as exc:
        if exc.code == "no_vault" or exc.status == 404:
            return {"taken": False, "reason": "no vault configured"}
        return {"taken": False, "reason": f"backup failed: {exc.message}"}
    except ClientError as exc:
        return {"taken": False, "reason": f"backup failed: {exc}"}
    return {"taken": True, "snapshot": answer.get("snapshot"), "safe": answer.get("safe"),
            "skipped": sorted((answer.get("skipped") or {}).keys())}
