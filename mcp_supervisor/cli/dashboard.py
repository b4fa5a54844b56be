"""``supervisorctl-mcp dashboard``: a live terminal view of the supervisor (textual).

Why it follows ``/v1/events`` instead of polling: a state change shows at once and an idle
dashboard costs next to nothing (one open stream, a status read every ``--refresh`` seconds to keep
"time in state" honest, the day's report once a minute). Server text is shown as plain text
(``rich.text.Text``), never as markup. The daemon going away is said plainly, and the dashboard
reconnects by itself when it comes back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Static

from mcp_supervisor.cli.render import maintenance_text
from mcp_supervisor.sse import SseParser

STATE_STYLE = {
    "healthy": "bold green",
    "degraded": "bold yellow",
    "starting": "dim",
    "paused": "dim",
    "recovering": "bold yellow",
    "backoff": "bold yellow",
    "failed": "bold red",
    "fallback": "bold magenta",
    "needs_human": "bold red reverse",
}
ALERT_STATES = frozenset({"failed", "needs_human", "fallback", "backoff", "recovering"})
COLUMNS = ("server", "state", "for", "latency", "uptime 24h", "restarts", "message")


def since_text(since: float | None, now: float) -> str:
    if not since:
        return ""
    seconds = max(0.0, now - since)
    if seconds < 60:
        return "<1m"  # minute resolution: a row is redrawn when something a person reads changed
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def uptime_bar(pct: float | None, width: int = 10) -> Text:
    """'█████████░ 97.1%': a bar a person reads at a glance, coloured by how bad it is."""
    if pct is None:
        return Text("no record", style="dim")
    filled = round(width * pct / 100.0)
    style = "green" if pct >= 99.9 else "yellow" if pct >= 95 else "red"
    return Text("█" * filled + "░" * (width - filled) + f" {pct:.1f}%", style=style)


def event_line(event: dict[str, Any]) -> Text | None:
    """One line per event worth a person's attention (probes and heartbeats are left out)."""
    kind = event.get("kind")
    stamp = time.strftime("%H:%M:%S", time.localtime(float(event.get("at") or time.time())))
    server = str(event.get("server") or "")
    if kind == "state":
        new = str(event.get("new"))
        line = Text(f"{stamp} {server}: {event.get('old')} → ")
        line.append(new, style=STATE_STYLE.get(new, ""))
        if event.get("reason"):
            line.append(f" ({event.get('reason')})", style="dim")
        return line
    if kind in ("notify", "action", "action_done", "process_exit", "restore", "config_corrupt", "config", "daemon",
                "report", "run"):
        detail = {k: v for k, v in event.items() if k not in ("seq", "kind", "server", "at")}
        return Text(f"{stamp} {kind} {server} {json.dumps(detail, default=str)[:160]}")
    return None


