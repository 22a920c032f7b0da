// fedgate status page: polls GET /v1/health/global (one filtered, bounded page of it)
// and GET /v1/trends with the admin token as a bearer header, and draws the federation:
// the summary and what needs attention first, then the clusters and services of the
// page, searchable and filtered by state. Plain JS, no build step, no third-party code.
// The token comes from the login form (or "#token=..." in the address, which is never
// sent to the server) and is kept in sessionStorage: this tab only.
"use strict";

(function () {
  const REFRESH_MS = 1500;
  const PAGE_SIZE = 50; // clusters and services per page
  const MATRIX_MAX = 24; // more clusters on a page: one compact row per service
  const GATEWAYS_MAX = 40; // more gateways on a page: only those with an issue
  const ATTENTION_MAX = 12;
  const KEY = "fedgate.adminToken";
  const SVG = "http://www.w3.org/2000/svg";
  const view = { q: "", state: "", offset: 0 };
  const SYMBOL = { healthy: "●", degraded: "▲", unhealthy: "✖", unknown: "?" };
  let timer = null;
  let inflight = false;

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function badge(state) {
    const s = SYMBOL[state] ? state : "unknown";
    return el("span", { class: `badge ${s}`, "data-state": s }, `${SYMBOL[s]} ${s}`);
  }

  function token() {
    return sessionStorage.getItem(KEY);
  }

  function takeTokenFromHash() {
    const m = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
    if (m) {
      sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const neg = seconds < 0;
    let s = Math.abs(seconds);
    let out;
    if (s < 90) out = `${Math.round(s)}s`;
    else if (s < 5400) out = `${Math.round(s / 60)}m`;
    else if (s < 172800) out = `${(s / 3600).toFixed(1)}h`;
    else out = `${Math.round(s / 86400)}d`;
    return neg ? `expired ${out} ago` : out;
  }

  function pct(x) {
    return x === null || x === undefined ? "–" : `${(x * 100).toFixed(x < 0.1 && x > 0 ? 1 : 0)}%`;
  }

  // ------------------------------------------------------------------ rendering

  function renderSummary(h) {
    const s = h.summary;
    const c = h.convergence;
    const tiles = [
      ["clusters", s.clusters, "clusters", null],
      ["healthy", s.healthy, "healthy", null],
      ["degraded", s.degraded, "degraded", s.degraded ? "warn" : null],
      ["unhealthy", s.unhealthy, "unhealthy", s.unhealthy ? "bad" : null],
      ["unknown", s.unknown, "unknown", null],
      ["services", `${s.services_serving}/${s.services}`, "services serving", s.services_serving < s.services ? "bad" : null],
      ["gateways", s.gateways, "live gateways", s.gateways ? null : "bad"],
      ["convergence", c.share === null ? "–" : pct(c.share), `gateways on config revision ${c.config_revision}`, c.share !== null && c.share < 1 ? "warn" : null],
      ["certificates", expiringTotal(h), "certificates expiring or failing", expiringTotal(h) ? "bad" : null],
    ];
    $("summary").replaceChildren(
      ...tiles.map(([id, value, label, cls]) =>
        el("li", { class: cls, "data-tile": id },
          el("span", { class: "value" }, value), el("span", { class: "label" }, label)))
    );
  }

  function expiringTotal(h) {
    const c = h.certificates;
    return c.expiring_total === undefined ? c.expiring.length : c.expiring_total;
  }

  function notHealthy(counts) {
    return (counts.degraded || 0) + (counts.unhealthy || 0) + (counts.unknown || 0);
  }

  function renderAttention(h) {
    const items = [];
    const rank = { unhealthy: 0, degraded: 1, unknown: 2, healthy: 3 };
    const clusters = h.clusters.filter((c) => c.state !== "healthy")
      .sort((a, b) => rank[a.state] - rank[b.state]);
    for (const c of clusters) {
      items.push(el("li", { "data-attention": "cluster", "data-state": c.state }, badge(c.state),
        el("span", { class: "what" }, `cluster ${c.name}`),
        el("span", { class: "why" }, `${c.cloud} ${c.region} · ${c.reasons.join("; ") || c.state}`)));
    }
    const services = h.services.filter((x) => x.state !== "healthy")
      .sort((a, b) => rank[a.state] - rank[b.state]);
    for (const x of services) {
      const bad = x.clusters.filter((r) => r.state !== "healthy").map((r) => `${r.cluster} ${r.state}`);
      items.push(el("li", { "data-attention": "service", "data-state": x.state }, badge(x.state),
        el("span", { class: "what" }, `service ${x.name}`),
        el("span", { class: "why" }, bad.length ? bad.slice(0, 4).join(", ") + (bad.length > 4 ? ` +${bad.length - 4}` : "") : x.state)));
    }
    const lagging = h.convergence.lagging_total === undefined ? h.convergence.lagging.length : h.convergence.lagging_total;
    if (lagging) items.push(el("li", { "data-attention": "convergence" }, el("span", { class: "badge warn" }, "▲ behind"),
      el("span", { class: "what" }, `${lagging} gateway${lagging === 1 ? "" : "s"}`),
      el("span", { class: "why" }, `not on config revision ${h.convergence.config_revision}`)));
    if (expiringTotal(h)) items.push(el("li", { "data-attention": "certificates" }, el("span", { class: "badge bad" }, "✖ certs"),
      el("span", { class: "what" }, `${expiringTotal(h)} certificate${expiringTotal(h) === 1 ? "" : "s"}`),
      el("span", { class: "why" }, "expiring, expired or failing renewal")));
    const shown = items.slice(0, ATTENTION_MAX);
    const s = h.summary;
    const sick = notHealthy(s) + (s.services_by_state ? notHealthy(s.services_by_state) : 0);
    const more = Math.max(items.length - shown.length, sick - clusters.length - services.length);
    if (more > 0) shown.push(el("li", { class: "more" }, `and ${more} more: choose “not healthy” below`));
    if (!shown.length) shown.push(el("li", { class: "ok" }, "● Everything is healthy."));
    $("attention").replaceChildren(...shown);
  }

  function sparkline(values, max) {
    const w = 300, hgt = 40;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    if (values.length) {
      const top = Math.max(max, ...values) || 1;
      const step = values.length > 1 ? w / (values.length - 1) : w;
      const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(hgt - 2 - (v / top) * (hgt - 4)).toFixed(1)}`);
      if (values.length === 1) pts.push(`${w},${pts[0].split(",")[1]}`);
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", pts.join(" "));
      const area = document.createElementNS(SVG, "polygon");
      area.setAttribute("points", `0,${hgt} ${pts.join(" ")} ${w},${hgt}`);
      svg.append(area, line);
    }
    return svg;
  }

  function renderTrends(t) {
    const box = $("trends");
    if (!t) { box.replaceChildren(el("p", { class: "empty" }, "trends unavailable")); return; }
    const pts = t.points;
    if (pts.length < 1) {
      box.replaceChildren(el("p", { class: "empty" }, `collecting: one point every ${t.interval_seconds} s`));
      return;
    }
    const last = pts[pts.length - 1];
    const rows = [
      ["requests/s", pts.map((p) => p.requests_per_second), 1, last.requests_per_second.toFixed(1), false],
      ["error rate", pts.map((p) => p.error_rate), 0.05, pct(last.error_rate), last.error_rate > 0.01],
      ["failovers", pts.map((p) => p.failovers), 1, String(pts.reduce((a, p) => a + p.failovers, 0)), pts.some((p) => p.failovers > 0)],
    ];
    box.replaceChildren(...rows.map(([label, values, max, now, bad]) =>
      el("div", { class: bad ? "plot bad" : "plot", "data-trend": label },
        el("span", { class: "label" }, label), sparkline(values, max), el("span", { class: "now" }, now))));
  }

  function renderPaging(h) {
    const p = h.page;
    if (!p) { $("paging").textContent = ""; return; }
    const c = p.clusters, s = p.services;
    const range = (x) => x.returned ? `${p.offset + 1}–${p.offset + x.returned} of ${x.total}` : `0 of ${x.total}`;
    $("paging").textContent = `clusters ${range(c)} · services ${range(s)}`;
    $("prev").disabled = p.offset === 0;
    $("next").disabled = c.next_offset === null && s.next_offset === null;
  }

  function renderClusters(h) {
    const byCloud = new Map();
    for (const c of h.clusters) {
      if (!byCloud.has(c.cloud)) byCloud.set(c.cloud, new Map());
      const envs = byCloud.get(c.cloud);
      if (!envs.has(c.environment)) envs.set(c.environment, []);
      envs.get(c.environment).push(c);
    }
    const groups = [];
    for (const [cloud, envs] of byCloud) {
      const envNodes = [];
      for (const [env, clusters] of envs) {
        envNodes.push(el("div", { class: "env", "data-environment": env },
          el("h4", {}, `environment: ${env}`),
          el("div", { class: "cards" }, ...clusters.map(card))));
      }
      groups.push(el("section", { class: "cloud", "data-cloud": cloud, "aria-label": `cloud ${cloud}` },
        el("h3", {}, cloud), el("div", { class: "envs" }, ...envNodes)));
    }
    if (!groups.length) {
      const filtered = view.q || view.state || view.offset;
      groups.push(el("p", {}, filtered ? "No cluster matches." : "No cluster is registered yet (fedgate apply)."));
    }
    $("clusters").replaceChildren(...groups);
  }

  function card(c) {
    const gws = c.gateways;
    const certs = gws.filter((g) => g.cert_warning || g.acme_warning).length;
    const stale = gws.filter((g) => !g.converged).length;
    return el("article", { class: "card", "data-cluster": c.name, "data-state": c.state, "aria-label": `cluster ${c.name}: ${c.state}` },
      el("div", { class: "row" }, el("span", { class: "name" }, c.name), badge(c.state)),
      el("div", { class: "row" }, el("span", {}, `region ${c.region}`), el("span", {}, `tier ${c.tier}`)),
      el("div", { class: "row" }, el("span", {}, `score ${c.score.toFixed(2)}`),
        el("span", {}, `${c.live_gateways} gateway${c.live_gateways === 1 ? "" : "s"}`)),
      el("div", { class: "row" },
        el("span", {}, `services ${c.services.healthy}/${c.services.total} healthy`),
        stale ? el("span", { class: "badge warn" }, `${stale} behind`) : null,
        certs ? el("span", { class: "badge bad" }, `${certs} cert`) : null),
      c.reasons.length ? el("ul", { class: "reasons" }, ...c.reasons.map((r) => el("li", {}, r))) : null);
  }

  function renderMatrix(h) {
    if (h.clusters.length > MATRIX_MAX) { renderServiceList(h); return; }
    $("matrix-note").hidden = true;
    const clusters = h.clusters.map((c) => c.name);
    const head = el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "service"),
      ...clusters.map((n) => el("th", { scope: "col" }, n))));
    const rows = h.services.map((s) => {
      const byCluster = new Map(s.clusters.map((x) => [x.cluster, x]));
      return el("tr", { "data-service": s.name },
        el("th", { scope: "row" }, s.name, " ", badge(s.state)),
        ...clusters.map((n) => {
          const x = byCluster.get(n);
          if (!x) return el("td", { class: "na" }, el("span", { class: "visually-hidden" }, "not deployed"), "·");
          return el("td", { class: "cell", "data-cluster": n, "data-state": x.state },
            badge(x.state),
            el("span", { class: "small" }, `${x.healthy_endpoints}/${x.total_endpoints} endpoints`),
            el("span", { class: "small" }, `err ${pct(x.error_rate)} · ${x.latency_ms.toFixed(1)} ms · ${x.observers} obs`));
        }));
    });
    const body = rows.length ? rows : [el("tr", {}, el("td", { colspan: clusters.length + 1 }, "No service is registered yet."))];
    $("matrix").replaceChildren(el("caption", { class: "visually-hidden" }, "state of every service in every cluster"), head, el("tbody", {}, ...body));
  }

  function renderServiceList(h) {
    // at scale: one row per service, the clusters where it is not healthy as chips
    const note = $("matrix-note");
    note.hidden = false;
    note.textContent = `${h.clusters.length} clusters on this page: one row per service, with the clusters where it is not healthy.`;
    const head = el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "service"),
      el("th", { scope: "col" }, "healthy in"), el("th", { scope: "col" }, "not healthy in")));
    const rows = h.services.map((s) => {
      const bad = s.clusters.filter((x) => x.state !== "healthy");
      const good = s.clusters.length - bad.length;
      return el("tr", { "data-service": s.name },
        el("th", { scope: "row" }, s.name, " ", badge(s.state)),
        el("td", {}, `${good} of ${s.clusters.length} clusters`),
        el("td", {}, el("div", { class: "chips" }, ...bad.map((x) =>
          el("span", { class: `badge ${x.state}`, "data-cluster": x.cluster, "data-state": x.state },
            `${SYMBOL[x.state] || "?"} ${x.cluster} ${x.healthy_endpoints}/${x.total_endpoints}`)))));
    });
    const body = rows.length ? rows : [el("tr", {}, el("td", { colspan: 3 }, "No service matches."))];
    $("matrix").replaceChildren(el("caption", { class: "visually-hidden" }, "services and where they are not healthy"), head, el("tbody", {}, ...body));
  }

  function gatewayIssue(g) {
    return !g.converged || g.cert_warning || g.acme_warning || g.vault_ok === false || g.stale;
  }

  function renderGateways(h) {
    const head = el("thead", {}, el("tr", {},
      ...["gateway", "cluster", "applied revision", "certificate expires in", "vault", "state"].map((t) => el("th", { scope: "col" }, t))));
    const rows = [];
    const all = h.clusters.reduce((n, c) => n + c.gateways.length, 0);
    const onlyIssues = all > GATEWAYS_MAX;
    const note = $("gateways-note");
    note.hidden = !onlyIssues;
    if (onlyIssues) note.textContent = `${all} gateways in the clusters of this page: only those behind, with a certificate or Vault problem, or serving a snapshot are listed.`;
    for (const c of h.clusters) {
      for (const g of c.gateways) {
        if (onlyIssues && !gatewayIssue(g)) continue;
        const vault = g.vault_ok === null ? el("span", {}, "not used") : g.vault_ok ? el("span", { class: "badge ok" }, "reachable") : el("span", { class: "badge bad" }, "unreachable");
        const cert = el("span", { class: g.cert_warning ? "badge bad" : "" },
          g.cert_not_after === null ? "no certificate" : duration(g.cert_expires_in),
          g.renewal_failing ? " · renewal failing" : "",
          g.acme_warning ? el("span", { class: "badge bad" }, ` · ACME ${g.acme_name} ${duration(g.acme_expires_in)}`) : "");
        const rev = el("span", { class: g.converged ? "badge ok" : "badge warn" },
          `${g.applied_revision}${g.converged ? " ✓ newest" : ` (newest ${h.convergence.config_revision})`}`);
        rows.push(el("tr", { "data-gateway": g.id },
          el("th", { scope: "row" }, g.id), el("td", {}, c.name), el("td", {}, rev),
          el("td", {}, cert), el("td", {}, vault),
          el("td", {}, g.stale ? el("span", { class: "badge warn" }, "serving a snapshot") : "live")));
      }
    }
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6 }, onlyIssues ? "No gateway with an issue on this page." : "No live gateway.")));
    $("gateways").replaceChildren(el("caption", { class: "visually-hidden" }, "live gateways"), head, el("tbody", {}, ...rows));
  }

  function renderRejected(h) {
    $("rejected-section").hidden = h.rejected.length === 0;
    // (h.rejected holds at most one page; rejected_total counts them all)
    $("rejected").replaceChildren(...h.rejected.map((r) => el("li", {}, `${r.key} (revision ${r.revision}): ${r.error}`)));
  }

  // the federation's authoritative DNS (docs/dns.md): what each service's hosts resolve to now
  function renderDns(h) {
    const dns = h.dns || { enabled: false };
    $("dns-section").hidden = !dns.enabled;
    if (!dns.enabled) return;
    const zones = dns.zones.map((z) => `${z.zone} (NS ${z.ns.map((n) => n.name).join(", ") || "none"})`);
    $("dns-zones").textContent = zones.length ? `zones: ${zones.join("; ")}` : "no zone";
    const head = el("thead", {}, el("tr", {},
      ...["service", "hosts", "strategy", "answer", "clusters", "ttl", "why"].map((t) => el("th", { scope: "col" }, t))));
    const rows = dns.services.map((s) => {
      const answer = s.cname ? `CNAME ${s.cname}` : [...s.ipv4, ...s.ipv6].join(" ") || "no address";
      return el("tr", { "data-dns-service": s.service },
        el("th", { scope: "row" }, s.service), el("td", {}, s.hosts.join(" ")), el("td", {}, s.strategy),
        el("td", {}, el("span", { class: s.clusters.length ? "badge ok" : "badge bad" }, answer)),
        el("td", {}, s.clusters.join(", ")), el("td", {}, `${s.ttl} s`), el("td", { class: "small" }, s.reason));
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 7 }, "No route host lies in a zone.")));
    $("dns").replaceChildren(el("caption", { class: "visually-hidden" }, "DNS answers"), head, el("tbody", {}, ...rows));
  }

  function render(h, trends) {
    $("federation-name").textContent = h.federation ? `federation ${h.federation}` : "federation status";
    $("revision").textContent = `revision ${h.revision} · config ${h.config_revision}`;
    const src = $("source");
    src.textContent = h.stale ? `view from ${h.source} (stale)` : `view from ${h.source}`;
    src.className = h.stale ? "stale" : "";
    renderSummary(h);
    renderAttention(h);
    renderTrends(trends);
    renderPaging(h);
    renderClusters(h);
    renderMatrix(h);
    renderGateways(h);
    renderRejected(h);
    renderDns(h);
    const upd = $("updated");
    upd.textContent = `updated ${new Date(h.generated_at * 1000).toLocaleTimeString()}`;
    upd.className = "";
    document.body.dataset.revision = String(h.revision);
  }

  // ------------------------------------------------------------------ polling

  function showLogin(message) {
    stop();
    $("dashboard").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token-input").focus();
  }

  function showDashboard() {
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("logout").hidden = false;
  }

  async function refresh() {
    if (inflight) return;
    const t = token();
    if (!t) { showLogin(""); return; }
    inflight = true;
    try {
      const headers = { Authorization: `Bearer ${t}`, Accept: "application/json" };
      const params = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(view.offset) });
      if (view.q) params.set("q", view.q);
      if (view.state) params.set("state", view.state);
      const [resp, trendsResp] = await Promise.all([
        fetch(`/v1/health/global?${params}`, { headers, cache: "no-store" }),
        fetch("/v1/trends", { headers, cache: "no-store" }).catch(() => null),
      ]);
      if (resp.status === 401) {
        sessionStorage.removeItem(KEY);
        showLogin("The gateway refused this token.");
        return;
      }
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const body = await resp.json();
      const trends = trendsResp && trendsResp.ok ? await trendsResp.json() : null;
      showDashboard();
      render(body, trends);
    } catch (err) {
      const upd = $("updated");
      upd.textContent = `gateway unreachable (${err.message}); retrying`;
      upd.className = "offline";
    } finally {
      inflight = false;
    }
  }

  function start() {
    stop();
    refresh();
    timer = window.setInterval(refresh, REFRESH_MS);
  }

  function stop() {
    if (timer !== null) window.clearInterval(timer);
    timer = null;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("interval").textContent = (REFRESH_MS / 1000).toString();
    takeTokenFromHash();
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("token-input").value.trim();
      if (!value) return;
      sessionStorage.setItem(KEY, value);
      $("token-input").value = "";
      start();
    });
    let typing = null;
    $("filters").addEventListener("submit", (ev) => ev.preventDefault());
    $("search").addEventListener("input", () => {
      if (typing !== null) window.clearTimeout(typing);
      typing = window.setTimeout(() => { view.q = $("search").value.trim(); view.offset = 0; refresh(); }, 250);
    });
    $("state-filter").addEventListener("change", () => { view.state = $("state-filter").value; view.offset = 0; refresh(); });
    $("prev").addEventListener("click", () => { view.offset = Math.max(0, view.offset - PAGE_SIZE); refresh(); });
    $("next").addEventListener("click", () => { view.offset += PAGE_SIZE; refresh(); });
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      showLogin("");
    });
    if (token()) start(); else showLogin("");
  });
})();
