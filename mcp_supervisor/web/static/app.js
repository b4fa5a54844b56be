// The status page: reads /api/summary, re-reads it when /api/events says something changed.
// Everything from the server is inserted as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function ago(ts) {
  if (!ts) return "";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return Math.round(s) + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  if (s < 86400) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function duration(s) {
  if (s === null || s === undefined) return "ongoing";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function cellClass(pct) {
  if (pct === null || pct === undefined) return "cell";
  if (pct >= 99.9) return "cell up";
  if (pct >= 95) return "cell partial";
  return "cell down";
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleString([], {month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit"});
}

// The token's kind and times (the server sends nothing else about it): never the token.
function authLine(a) {
  const parts = [a.expires_at ? "token until " + clock(a.expires_at) : "no token"];
  if (a.last_refresh) parts.push("refreshed " + clock(a.last_refresh));
  if (a.next_refresh) parts.push("next refresh " + clock(a.next_refresh));
  if (a.refresh_expires_at) parts.push("refresh token until " + clock(a.refresh_expires_at));
  if (a.grant) parts.push("grant " + a.grant);
  return (a.type || "oauth") + ": " + parts.join(" · ");
}

function renderServer(s) {
  const card = el("div", "server");
  card.dataset.server = s.name;
  card.dataset.state = s.state;
  const head = el("div", "head");
  head.append(el("span", "name", s.name), el("span", "state " + s.state, s.state.replace("_", " ")));
  const meta = [];
  if (s.since) meta.push("for " + ago(s.since));
  if (s.latency_ms !== null && s.latency_ms !== undefined) meta.push(s.latency_ms.toFixed(1) + " ms");
  meta.push(s.uptime_pct === null ? "uptime: no record yet" : "uptime " + s.uptime_pct.toFixed(2) + " %");
  if (!s.critical) meta.push("not critical");
  head.append(el("span", "meta", meta.join(" · ")));
  card.append(head);
  if (s.message && s.state !== "healthy") card.append(el("div", "message", s.message));
  if (s.auth) card.append(el("div", "auth", authLine(s.auth)));
  const bar = el("div", "bar");
  for (const day of s.uptime_days) {
    const cell = el("div", cellClass(day.uptime_pct));
    cell.title = day.day + ": " + (day.uptime_pct === null ? "no data" : day.uptime_pct.toFixed(2) + " %");
    bar.append(cell);
  }
  const legend = el("div", "barlegend");
  legend.append(el("span", null, s.uptime_days.length + " days ago"), el("span", null, "today"));
  card.append(bar, legend);
  return card;
}

function render(summary) {
  document.title = summary.title;
  $("title").textContent = summary.title;
  const overall = $("overall");
  overall.textContent = summary.ready ? "all critical MCP servers ready" : "not ready";
  overall.className = "pill " + (summary.ready ? "ok" : "bad");
  const servers = $("servers");
  servers.replaceChildren(...summary.servers.map(renderServer));
  const incidents = $("incidents");
  if (summary.incidents.length === 0) {
    incidents.replaceChildren(el("li", "muted", "none"));
  } else {
    incidents.replaceChildren(...summary.incidents.map((i) => {
      const when = new Date(i.started_at * 1000).toLocaleString();
      const what = i.resolved_at ? "recovered in " + duration(i.duration_s) : "ongoing (" + (i.state || "down") + ")";
      return el("li", null, i.server + " · " + when + " · " + (i.failure_class || "failure") + " · " + what);
    }));
  }
  if (summary.report) {
    const r = summary.report;
    const parts = [r.health || "", "MCPs healthy " + (r.servers_healthy ?? "?") + "/" + (r.servers_total ?? "?")];
    if (r.uptime_pct !== null && r.uptime_pct !== undefined) parts.push("uptime " + r.uptime_pct.toFixed(2) + " %");
    if (r.mttr_s !== null && r.mttr_s !== undefined) parts.push("MTTR " + duration(r.mttr_s));
    if (r.recommendations && r.recommendations.length) parts.push(r.recommendations[0]);
    $("report").textContent = parts.join(" · ");
    $("report-section").hidden = false;
  }
  $("updated").textContent = "updated " + new Date(summary.generated_at * 1000).toLocaleTimeString();
}

let pending = null;
async function refresh() {
  try {
    const response = await fetch("/api/summary", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    return true;
  } catch (err) {
    $("banner").hidden = false;
    return false;
  }
}

function scheduleRefresh() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; refresh(); }, 100);
}

function follow() {
  const source = new EventSource("/api/events");
  source.addEventListener("hello", () => { $("banner").hidden = true; $("live-note").hidden = true; refresh(); });
  source.addEventListener("change", scheduleRefresh);
  source.onerror = async () => {
    if (source.readyState !== EventSource.CLOSED) {
      $("banner").hidden = false;  // EventSource reconnects by itself; "hello" hides the banner again
      return;
    }
    // refused (a 503: too many live views are open) and never retried by the browser: if the
    // supervisor still answers, say that only live updates wait, and try again a little later
    if (await refresh()) {
      $("banner").hidden = true;
      $("live-note").hidden = false;
    }
    setTimeout(follow, 10000 + Math.random() * 10000);
  };
}

refresh();
follow();
setInterval(refresh, 60000);  // keeps "for N min" fresh and catches anything a dropped stream missed
