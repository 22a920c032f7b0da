// fedgate status page: polls GET /v1/health/global with the admin token as a bearer
// header and draws the federation. Plain JS, no build step, no third-party code.
// The token comes from the login form (or "#token=..." in the address, which is never
// sent to the server) and is kept in sessionStorage: this tab only.
"use strict";

(function () {
  const REFRESH_MS = 1500;
  const KEY = "fedgate.adminToken";
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
      ["certificates", h.certificates.expiring.length, "certificates expiring or failing", h.certificates.expiring.length ? "bad" : null],
    ];
    $("summary").replaceChildren(
      ...tiles.map(([id, value, label, cls]) =>
        el("li", { class: cls, "data-tile": id },
          el("span", { class: "value" }, value), el("span", { class: "label" }, label)))
    );
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
    if (!groups.length) groups.push(el("p", {}, "No cluster is registered yet (fedgate apply)."));
    $("clusters").replaceChildren(...groups);
  }

  function card(c) {
    const gws = c.gateways;
    const certs = gws.filter((g) => g.cert_warning).length;
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

  function renderGateways(h) {
    const head = el("thead", {}, el("tr", {},
      ...["gateway", "cluster", "applied revision", "certificate expires in", "vault", "state"].map((t) => el("th", { scope: "col" }, t))));
    const rows = [];
    for (const c of h.clusters) {
      for (const g of c.gateways) {
        const vault = g.vault_ok === null ? el("span", {}, "not used") : g.vault_ok ? el("span", { class: "badge ok" }, "reachable") : el("span", { class: "badge bad" }, "unreachable");
        const cert = el("span", { class: g.cert_warning ? "badge bad" : "" },
          g.cert_not_after === null ? "no certificate" : duration(g.cert_expires_in),
          g.renewal_failing ? " · renewal failing" : "");
        const rev = el("span", { class: g.converged ? "badge ok" : "badge warn" },
          `${g.applied_revision}${g.converged ? " ✓ newest" : ` (newest ${h.convergence.config_revision})`}`);
        rows.push(el("tr", { "data-gateway": g.id },
          el("th", { scope: "row" }, g.id), el("td", {}, c.name), el("td", {}, rev),
          el("td", {}, cert), el("td", {}, vault),
          el("td", {}, g.stale ? el("span", { class: "badge warn" }, "serving a snapshot") : "live")));
      }
    }
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6 }, "No live gateway.")));
    $("gateways").replaceChildren(el("caption", { class: "visually-hidden" }, "live gateways"), head, el("tbody", {}, ...rows));
  }

  function renderRejected(h) {
    $("rejected-section").hidden = h.rejected.length === 0;
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

  function render(h) {
    $("federation-name").textContent = h.federation ? `federation ${h.federation}` : "federation status";
    $("revision").textContent = `revision ${h.revision} · config ${h.config_revision}`;
    const src = $("source");
    src.textContent = h.stale ? `view from ${h.source} (stale)` : `view from ${h.source}`;
    src.className = h.stale ? "stale" : "";
    renderSummary(h);
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
      const resp = await fetch("/v1/health/global", {
        headers: { Authorization: `Bearer ${t}`, Accept: "application/json" },
        cache: "no-store",
      });
      if (resp.status === 401) {
        sessionStorage.removeItem(KEY);
        showLogin("The gateway refused this token.");
        return;
      }
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const body = await resp.json();
      showDashboard();
      render(body);
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
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      showLogin("");
    });
    if (token()) start(); else showLogin("");
  });
})();
