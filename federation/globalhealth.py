"""Global health: the whole federation at a glance, from one routing view.

:func:`global_health` is the body of ``GET /v1/health/global`` and what ``fedgate health``
prints. It reads only the :class:`RoutingView` (every gateway holds the same one), so any
gateway answers for the whole federation. The JSON shape is stable (documented in
``docs/observability.md`` and in the admin API's OpenAPI document); fields are added,
never renamed or removed.

At 1,000 clusters the whole answer would be megabytes, so it is bounded: the
``summary`` (and ``convergence``) cover the whole federation, the ``clusters`` and
``services`` lists are filtered and paged by a :class:`~federation.healthquery.HealthQuery`
(``?cluster=``, ``?service=``, ``?state=``, ``?q=``, ``?limit=``, ``?offset=``), at most
100 of each by default, worst first; ``page`` says how many matched. The per-cluster and
per-service states are computed once per routing view and reused by every request.

Cluster state, from the aggregated :class:`ServiceHealth` of the services it runs:

- ``unknown``: no service has an opinion yet and no gateway is live there;
- ``healthy``: every observed service is healthy and a gateway is live;
- ``unhealthy``: every observed service is unhealthy (nothing can be served there);
- ``degraded``: anything in between, or healthy services with no live gateway
  (other clusters cannot reach it).

A gateway's certificate is flagged when its renewal is failing, it has expired, or its
renewal is overdue by more than :data:`RENEWAL_GRACE_SECONDS` (a gateway renews at ~2/3
of the lifetime, so a short-lived certificate that renews on time is never flagged); a
gateway that reports no renewal time (a certificate from KV) is flagged when it expires
within :data:`CERT_WARN_SECONDS`. Each gateway's ACME certificate that expires first
(``acme_name``) is flagged alike, when expired or overdue for renewal; both kinds are
listed under ``certificates.expiring`` (``source``: ``vault`` or ``acme``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from federation.healthquery import HealthQuery
from federation.model import (
    Cluster,
    GatewayRecord,
    HealthState,
    RoutingView,
    Service,
    ServiceHealth,
)

SCHEMA_VERSION = 1
CERT_WARN_SECONDS = 24 * 3600.0
RENEWAL_GRACE_SECONDS = 60.0

STATES: tuple[str, ...] = tuple(s.value for s in HealthState)
# the order lists are shown in: what needs attention first
_ATTENTION = {"unhealthy": 0, "degraded": 1, "unknown": 2, "healthy": 3}
_RANK = {
    HealthState.HEALTHY: 0,
    HealthState.DEGRADED: 1,
    HealthState.UNHEALTHY: 2,
    HealthState.UNKNOWN: 3,
}


def global_health(
    view: RoutingView,
    *,
    now: float,
    query: HealthQuery | None = None,
    dns: dict[str, object] | None = None,
) -> dict[str, object]:
    """The body of ``GET /v1/health/global`` (see the module docstring).

    ``query`` filters and pages the cluster and service lists (see
    :mod:`federation.healthquery`); by default each holds at most 100 items, worst first.
    The summary and convergence figures always cover the whole federation. ``dns`` is the
    section the gateway's DNS listener reports (``gateway/dns/report.py``), if it runs.
    """
    q = query or HealthQuery()
    index = _index(view)
    newest = max(
        [view.config_revision, *(g.applied_revision for g in view.gateways.values())],
    )
    all_gateways = [
        _gateway(g, newest=newest, now=now)
        for c in index.clusters
        for g in index.gateways_in.get(c["name"], ())
    ]
    on_newest = sum(1 for g in all_gateways if g["applied_revision"] == newest)
    counts = dict.fromkeys(STATES, 0)
    for c in index.clusters:
        counts[c["state"]] += 1
    lagging = [
        {"gateway": g["id"], "cluster": g["cluster"], "applied_revision": g["applied_revision"]}
        for g in all_gateways
        if g["applied_revision"] != newest
    ]
    expiring = [
        {
            "gateway": g["id"],
            "cluster": g["cluster"],
            "cert_not_after": g["cert_not_after"],
            "expires_in": g["cert_expires_in"],
            "renewal_failing": g["renewal_failing"],
            "vault_ok": g["vault_ok"],
            "source": "vault",
            "name": "",
        }
        for g in all_gateways
        if g["cert_warning"]
    ]
    expiring += [  # ACME certificates (docs/tls.md): the one of each gateway that expires first
        {
            "gateway": g["id"],
            "cluster": g["cluster"],
            "cert_not_after": g["acme_not_after"],
            "expires_in": g["acme_expires_in"],
            "renewal_failing": g["acme_problem"] is not None,
            "vault_ok": g["vault_ok"],
            "source": "acme",
            "name": g["acme_name"],
        }
        for g in all_gateways
        if g["acme_warning"]
    ]
    clusters, services = _select(index, q)
    page_clusters = _page_of(clusters, q)
    page_services = _page_of(services, q)
    return {
        "schema": SCHEMA_VERSION,
        "federation": view.federation,
        "generated_at": now,
        "revision": view.revision,
        "config_revision": view.config_revision,
        "source": view.source,
        "stale": view.stale,
        "summary": {
            "clusters": len(index.clusters),
            **counts,
            "gateways": len(all_gateways),
            "services": len(index.services),
            "services_serving": sum(1 for s in index.services if s["serving"]),
            "services_by_state": dict(index.service_counts),
        },
        "convergence": {
            "config_revision": newest,
            "gateways": len(all_gateways),
            "on_newest": on_newest,
            "share": (on_newest / len(all_gateways)) if all_gateways else None,
            "lagging": lagging[: q.limit],
            "lagging_total": len(lagging),
        },
        "certificates": {
            "warn_before_seconds": CERT_WARN_SECONDS,
            "expiring": expiring[: q.limit],
            "expiring_total": len(expiring),
        },
        "filter": q.echo(),
        "page": {
            "limit": q.limit,
            "offset": q.offset,
            "clusters": _page(len(clusters), len(page_clusters), q),
            "services": _page(len(services), len(page_services), q),
        },
        "clusters": [
            {
                **c,
                "gateways": [
                    _gateway(g, newest=newest, now=now)
                    for g in index.gateways_in.get(c["name"], ())
                ],
            }
            for c in page_clusters
        ],
        "services": [_rows_in(s, q.clusters) for s in page_services],
        "rejected": [
            {"key": r.key, "error": r.error, "revision": r.revision}
            for r in view.rejected[: q.limit]
        ],
        "rejected_total": len(view.rejected),
        "dns": dns if dns is not None else {"enabled": False},
    }


def _page(total: int, returned: int, q: HealthQuery) -> dict[str, object]:
    after = q.offset + returned
    return {"total": total, "returned": returned, "next_offset": after if after < total else None}


@dataclass(frozen=True, slots=True)
class _Index:
    """What a view's health looks like, computed once per view (not per request)."""

    view: RoutingView
    clusters: list[dict[str, Any]]  # without "gateways" (those depend on the time)
    services: list[dict[str, Any]]
    gateways_in: dict[str, list[GatewayRecord]]
    services_in: dict[str, set[str]]
    service_counts: dict[str, int]