class DaemonLink:
    """The dashboard's connection to the control socket (aiohttp over the Unix socket)."""

    def __init__(self, socket_path: Path, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.socket_path)),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout),
            )
        return self._session

    async def get(self, path: str) -> tuple[int, Any]:
        async with asyncio.timeout(self.timeout):
            async with self.session().get(f"http://supervisor{path}") as response:
                return response.status, await response.json(content_type=None)

    async def post(self, path: str) -> tuple[int, Any]:
        async with asyncio.timeout(self.timeout + 60):
            async with self.session().post(f"http://supervisor{path}", json={}) as response:
                return response.status, await response.json(content_type=None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class Dashboard(App[int]):
    TITLE = "mcp-supervisor"
    CSS = """
    #banner { height: auto; padding: 0 1; background: $error; color: $text; display: none; }
    #banner.shown { display: block; }
    #servers { height: 1fr; }
    #bottom { height: 14; }
    #events { width: 2fr; border: round $primary; padding: 0 1; }
    #alerts { width: 1fr; border: round $error; padding: 0 1; }
    #summary { height: 1; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "recover", "recover selected"),
        Binding("p", "pause_resume", "pause/resume"),
        Binding("q", "quit_dashboard", "quit"),
    ]

    def __init__(self, link: DaemonLink, refresh: float = 5.0, report_every: float = 60.0) -> None:
        super().__init__()
        self.link = link
        self.refresh_every = refresh
        self.report_every = report_every
        self.servers: dict[str, dict[str, Any]] = {}
        self.uptime: dict[str, float | None] = {}
        self.recovery_rate: float | None = None
        self.connected = False
        self.events: deque[Text] = deque(maxlen=12)
        self.last_error = ""
        self._shown: dict[str, list[tuple[str, str]]] = {}
        self._summary_shown = ""
        self._alerts_shown = ""
        """row -> what each cell shows now (text, style), so only changed cells are redrawn."""

    # --- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="banner")
        yield Static("", id="summary")
        yield DataTable(id="servers", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="bottom"):
            yield Static("", id="events")
            with Vertical(id="alerts"):
                yield Static("", id="alerts-text")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#servers", DataTable)
        widths = {"server": 18, "state": 11, "for": 5, "latency": 8, "uptime 24h": 17, "restarts": 8}
        for column in COLUMNS:
            table.add_column(column, key=column, width=widths.get(column))
        self.query_one("#events", Static).border_title = "latest events"
        self.query_one("#alerts", Vertical).border_title = "needs attention"
        self.run_worker(self._follow(), name="events", exclusive=False)
        self.run_worker(self._refresh_loop(), name="refresh", exclusive=False)
        self.run_worker(self._report_loop(), name="report", exclusive=False)

    # --- data ---------------------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while True:
            await self.refresh_status()
            await asyncio.sleep(self.refresh_every if self.connected else 1.0)

    async def refresh_status(self) -> None:
        try:
            status, body = await self.link.get("/v1/status")
        except Exception as exc:  # whatever the connection does, the dashboard says so and retries
            self._disconnected(str(exc) or type(exc).__name__)
            return
        if status != 200 or not isinstance(body, dict):
            self._disconnected(f"HTTP {status}")
            return
        self._connected()
        self.servers = {str(s["name"]): s for s in body.get("servers", [])}
        self.render_all(body)

    async def _report_loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # no record (404) or no daemon: the uptime column says so
                status, body = await self.link.get("/v1/report?period=day")
                if status == 200 and isinstance(body, dict):
                    self.apply_report(body.get("report", body))
            await asyncio.sleep(self.report_every)

    def apply_report(self, report: Any) -> None:
        """The day's uptime per server and recovery rate, from a REPORT (servers as a map or a list)."""
        if not isinstance(report, dict):
            return
        per_server = report.get("servers") or {}
        if isinstance(per_server, list):
            per_server = {str(s.get("name")): s for s in per_server if isinstance(s, dict)}
        if isinstance(per_server, dict):
            self.uptime = {str(k): v.get("uptime_pct") if isinstance(v, dict) else None for k, v in per_server.items()}
        rate = report.get("recovery_rate")
        self.recovery_rate = float(rate) if isinstance(rate, int | float) else None

    async def _follow(self) -> None:
        """Follow /v1/events; on any break say so and reconnect (with a short pause)."""
        while True:
            try:
                async with self.link.session().get("http://supervisor/v1/events") as response:
                    if response.status != 200:
                        raise aiohttp.ClientError(f"HTTP {response.status}")
                    self._connected()
                    await self.refresh_status()
                    parser = SseParser()
                    async for chunk in response.content.iter_any():
                        for message in parser.feed(chunk):
                            with contextlib.suppress(ValueError):
                                self.on_daemon_event(json.loads(message.data))
                self._disconnected("the event stream ended")
            except Exception as exc:  # aiohttp turns a connection closed mid-line into RuntimeError
                self._disconnected(str(exc) or type(exc).__name__)
            await asyncio.sleep(1.0)

    def on_daemon_event(self, event: dict[str, Any]) -> None:
        if not isinstance(event, dict):
            return
        name = event.get("server")
        if event.get("kind") == "state" and isinstance(name, str) and name in self.servers:
            server = self.servers[name]
            server["state"] = event.get("new")
            server["since"] = event.get("at")
            if event.get("reason"):
                server["reason"] = event.get("reason")
            self.render_all(None)
        elif event.get("kind") == "config":
            self.run_worker(self.refresh_status(), exclusive=False)
        line = event_line(event)
        if line is not None:
            self.events.appendleft(line)
            self.query_one("#events", Static).update(Text("\n").join(self.events))

    def _connected(self) -> None:
        if not self.connected:
            self.connected = True
            banner = self.query_one("#banner", Static)
            banner.remove_class("shown")
            banner.update("")

    def _disconnected(self, why: str) -> None:
        self.connected = False
        self.last_error = why
        banner = self.query_one("#banner", Static)
        banner.update(Text(f"supervisor not answering at {self.link.socket_path} ({why}); reconnecting…"))
        banner.add_class("shown")
        if self.servers:
            self.query_one("#summary", Static).update(Text("last known states (stale)", style="dim"))

    # --- rendering ----------------------------------------------------------------------------

    def render_all(self, status: dict[str, Any] | None) -> None:
        now = time.time()
        table = self.query_one("#servers", DataTable)
        names = list(self.servers)
        for key in [str(k.value) for k in list(table.rows)]:
            if key not in self.servers:
                table.remove_row(key)
                self._shown.pop(key, None)
        for name in names:
            server = self.servers[name]
            state = "maintenance" if server.get("maintenance") else str(server.get("state"))
            latency = server.get("latency_ms")
            message = str(maintenance_text(server) or server.get("message") or server.get("reason") or "")
            cells = [
                Text(name, style="bold" if server.get("critical", True) else ""),
                Text(state, style=STATE_STYLE.get(state, "")),
                Text(since_text(server.get("since"), now)),
                Text(f"{latency:.0f} ms" if isinstance(latency, int | float) else "–"),
                uptime_bar(self.uptime.get(name)),
                Text(str(server.get("restarts", server.get("attempt", 0)) or 0)),
                Text(message[:120]),
            ]
            shown = self._shown.get(name)
            if shown is None:
                table.add_row(*cells, key=name)
                self._shown[name] = [(c.plain, str(c.style)) for c in cells]
                continue
            for index, (column, cell) in enumerate(zip(COLUMNS, cells, strict=True)):
                seen = (cell.plain, str(cell.style))
                if shown[index] != seen:  # an unchanged cell costs no redraw
                    table.update_cell(name, column, cell)
                    shown[index] = seen
        ready = sum(1 for s in self.servers.values() if s.get("state") in ("healthy", "degraded"))
        summary = Text(f"{ready}/{len(self.servers)} healthy")
        if self.recovery_rate is not None:
            summary.append(f" · recovery success today {100 * self.recovery_rate:.0f}%")  # a fraction 0..1
        if status is not None and status.get("daemon", {}).get("summary"):
            summary.append(f" · {status['daemon']['summary']}", style="dim")
        if summary.plain != self._summary_shown:
            self._summary_shown = summary.plain
            self.query_one("#summary", Static).update(summary)
        alerts = [
            Text.assemble((f"{n}: ", "bold"), (str(s.get("state")), STATE_STYLE.get(str(s.get("state")), "")),
                          f"\n  {s.get('hint') or s.get('message') or s.get('reason') or ''}"[:200])
            for n, s in self.servers.items() if s.get("state") in ALERT_STATES
        ]
        alert_text = Text("\n").join(alerts) if alerts else Text("nothing", style="dim")
        if alert_text.plain != self._alerts_shown:
            self._alerts_shown = alert_text.plain
            self.query_one("#alerts-text", Static).update(alert_text)

    # --- keys ---------------------------------------------------------------------------------

    def selected(self) -> str | None:
        table = self.query_one("#servers", DataTable)
        if not table.row_count:
            return None
        with contextlib.suppress(Exception):
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        return None

    async def action_recover(self) -> None:
        name = self.selected()
        if name:
            self.notify(f"recovering {name}…")
            self.run_worker(self._command(name, "recover"), exclusive=False)

    async def action_pause_resume(self) -> None:
        name = self.selected()
        if name:
            verb = "resume" if self.servers.get(name, {}).get("state") == "paused" else "pause"
            self.run_worker(self._command(name, verb), exclusive=False)

    async def _command(self, name: str, verb: str) -> None:
        try:
            status, body = await self.link.post(f"/v1/servers/{name}/{verb}")
        except Exception as exc:
            self.notify(f"{verb} {name}: {exc}", severity="error")
            return
        if status >= 400:
            message = (body or {}).get("error", {}).get("message", f"HTTP {status}") if isinstance(body, dict) else status
            self.notify(f"{verb} {name}: {message}", severity="error")
        else:
            self.notify(f"{verb} {name}: done")
        await self.refresh_status()

    async def action_quit_dashboard(self) -> None:
        await self.link.close()
        self.exit(0)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from mcp_supervisor.cli.common import socket_path

    app = Dashboard(DaemonLink(socket_path(args)), refresh=max(0.5, float(args.refresh)))
    return int(app.run() or 0)
