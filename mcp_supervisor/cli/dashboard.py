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

from mcp_supervisor.cli.render import auth_text, maintenance_text
from mcp_supervisor.event_text import QUIET_KINDS, clock, sentence, tone
from mcp_supervisor.sse import SseParser

STATE_STYLE = {
    "healthy": "bold green",
    "degraded": "bold yellow",
    "rate_limited": "yellow",
    "drifted": "bold magenta",
    "starting": "dim",
    "paused": "dim",
    "recovering": "bold yellow",
    "backoff": "bold yellow",
    "failed": "bold red",
    "fallback": "bold magenta",
    "needs_human": "bold red reverse",
}
_TONE_STYLE = {"bad": "red", "good": "green"}
ALERT_STATES = frozenset({"failed", "needs_human", "fallback", "backoff", "recovering"})
COLUMNS = ("server", "state", "for", "latency", "uptime 24h", "restarts", "message")


def since_text(since: float | None, now: float) -> str:
    """``<1m``, ``7m``, ``20m``, ``3h``, ``2.5d``: how long a server has been in its state.

    Why coarser as it grows: every changed cell repaints the whole table, and 50 servers each
    ticking once a minute meant a repaint on nearly every status read of an idle dashboard. A
    person needs minutes at first, then tens of minutes, then hours.
    """
    if not since:
        return ""
    seconds = max(0.0, now - since)
    if seconds < 60:
        return "<1m"
    if seconds < 600:
        return f"{seconds / 60:.0f}m"
    if seconds < 3600:
        return f"{int(seconds // 600) * 10}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h"
    return f"{seconds / 86400:.1f}d"


LATENCY_STEPS = (10.0, 100.0, 1000.0)
HYSTERESIS = 1.5
"""A shown step changes only once the figure is this factor past the step's bounds."""
SMOOTHING = 0.3
"""Weight of the newest latency in the shown (exponentially smoothed) figure."""


def latency_step(ms: float, shown: int | None = None) -> int:
    """The step ``ms`` falls in (0: under 10 ms, ... 3: a second or more), sticking to ``shown``
    while ``ms`` stays within HYSTERESIS of that step's bounds."""
    step = next((i for i, bound in enumerate(LATENCY_STEPS) if ms < bound), len(LATENCY_STEPS))
    if shown is None or step == shown:
        return step
    low = LATENCY_STEPS[shown - 1] if shown > 0 else 0.0
    high = LATENCY_STEPS[shown] if shown < len(LATENCY_STEPS) else float("inf")
    return shown if low / HYSTERESIS <= ms < high * HYSTERESIS else step


def latency_text(ms: Any, step: int | None = None) -> str:
    """``<10 ms``, ``<100 ms``, ``<1 s``, ``1.2 s``: what a person needs at a glance.

    Why steps (of a smoothed figure, with hysteresis) and not the last probe's figure: latency
    jitters (2 ms, 3 ms, 2 ms; far more on a loaded machine) and every changed cell makes the whole
    table repaint; at 50 servers re-read every few seconds that repainting was most of an idle
    dashboard's CPU. A step changes when a server really got slower, which is what a person reads.
    """
    if not isinstance(ms, int | float):
        return "–"
    step = latency_step(float(ms)) if step is None else step
    if step < len(LATENCY_STEPS):
        bound = LATENCY_STEPS[step]
        return f"<{bound / 1000:.0f} s" if bound >= 1000 else f"<{bound:.0f} ms"
    return f"{ms / 1000:.1f} s" if ms < 10_000 else f"{ms / 1000:.0f} s"


def uptime_bar(pct: float | None, width: int = 10) -> Text:
    """'█████████░ 97.1%': a bar a person reads at a glance, coloured by how bad it is."""
    if pct is None:
        return Text("no record", style="dim")
    filled = round(width * pct / 100.0)
    style = "green" if pct >= 99.9 else "yellow" if pct >= 95 else "red"
    return Text("█" * filled + "░" * (width - filled) + f" {pct:.1f}%", style=style)


def event_line(event: dict[str, Any]) -> Text | None:
    """One sentence per event worth a person's attention (probes and bookkeeping are left out)."""
    if event.get("kind") in QUIET_KINDS:
        return None
    line = Text(f"{clock(event)} ")
    line.append(sentence(event), style=_TONE_STYLE.get(tone(event), ""))
    return line


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
        self._latency: dict[str, float] = {}
        self._latency_step: dict[str, int] = {}
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
                            if message.event in QUIET_KINDS:  # probes, several a second: not even parsed
                                continue
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

    def _latency_cell(self, name: str, latest: Any, fresh: bool) -> str:
        """The latency shown: smoothed over the status reads (``fresh``: this render brings one),
        in steps that do not flicker (``latency_step``)."""
        if not isinstance(latest, int | float):
            smoothed = self._latency.get(name)
        else:
            before = self._latency.get(name)
            smoothed = float(latest) if before is None else before + (SMOOTHING * (float(latest) - before) if fresh
                                                                       else 0.0)
            self._latency[name] = smoothed
        if smoothed is None:
            return latency_text(None)
        step = latency_step(smoothed, self._latency_step.get(name))
        self._latency_step[name] = step
        return latency_text(smoothed, step)

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
            latency = self._latency_cell(name, server.get("latency_ms"), status is not None)
            # a healthy server's probe message ("answered, protocol ..., 3 tools") says nothing the
            # state does not, and it alternates with every tools check: each change repaints the table
            quiet = state == "healthy"
            message = str(maintenance_text(server) or ("" if quiet else server.get("message") or server.get("reason"))
                          or "")
            if isinstance(server.get("auth"), dict):  # times only (auth_facts), never the token
                message = f"{auth_text(server['auth'], now)} {message}".strip()
            cells = [
                Text(name, style="bold" if server.get("critical", True) else ""),
                Text(state, style=STATE_STYLE.get(state, "")),
                Text(since_text(server.get("since"), now)),
                Text(latency),
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
        ready = sum(1 for s in self.servers.values() if s.get("state") in ("healthy", "degraded", "rate_limited"))
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