_cache: list[_Index] = []  # one slot: the view of the last request


def _index(view: RoutingView) -> _Index:
    if _cache and _cache[0].view is view:
        return _cache[0]
    gateways_in: dict[str, list[GatewayRecord]] = {}
    for g in sorted(view.gateways.values(), key=lambda g: g.id):
        gateways_in.setdefault(g.cluster, []).append(g)
    services_in: dict[str, set[str]] = {}
    for s in view.services.values():
        for c in s.clusters:
            services_in.setdefault(c, set()).add(s.name)
    clusters = [
        _cluster(view, c, sorted(services_in.get(c.name, ())), gateways_in.get(c.name, []))
        for c in sorted(view.clusters.values(), key=_cluster_order)
    ]
    services = [_service(view, s) for s in sorted(view.services.values(), key=lambda s: s.name)]
    service_counts = dict.fromkeys(STATES, 0)
    for svc in services:
        service_counts[svc["state"]] += 1
    index = _Index(view, clusters, services, gateways_in, services_in, service_counts)
    _cache[:] = [index]
    return index


def _page_of(items: list[dict[str, Any]], q: HealthQuery) -> list[dict[str, Any]]:
    """One page of ``items``, chosen worst first, shown in the items' own order.

    Ranked by state (unhealthy, degraded, unknown, healthy; stable), so the first page
    holds what needs attention; within the page the grouped order of ``items`` stays
    (clusters by cloud, environment, tier, name; services by name).
    """
    ranked = sorted(range(len(items)), key=lambda i: _ATTENTION[items[i]["state"]])
    return [items[i] for i in sorted(ranked[q.offset : q.offset + q.limit])]


