"""What a failure has in common with others: the labels an alert is grouped by, and the shared
causes that inhibit per-server alerts. Pure: no I/O, no clock reads.

Why labels and not a fixed rule: Alertmanager's ``group_by`` is what an on-call engineer knows.
An alert here carries ``cause`` (the shared cause when one is known, else its failure class),
``failure_class``, ``group`` (the server's optional ``alert_group`` key), ``transport`` and ``server``.

Why some causes override ``group_by`` (inhibition): when the daemon *knows* why many servers fail
at once (the Docker engine does not answer, the servers never came up since the daemon started,
one token is rejected, one client config is damaged),
the per-server alerts are consequences. They are grouped under that cause whatever ``group_by``
says, and the message leads with the cause, not with 12 server names.
"""

from __future__ import annotations

from typing import Any

DOCKER_ENGINE = "docker_engine"
DAEMON_STARTING = "daemon_starting"
NETWORK = "network"
KNOWN_CAUSES = frozenset({DOCKER_ENGINE, DAEMON_STARTING})
"""Causes the daemon knows for certain; they inhibit (override ``group_by``)."""
NETWORK_CLASSES = frozenset({"refused", "timeout"})

CAUSE_TEXT = {
    DOCKER_ENGINE: "Docker engine not answering",
    DAEMON_STARTING: "not up since the daemon started",
    NETWORK: "no HTTP server answers (network down?)",
    "refused": "connection refused",
    "timeout": "no answer in time",
    "crashed": "process or container died",
    "oom": "killed by the kernel: out of memory (its limits.memory)",
    "auth": "credentials rejected (401/403)",
    "config": "configuration problem",
    "protocol": "unexpected MCP answers",
    "rate_limited": "rate limited",
}
LABELS = ("cause", "failure_class", "group", "transport", "server", "severity")


def engine_unreachable(reason: str, container: bool) -> bool:
    """The container check says so, or (a container server) a restart could not reach the engine."""
    return "Docker engine unreachable" in reason or (container and "Cannot connect to" in reason)


def known_cause(data: dict[str, Any], token: str | None = None, config: str | None = None,
                container: bool = False) -> str | None:
    """The shared cause an alert's data proves, if any (``data`` is the tracker's note data;
    ``token``/``config``/``container``: the server's ``token_env``, watched config, container)."""
    reason = str(data.get("detail") or data.get("reason") or "")
    if engine_unreachable(reason, container):
        return DOCKER_ENGINE
    if data.get("failure_class") == "auth" and token:
        return f"token:{token}"  # servers sharing one token fail together when it is revoked
    if data.get("failure_class") == "config" and config:
        return f"config:{config}"  # servers from one damaged client config
    if data.get("after") == "starting" and data.get("failure_class") not in ("auth", "config"):
        return DAEMON_STARTING
    return None


def alert_labels(server: str, data: dict[str, Any], severity: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The labels of one server's alert; ``extra`` holds what only the config knows (group, transport,
    token: its ``token_env``, config: its watched config)."""
    failure = str(data.get("failure_class") or "unknown")
    extra = dict(extra or {})
    cause = known_cause(data, extra.pop("token", None), extra.pop("config", None), bool(extra.pop("container", "")))
    labels = {"cause": cause or failure, "failure_class": failure, "server": server, "severity": severity,
              "group": "", "transport": ""}
    labels.update(extra)
    return labels


def is_known(cause: str) -> bool:
    return cause in KNOWN_CAUSES or cause.startswith(("token:", "config:"))


def group_key(labels: dict[str, str], group_by: list[str] | tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The group an alert joins. A known cause wins over ``group_by`` (inhibition); ``...`` = every label."""
    if is_known(labels.get("cause", "")):
        return (("cause", labels["cause"]),)
    names = LABELS if "..." in group_by else group_by
    return tuple((name, labels.get(name, "")) for name in names)


def cause_text(cause: str) -> str:
    if cause.startswith("token:"):
        return f"token {cause[6:]} rejected"
    if cause.startswith("config:"):
        return f"config {cause[7:]} damaged"
    return CAUSE_TEXT.get(cause, cause.replace("_", " ") if cause else "several failures")


def headline_cause(cause: str, firing: set[str], http_servers: frozenset[str]) -> str:
    """The cause a message leads with: a network class that hits every HTTP server is the network."""
    if cause in NETWORK_CLASSES and len(http_servers) >= 2 and http_servers <= firing:
        return NETWORK
    return cause
