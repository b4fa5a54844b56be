"""Prometheus metrics: ``GET /metrics`` on the control socket, and on TCP when ``[metrics] listen`` is set.

Why two kinds of series: what *is* (a server's state, up, the newest backup's age and copies, the
outbox length, when a token expires) is read from the running supervisor at scrape time by a
custom collector, so it is never stale; what *happened* (probe durations, failures, recoveries,
restarts) is counted from the event bus as it happens. Names follow the Prometheus conventions:
``mcp_supervisor_`` prefix, base units (seconds), ``_total`` for counters. No label or value ever
holds a secret: token expiry is a timestamp labelled with the variable's *name*.

Why every per-server series carries ``critical`` and ``managed`` beside ``server``: in a fleet the
alert rules and dashboards filter on them across hosts (``up == 0 and critical="true"``) without a
join; the host is Prometheus' own ``instance`` label, so the daemon never guesses its name.
``mcp_supervisor_build_info`` says which version each host runs, as every exporter does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, exposition, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mcp_supervisor.config import Config, MetricsSettings
from mcp_supervisor.events import Event, EventBus
from mcp_supervisor.health.model import State
from mcp_supervisor.logging import get_logger

log = get_logger("mcp_supervisor.metrics")
PREFIX = "mcp_supervisor"
PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_UP = frozenset({State.HEALTHY.value, State.DEGRADED.value, State.RATE_LIMITED.value})
_RESTARTING_RUNGS = frozenset({"restart", "restore_config", "recreate"})
SERVER_LABELS = ["server", "critical", "managed"]
CONTENT_TYPE: str = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", CONTENT_TYPE_LATEST)
"""The classic text format 0.0.4: every Prometheus (and promtool) version reads it."""


class SupervisorMetrics:
    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        config: Callable[[], Config],
        bus: EventBus | None = None,
        *,
        notifier: Any = None,
        vault: Any = None,
        environ: Any = None,
    ) -> None:
        self._status = status
        self._config = config
        self._notifier = notifier
        self._vault = vault
        self._environ = os.environ if environ is None else environ
        self.last_backup_at: float | None = None
        self.last_backup_copies: int | None = None
        self.location_success: dict[str, float] = {}
        """When each location last took a backup copy (an off-host one can be down for a while)."""
        self.registry = CollectorRegistry(auto_describe=True)
        # by kind only: per server x kind x bucket would be ~10k series at 200 servers (the per-server
        # figure is the last probe's latency, a gauge)
        self.probe_duration = Histogram(
            f"{PREFIX}_probe_duration_seconds", "Duration of MCP probes, by probe kind.",
            ["kind"], buckets=PROBE_BUCKETS, registry=self.registry,
        )
        self.probe_failures = Counter(
            f"{PREFIX}_probe_failures", "Failed probes, by server and failure class.",
            [*SERVER_LABELS, "failure_class"], registry=self.registry,
        )
        self.recoveries = Counter(
            f"{PREFIX}_recoveries", "Recovery actions performed, by server, ladder rung and outcome.",
            [*SERVER_LABELS, "rung", "outcome"], registry=self.registry,
        )
        self.restarts = Counter(
            f"{PREFIX}_restarts", "Restarts of a managed process or container (restart, restore_config, recreate).",
            SERVER_LABELS, registry=self.registry,
        )
        self.process_exits = Counter(
            f"{PREFIX}_process_exits", "Unexpected exits of managed processes.", SERVER_LABELS, registry=self.registry,
        )
        self._labels_of: tuple[Config | None, dict[str, tuple[str, str, str]]] = (None, {})
        self._snap: dict[str, Any] = {}
        self._scrape_lock = asyncio.Lock()
        self.registry.register(_LiveCollector(self))
        self._subscription = bus.subscription() if bus is not None else None
        self._queue: asyncio.Queue[Event] | None = (
            self._subscription.__enter__() if self._subscription is not None else None
        )

    # --- counting what happens -----------------------------------------------------------------

    def server_labels(self, name: str) -> tuple[str, str, str]:
        """(server, critical, managed) as label values, from the current config (cached per config)."""
        config = self._config()
        cached_for, labels = self._labels_of
        if cached_for is not config:
            labels = {s.name: (s.name, _flag(s.critical), _flag(s.managed)) for s in config.servers}
            self._labels_of = (config, labels)
        return labels.get(name, (name, "false", "false"))

    def observe(self, event: Event) -> None:
        server = self.server_labels(event.server or "")
        data = event.data
        if event.kind == "probe":
            kind = str(data.get("probe") or "warm")
            latency = data.get("latency_ms")
            if isinstance(latency, int | float):
                self.probe_duration.labels(kind).observe(max(0.0, float(latency)) / 1000.0)
            if not data.get("ok") and data.get("failure_class"):
                self.probe_failures.labels(*server, str(data["failure_class"])).inc()
        elif event.kind == "action_done":
            rung = str(data.get("rung") or "unknown")
            self.recoveries.labels(*server, rung, "success" if data.get("ok") else "failure").inc()
            if rung in _RESTARTING_RUNGS:
                self.restarts.labels(*server).inc()
        elif event.kind == "process_exit":
            self.process_exits.labels(*server).inc()
        elif event.kind == "backup":
            self.last_backup_at = event.at
            copies = data.get("copies")
            self.last_backup_copies = len(copies) if isinstance(copies, list) else None
            for location in copies if isinstance(copies, list) else []:
                self.location_success[str(location)] = event.at

    async def run(self) -> None:
        """Count events from the bus; learn the newest backup from the vault once at start."""
        if self._vault is not None and self.last_backup_at is None:
            with contextlib.suppress(Exception):
                snapshots = await self._vault.list_snapshots()
                if snapshots:
                    newest = snapshots[0]
                    self.last_backup_at = datetime.fromisoformat(newest["created"]).timestamp()
                    self.last_backup_copies = int(newest.get("copies", 0))
                for snapshot in reversed(snapshots):  # oldest first: the newest copy wins
                    if snapshot.get("created"):
                        made = datetime.fromisoformat(snapshot["created"]).timestamp()
                        self.location_success.update(dict.fromkeys(snapshot.get("locations", []), made))
        if self._queue is None:
            return
        while True:
            self.observe(await self._queue.get())

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.__exit__(None, None, None)

    # --- exposition ------------------------------------------------------------------------------

    def snapshot(self) -> None:
        """Copy the live views (in the event loop) for the collector; formatting then needs no loop."""
        try:
            status = self._status()
            servers = list(status.get("servers", []))
            daemon = dict(status.get("daemon") or {})
        except Exception:  # a scrape must not fail because one view is unavailable
            servers, daemon = [], {}
        notifier = self._notifier
        self._snap = {
            "servers": servers,
            "daemon": daemon,
            "config": self._config(),
            "outbox": dict(getattr(notifier, "counts", {}) or {}) if notifier is not None else None,
            "deliveries": dict(getattr(notifier, "stats", {}) or {}) if notifier is not None else {},
            "alerts": dict(getattr(notifier, "alert_stats", {}) or {}) if notifier is not None else {},
            "backup": (self.last_backup_at, self.last_backup_copies),
            "locations": dict(self.location_success),
        }

    def exposition(self) -> bytes:
        self.snapshot()
        return self._generate()

    def _generate(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data

    async def handle(self, request: web.Request) -> web.Response:
        # prometheus-client formats ~10 µs per series: off the loop, one scrape at a time
        async with self._scrape_lock:
            self.snapshot()
            body = await asyncio.to_thread(self._generate)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self.handle)

    async def serve_tcp(self, settings: MetricsSettings) -> None:
        """A listener with only ``/metrics`` (no control routes) on ``host:port``: plain HTTP on
        loopback, HTTPS and basic auth when ``[metrics]`` configures them (required off loopback)."""
        from mcp_supervisor.metrics_web import listener_security

        listen = settings.listen or ""
        host, _, port = listen.rpartition(":")
        context, middlewares = listener_security(settings)
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/metrics", self.handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host.strip("[]"), int(port), ssl_context=context)
            await site.start()
            log.info("metrics listening", listen=listen, bound=[str(a) for a in runner.addresses],
                     tls=context is not None, basic_auth=bool(middlewares))
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


class _LiveCollector(Collector):
    """Series read from the snapshot taken at scrape time (``SupervisorMetrics.snapshot``)."""

    def __init__(self, metrics: SupervisorMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Any]:
        snap = self.m._snap
        if not snap:
            return
        yield _build_info()
        state = GaugeMetricFamily(f"{PREFIX}_server_state", "1 for the state the server is in, 0 for the others.",
                                  labels=[*SERVER_LABELS, "state"])
        up = GaugeMetricFamily(f"{PREFIX}_server_up", "1 when the server is healthy or degraded, else 0.",
                               labels=SERVER_LABELS)
        critical = GaugeMetricFamily(f"{PREFIX}_server_critical", "1 when the server is critical for readiness.",
                                     labels=SERVER_LABELS)
        latency = GaugeMetricFamily(f"{PREFIX}_server_probe_latency_seconds", "Latency of the server's last probe.",
                                    labels=SERVER_LABELS)
        for entry in snap["servers"]:
            labels = list(self.m.server_labels(str(entry.get("name"))))
            current = str(entry.get("state"))
            for candidate in State:
                state.add_metric([*labels, candidate.value], 1.0 if candidate.value == current else 0.0)
            up.add_metric(labels, 1.0 if current in _UP else 0.0)
            critical.add_metric(labels, 1.0 if entry.get("critical") else 0.0)
            if isinstance(entry.get("latency_ms"), int | float):
                latency.add_metric(labels, float(entry["latency_ms"]) / 1000.0)
        yield state
        yield up
        yield critical
        yield latency
        yield from self._loop(snap)
        yield from self._backup(snap)
        yield from self._outbox(snap)
        yield from self._tokens(snap)

    @staticmethod
    def _loop(snap: dict[str, Any]) -> Iterator[Any]:
        """The daemon's own load (issue 22): how late its event loop ran, and the timeouts re-run
        because of it instead of being counted against a server."""
        daemon = snap.get("daemon") or {}
        lag = daemon.get("loop_lag")
        if isinstance(lag, dict):
            gauge = GaugeMetricFamily(f"{PREFIX}_event_loop_lag_seconds",
                                      "The event loop's worst lateness over the last 10 s.")
            gauge.add_metric([], float(lag.get("recent_max_ms", 0.0)) / 1000.0)
            yield gauge
        if isinstance(daemon.get("timeouts_rerun"), int):
            reruns = CounterMetricFamily(f"{PREFIX}_probe_timeouts_rerun",
                                         "Probe timeouts checked again because the event loop itself was late.")
            reruns.add_metric([], float(daemon["timeouts_rerun"]))
            yield reruns

    @staticmethod
    def _backup(snap: dict[str, Any]) -> Iterator[Any]:
        last_at, last_copies = snap["backup"]
        if last_at is None:
            return
        age = GaugeMetricFamily(f"{PREFIX}_backup_age_seconds", "Seconds since the newest config backup.")
        age.add_metric([], max(0.0, time.time() - last_at))
        yield age
        last = GaugeMetricFamily(f"{PREFIX}_backup_last_timestamp_seconds", "When the newest config backup was made.")
        last.add_metric([], last_at)
        yield last
        if last_copies is not None:
            copies = GaugeMetricFamily(f"{PREFIX}_backup_copies", "Locations holding the newest config backup.")
            copies.add_metric([], float(last_copies))
            yield copies
            minimum = GaugeMetricFamily(f"{PREFIX}_backup_min_copies", "The configured [backup] min_copies.")
            minimum.add_metric([], float(snap["config"].backup.min_copies))
            yield minimum
        # every configured location, 0 for one that never took a copy: the alert rule then fires
        settings = snap["config"].backup
        per_location = GaugeMetricFamily(f"{PREFIX}_backup_location_last_success_timestamp_seconds",
                                         "When each backup location last took a copy (0: never).", labels=["location"])
        for location in settings.locations:
            per_location.add_metric([location], snap["locations"].get(location, 0.0))
        yield per_location
        max_age = GaugeMetricFamily(f"{PREFIX}_backup_max_age_seconds",
                                    "The configured [backup] max_age: a location without a copy for longer is alerted.")
        max_age.add_metric([], settings.max_age)
        yield max_age

    @staticmethod
    def _outbox(snap: dict[str, Any]) -> Iterator[Any]:
        counts = snap["outbox"]
        if counts is None:
            return
        length = GaugeMetricFamily(f"{PREFIX}_notify_outbox_messages",
                                   "Notifications in the durable outbox, by status (pending, dead).", labels=["status"])
        for status in ("pending", "dead"):
            length.add_metric([status], float(counts.get(status, 0)))
        yield length
        deliveries = CounterMetricFamily(f"{PREFIX}_notify_deliveries",
                                         "Delivery attempts by channel and outcome (sent, retry, rate_limited, rejected).",
                                         labels=["channel", "outcome"])
        for (channel, outcome), value in sorted(snap["deliveries"].items()):
            deliveries.add_metric([channel, outcome], float(value))
        yield deliveries
        alerts = CounterMetricFamily(f"{PREFIX}_notify_alerts",
                                     "Per-server alerts by what became of them: grouped (in a message naming other "
                                     "servers), inhibited (under a known shared cause), silenced (recorded, not sent).",
                                     labels=["outcome"])
        for outcome in ("grouped", "inhibited", "silenced"):
            alerts.add_metric([outcome], float(snap.get("alerts", {}).get(outcome, 0)))
        yield alerts

    def _tokens(self, snap: dict[str, Any]) -> Iterator[Any]:
        from mcp_supervisor.health.tokens import token_expiry

        family = GaugeMetricFamily(f"{PREFIX}_token_expiry_timestamp_seconds",
                                   "When the server's bearer token expires (from its JWT exp or token_expires).",
                                   labels=[*SERVER_LABELS, "source"])
        for server in snap["config"].servers:
            try:
                found = token_expiry(server, self.m._environ)
            except Exception:
                continue
            if found is not None:
                expires, source = found
                family.add_metric([*self.m.server_labels(server.name), source], expires.timestamp())
        yield family


def _flag(value: object) -> str:
    return "true" if value else "false"


def _build_info() -> GaugeMetricFamily:
    """``mcp_supervisor_build_info{version, python, mcp} 1``: which build each host of a fleet runs."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "unknown"

    info = GaugeMetricFamily(f"{PREFIX}_build_info", "The running build: mcp-supervisor, Python and MCP SDK versions.",
                             labels=["version", "python", "mcp"])
    info.add_metric([installed("mcp-supervisor"), platform.python_version(), installed("mcp")], 1.0)
    return info