def _select(index: _Index, q: HealthQuery) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The clusters and services the query asks for, in their grouped order."""
    clusters = index.clusters
    services = index.services
    if q.clusters is not None:
        clusters = [c for c in clusters if c["name"] in q.clusters]
        running: set[str] = set()
        for name in q.clusters:
            running |= index.services_in.get(name, set())
        services = [s for s in services if s["name"] in running]
    if q.services is not None:
        services = [s for s in services if s["name"] in q.services]
        hosting = {row["cluster"] for s in services for row in s["clusters"]}
        clusters = [c for c in clusters if c["name"] in hosting]
    if q.states is not None:
        clusters = [c for c in clusters if c["state"] in q.states]
        services = [s for s in services if s["state"] in q.states]
    if q.search:
        text = q.search
        clusters = [
            c
            for c in clusters
            if text in c["name"].lower()
            or text in str(c["region"]).lower()
            or text in str(c["cloud"]).lower()
        ]
        services = [
            s
            for s in services
            if text in s["name"].lower() or any(text in r["host"].lower() for r in s["routes"])
        ]
    return clusters, services


def _rows_in(service: dict[str, Any], clusters: frozenset[str] | None) -> dict[str, Any]:
    if clusters is None:
        return service
    return {**service, "clusters": [r for r in service["clusters"] if r["cluster"] in clusters]}


def _cluster_order(c: Cluster) -> tuple[str, str, int, str]:
    return (c.cloud, c.environment, c.tier, c.name)


def _cluster(
    view: RoutingView, c: Cluster, services: list[str], gateways: list[GatewayRecord]
) -> dict[str, Any]:
    healths = [view.health.get((name, c.name)) for name in services]
    state, reasons = cluster_state(healths, live_gateways=len(gateways))
    known = [h for h in healths if h is not None and h.state is not HealthState.UNKNOWN]
    if known:
        score = sum(h.score for h in known) / len(known)
    elif not services and gateways:
        score = 1.0
    else:
        score = 0.0
    per_state = dict.fromkeys(STATES, 0)
    for h in healths:
        per_state[(h.state if h is not None else HealthState.UNKNOWN).value] += 1
    return {
        "name": c.name,
        "region": c.region,
        "cloud": c.cloud,
        "environment": c.environment,
        "tier": c.tier,
        "labels": dict(c.labels),
        "east_west": c.east_west,
        "state": state,
        "score": round(score, 4),
        "reasons": reasons,
        "services": {"total": len(services), **per_state},
        "live_gateways": len(gateways),
    }


def cluster_state(
    healths: Iterable[ServiceHealth | None], *, live_gateways: int
) -> tuple[str, list[str]]:
    """A cluster's state from its services' health, and the reasons for it."""
    states = [h.state if h is not None else HealthState.UNKNOWN for h in healths]
    known = [s for s in states if s is not HealthState.UNKNOWN]
    reasons: list[str] = []
    if not known:
        if live_gateways:
            state = HealthState.HEALTHY if not states else HealthState.UNKNOWN
            if states:
                reasons.append("no service has been observed yet")
        else:
            state = HealthState.UNKNOWN
            reasons.append("no live gateway")
        return state.value, reasons
    unhealthy = sum(1 for s in known if s is HealthState.UNHEALTHY)
    degraded = sum(1 for s in known if s is HealthState.DEGRADED)
    if unhealthy == len(known):
        state = HealthState.UNHEALTHY
        reasons.append("every observed service is unhealthy")
    elif unhealthy or degraded:
        state = HealthState.DEGRADED
        if unhealthy:
            reasons.append(f"{unhealthy} of {len(states)} services unhealthy")
        if degraded:
            reasons.append(f"{degraded} of {len(states)} services degraded")
    else:
        state = HealthState.HEALTHY
    if not live_gateways:
        reasons.append("no live gateway")
        if state is HealthState.HEALTHY:
            state = HealthState.DEGRADED
    return state.value, reasons


def _cert_warning(
    not_after: float | None, renew_at: float | None, now: float
) -> tuple[float | None, bool]:
    """(seconds left, flagged) of one certificate, by the rule of the module docstring."""
    expires_in = None if not_after is None else not_after - now
    if expires_in is not None and expires_in <= 0:
        return expires_in, True
    if renew_at is not None:
        return expires_in, now > renew_at + RENEWAL_GRACE_SECONDS
    return expires_in, expires_in is not None and expires_in < CERT_WARN_SECONDS


def _gateway(g: GatewayRecord, *, newest: int, now: float) -> dict[str, Any]:
    expires_in = None if g.cert_not_after is None else g.cert_not_after - now
    if g.renewal_failing or (expires_in is not None and expires_in <= 0):
        warning = True
    elif g.cert_renew_at is not None:
        warning = now > g.cert_renew_at + RENEWAL_GRACE_SECONDS
    else:
        warning = expires_in is not None and expires_in < CERT_WARN_SECONDS
    # ACME: a failing renewal is only a warning once the renewal is overdue (the CA may
    # refuse for a while: the current certificate keeps serving; acme_problem says why)
    acme_in, acme_warning = _cert_warning(g.acme_not_after, g.acme_renew_at, now)
    return {
        "id": g.id,
        "cluster": g.cluster,
        "public": g.public,
        "east_west": g.east_west,
        "admin": g.admin,
        "applied_revision": g.applied_revision,
        "converged": g.applied_revision == newest,
        "stale": g.stale,
        "started_at": g.started_at,
        "uptime": max(0.0, now - g.started_at) if g.started_at else None,
        "cert_not_after": g.cert_not_after,
        "cert_expires_in": expires_in,
        "cert_serial": g.cert_serial,
        "cert_warning": warning,
        "cert_expired": expires_in is not None and expires_in <= 0,
        "vault_ok": g.vault_ok,
        "renewal_failing": g.renewal_failing,
        "acme_missing": list(g.acme_missing),
        "acme_problem": g.acme_problem,
        "acme_name": g.acme_name,
        "acme_not_after": g.acme_not_after,
        "acme_expires_in": acme_in,
        "acme_warning": acme_warning,
    }


def _service(view: RoutingView, s: Service) -> dict[str, Any]:
    rows = []
    for cluster in s.clusters:
        h = view.health.get((s.name, cluster))
        rows.append(_service_cluster(view, s.name, cluster, h))
    states = [HealthState(r["state"]) for r in rows]
    known = [x for x in states if x is not HealthState.UNKNOWN]
    serving = any(x in (HealthState.HEALTHY, HealthState.DEGRADED) for x in known)
    if not known:
        state = HealthState.UNKNOWN
    elif all(x is HealthState.HEALTHY for x in known) and len(known) == len(states):
        state = HealthState.HEALTHY
    elif not serving:
        state = HealthState.UNHEALTHY
    else:
        state = HealthState.DEGRADED
    return {
        "name": s.name,
        "state": state.value,
        "serving": serving or (not known and bool(states)),
        "routes": [{"host": r.host, "path_prefix": r.path_prefix} for r in s.routes],
        "failover": s.failover.policy,
        "clusters": rows,
    }


def _service_cluster(
    view: RoutingView, service: str, cluster: str, h: ServiceHealth | None
) -> dict[str, Any]:
    eps = view.endpoints.get((service, cluster), ())
    if h is None:
        return {
            "cluster": cluster,
            "state": HealthState.UNKNOWN.value,
            "score": 0.0,
            "healthy_endpoints": sum(1 for e in eps if e.routable),
            "total_endpoints": len(eps),
            "error_rate": 0.0,
            "latency_ms": 0.0,
            "observers": 0,
            "down_votes": 0,
            "since": None,
        }
    return {
        "cluster": cluster,
        "state": h.state.value,
        "score": round(h.score, 4),
        "healthy_endpoints": h.healthy_endpoints,
        "total_endpoints": h.total_endpoints or len(eps),
        "error_rate": round(h.error_rate, 4),
        "latency_ms": round(h.latency_ms, 3),
        "observers": h.observers,
        "down_votes": h.down_votes,
        "since": h.since,
    }


def worst(states: Iterable[str]) -> str:
    """The worst of several states (unknown counts as worst)."""
    return max(
        (HealthState(s) for s in states), key=_RANK.__getitem__, default=HealthState.UNKNOWN
    ).value


__all__ = [
    "CERT_WARN_SECONDS",
    "SCHEMA_VERSION",
    "HealthQuery",
    "cluster_state",
    "global_health",
    "worst",
]
