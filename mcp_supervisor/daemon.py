"""``mcp-supervisor``: the daemon, in the foreground, systemd style.

Wiring only: config -> logging -> Supervisor (runners) -> control API on the Unix socket ->
sd_notify READY; then signals: TERM/INT stop within ``supervisor.shutdown_timeout``, HUP reloads
(an invalid file is rejected and the old config keeps running).

The lifecycle rules (docs/architecture.md, "Runtime rules"): the first TERM/INT makes every
readiness answer "no" at once and arms a hard deadline (``runtime/hard_stop.py``): whatever is
stuck, the process ends within ``shutdown_timeout`` with its children killed, and a second
TERM/INT ends it at once. A failure while starting stops every managed process already started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mcp_supervisor import __version__
from mcp_supervisor.auth.service import AuthService
from mcp_supervisor.config import (
    DEFAULT_CONFIG_PATHS,
    Config,
    ConfigError,
    find_config,
    load_config,
    resolve_socket_path,
)
from mcp_supervisor.events import Event
from mcp_supervisor.logging import collect_secrets, get_logger, setup_logging
from mcp_supervisor.runtime.hard_stop import HardStop
from mcp_supervisor.runtime.token_watch import watch_token_expiry
from mcp_supervisor.sdnotify import Notifier

log = get_logger("mcp_supervisor.daemon")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-supervisor",
        description="Supervise MCP servers: probe, heal, and answer 'are MCPs ready?' on a Unix socket.",
    )
    parser.add_argument("--config", "-c", metavar="FILE", help="config file (default: $MCP_SUPERVISOR_CONFIG, "
                        "then /etc/mcp-supervisor/mcp-supervisor.toml, ~/.config/mcp-supervisor/mcp-supervisor.toml)")
    parser.add_argument("--check", action="store_true", help="validate the config and exit (0 valid, 1 invalid)")
    parser.add_argument("--socket", metavar="PATH", help="control socket (overrides the config)")
    parser.add_argument("--version", action="version", version=f"mcp-supervisor {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = find_config(args.config)
    if path is None:
        defaults = ", ".join(str(p) for p in DEFAULT_CONFIG_PATHS)
        print(
            f"mcp-supervisor: no config file found; pass --config FILE, set MCP_SUPERVISOR_CONFIG, or create one of: "
            f"{defaults} (see etc/mcp-supervisor.toml)",
            file=sys.stderr,
        )
        return 1
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if args.check:
        print(f"{path}: ok ({len(config.servers)} server(s), {len(config.configs)} watched config(s))")
        return 0
    setup_logging(config.supervisor.log_level, config.supervisor.log_format, collect_secrets(config))
    # Whatever the daemon creates (state directory tree, history, server logs) is its own: 0600/0700.
    # Modes others need (the control socket, restored user files) are set explicitly where made.
    os.umask(0o077)
    socket_path = resolve_socket_path(args.socket, config)
    try:
        with asyncio.Runner(loop_factory=loop_factory(os.environ.get("MCP_SUPERVISOR_LOOP", "asyncio"))) as runner:
            return runner.run(serve(config, path, socket_path))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


def loop_factory(choice: str) -> Any:
    """The event loop: asyncio's own unless ``MCP_SUPERVISOR_LOOP=uvloop`` (and uvloop is installed).

    Why asyncio by default: uvloop did not win the warm-probe CPU measurement of issue 16
    (bench/bench_daemon.py --loops asyncio,uvloop, side by side in one run); the switch stays so
    the comparison can be repeated on another machine or version.
    """
    if choice == "uvloop":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            print("mcp-supervisor: MCP_SUPERVISOR_LOOP=uvloop but uvloop is not installed "
                  "(pip install uvloop); using asyncio", file=sys.stderr)
            return None
        return uvloop.new_event_loop
    return None


async def serve(config: Config, config_path: Path, socket_path: Path, notifier: Notifier | None = None) -> int:
    from mcp_supervisor.runtime.supervisor import Supervisor

    loop = asyncio.get_running_loop()
    notifier = notifier or Notifier()
    stop = asyncio.Event()
    reload_wanted = asyncio.Event()

    def on_change(current: Supervisor) -> None:
        notifier.status(current.summary())

    supervisor = Supervisor(config, config_path, on_change=on_change)

    def vault_event(kind: str, data: dict[str, Any]) -> None:
        supervisor.bus.publish(Event(kind=kind, server=data.get("server"), data=dict(data)))
        if supervisor.config.servers_from:
            from mcp_supervisor.importer.follow import follows_client_change

            if follows_client_change(kind, data, supervisor.config.servers_from):
                reload_wanted.set()  # servers_from: the client file changed, re-read its servers

    vault = _make_vault(config, vault_event)
    supervisor.vault = vault
    history = _make_history(config, supervisor)
    supervisor.history = history  # type: ignore[attr-defined]  # read by api/history_routes.py
    budget = config.supervisor.shutdown_timeout
    hard_stop = HardStop(lambda: supervisor.records.live() if supervisor.records is not None else [])

    def begin_shutdown() -> None:
        """The first TERM/INT (or a failed start): not ready from now on, and the whole shutdown
        is bounded from here; a second TERM/INT is handled by ``hard_stop`` even if the loop is
        stuck."""
        if stop.is_set():
            return
        stop.set()
        supervisor.begin_stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        hard_stop.arm(budget)

    notify_service, metrics = _make_observers(supervisor, vault)
    from mcp_supervisor.proxy.runtime import ProxyRuntime

    proxy = ProxyRuntime(supervisor)
    proxy.register_metrics(metrics.registry)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, begin_shutdown)
    loop.add_signal_handler(signal.SIGHUP, reload_wanted.set)
    api: Any = None
    exit_code = 0
    try:
        # the socket first: if another daemon owns it, fail before starting any managed process
        try:
            api = await _start_api(supervisor, socket_path, config, vault, [metrics.add_routes, proxy.add_routes])
        except Exception as exc:
            log.error("cannot start the control API", error=str(exc))
            return 1
        page = await _start_status_page(supervisor, config, metrics.registry)
        await proxy.start(config)
        async with asyncio.TaskGroup() as tg:
            # the notifier's store opens first: a `silence` right after a (re)start must not wait
            # for the tokens, a previous life's processes to stop or every runner to start
            notify_task = tg.create_task(_guard("notifier", notify_service.run), name="notifier")
            auth = AuthService(lambda: supervisor.config, supervisor.bus)
            await auth.first_tokens(timeout=20.0)
            auth_task = tg.create_task(_guard("auth", auth.run), name="auth")
            try:
                await supervisor.start(tg)
            except Exception as exc:  # it has already stopped every managed process it started
                log.error("cannot start the servers; stopped what was started", error=f"{type(exc).__name__}: {exc}")
                exit_code = 1
                begin_shutdown()
            background = [
                auth_task,
                tg.create_task(notifier.watchdog_loop(), name="watchdog"),
                tg.create_task(_reload_loop(supervisor, reload_wanted, notifier), name="reload"),
            ]
            if vault is not None:
                background.append(tg.create_task(_guard("vault", vault.run), name="vault"))
            if history is not None:
                background.append(tg.create_task(_guard("history", history.run), name="history"))
            background.append(
                tg.create_task(
                    _guard("token watch", lambda: watch_token_expiry(lambda: supervisor.config, supervisor.bus)),
                    name="token-watch",
                )
            )
            background.append(notify_task)
            background.append(tg.create_task(_guard("maintenance", _maintenance(supervisor, notify_service)),
                                             name="maintenance"))
            background.append(tg.create_task(_guard("metrics", metrics.run), name="metrics"))
            background.append(tg.create_task(_guard("proxy", proxy.run), name="proxy"))
            if config.metrics.listen:
                settings = config.metrics
                background.append(tg.create_task(_guard("metrics listener", lambda: metrics.serve_tcp(settings)),
                                                 name="metrics-tcp"))
            if not stop.is_set():
                summary = supervisor.summary()
                notifier.ready(summary)
                log.info("started", socket=str(socket_path), config=str(config_path),
                         servers=len(supervisor.runners), pid=os.getpid(), status=summary)
            await stop.wait()
            notifier.stopping()
            log.info("stopping")
            begin_shutdown()  # a no-op after a signal
            supervisor.bus.publish(Event(kind="daemon", data={"event": "stopping"}))
            await asyncio.sleep(0)  # parked long-polls are answered "daemon stopping" before the API closes
            try:
                # the clean part gets most of the budget; the hard deadline (armed at the
                # signal) ends the process at the full budget whatever is still stuck
                async with asyncio.timeout(max(0.2, budget * 0.75)):
                    await asyncio.gather(_stop_api(api), supervisor.aclose(), _stop_status_page(page), proxy.close())
            except TimeoutError:
                log.error("clean shutdown ran out of time; killing what is left")
                supervisor.kill_now()
                exit_code = 1
            for task in background:
                task.cancel()
    finally:
        supervisor.kill_now()  # a no-op after a clean stop; after any error, no child outlives us
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if api is not None:
            with contextlib.suppress(Exception):
                await _stop_api(api)  # idempotent; removes the socket file if it is still ours
        notifier.close()
        notify_service.close()
        metrics.close()
    log.info("stopped")
    hard_stop.finished(exit_code)
    return exit_code


async def _reload_loop(supervisor: Any, wanted: asyncio.Event, notifier: Notifier) -> None:
    """SIGHUP only sets a flag; reloads run here, one at a time, bursts coalesced."""
    while True:
        await wanted.wait()
        wanted.clear()
        log.info("reload requested (SIGHUP)")
        notifier.reloading()
        try:
            await supervisor.reload()
        except Exception:
            log.exception("reload failed; the old config keeps running")
        notifier.ready(supervisor.summary())


async def _guard(name: str, run: Any) -> None:
    """A background service that fails is logged and restarted, never takes the daemon down."""
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(f"{name} failed; restarting it in 30s")
            await asyncio.sleep(30.0)


def _make_vault(config: Config, on_event: Any) -> Any:
    if config.configs and not config.backup.locations:
        log.warning("[[configs]] are listed but [backup] locations is empty: configs are neither backed up nor "
                    "watched (add locations = [\"...\"] under [backup])")
    if not config.backup.locations:  # without [[configs]] it still keeps the token store and tool contracts
        return None
    from mcp_supervisor.vault.service import VaultService

    return VaultService(config, on_event=on_event)


def _make_history(config: Config, supervisor: Any) -> Any:
    """The record (history/): fed from the bus; None when ``[history] enabled = false``."""
    if not config.history.enabled:
        return None
    from mcp_supervisor.history.service import HistoryService

    return HistoryService(lambda: supervisor.config, supervisor.bus,
                          lambda: {name: "maintenance" if r.maintenance else str(r.state)
                                   for name, r in supervisor.runners.items()})


def _maintenance(supervisor: Any, notify_service: Any) -> Any:
    from mcp_supervisor.runtime.maintenance import MaintenanceKeeper

    return MaintenanceKeeper(supervisor, notify_service).run


def _make_observers(supervisor: Any, vault: Any) -> tuple[Any, Any]:
    """The notifier (events -> outbox -> Slack/apprise) and the Prometheus metrics."""
    from mcp_supervisor.metrics import SupervisorMetrics
    from mcp_supervisor.notify.service import NotifyService

    def current() -> Config:
        config: Config = supervisor.config
        return config

    notify_service = NotifyService(current, supervisor.bus)
    supervisor.notifier = notify_service  # read by api/alert_routes.py (silences, maintenance)
    metrics = SupervisorMetrics(supervisor.status, current, supervisor.bus, notifier=notify_service, vault=vault)
    return notify_service, metrics


# --- the control API: one call to start, one to stop -------------------------------------------


async def _start_api(supervisor: Any, socket_path: Path, config: Config, vault: Any, more_routes: Any = ()) -> Any:
    from mcp_supervisor.api.server import start_api_server

    extra_routes = None
    if vault is not None:
        from mcp_supervisor.api.vault_routes import add_vault_routes

        extra_routes = add_vault_routes
    if more_routes:
        vault_routes = extra_routes

        def extra_routes(app: Any) -> None:
            if vault_routes is not None:
                vault_routes(app)
            for add in more_routes:  # the metrics' and the proxy's routes
                add(app)

    return await start_api_server(
        supervisor,
        socket_path,
        allowed_uids=config.supervisor.allowed_uids,
        allowed_gids=config.supervisor.allowed_gids,
        extra_routes=extra_routes,
        vault=vault,
    )


async def _stop_api(api: Any) -> None:
    await api.close()


async def _start_status_page(supervisor: Any, config: Config, registry: Any = None) -> Any:
    """The read-only page on loopback when ``[web] listen`` is set; a bind failure is logged, not fatal."""
    if not config.web.listen:
        return None
    from mcp_supervisor.logging import REDACTOR
    from mcp_supervisor.web.server import StatusPage

    history = getattr(supervisor, "history", None)
    record = None
    if history is not None:
        from mcp_supervisor.web.record import HistoryRecordView

        record = HistoryRecordView(history)
    page = StatusPage(supervisor.status, supervisor.bus, title=config.web.title, scrub=REDACTOR.scrub,
                      record=record, max_streams=config.web.max_event_streams)
    try:
        await page.start(config.web.listen)
    except OSError as exc:
        log.error("cannot serve the status page; the supervisor runs without it", listen=config.web.listen,
                  error=str(exc))
        await page.close()
        return None
    if registry is not None:
        registry.register(page.collector())
    log.info("status page listening", url=f"http://{config.web.listen}/")
    return page


async def _stop_status_page(page: Any) -> None:
    if page is not None:
        await page.close()


if __name__ == "__main__":
    sys.exit(main())
