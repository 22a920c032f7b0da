"""Global health: the whole federation at a glance, from one routing view.

:func:`global_health` is the body of ``GET /v1/health/global`` and what ``fedgate health``
prints. It reads only the :class:`RoutingView` (every gateway holds the same one), so any
gateway answers for the whole federation. The JSON shape is stable (documented in
``docs/observability.md`` and in the admin API's OpenAPI document); fields are added,
never renamed or removed.

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
within :data:`CERT_WARN_SECONDS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
_RANK = {
    HealthState.HEALTHY: 0,
    HealthState.DEGRADED: 1,
    HealthState.UNHEALTHY: 2,
    HealthState.UNKNOWN: 3,
}


def global_health(
    view: RoutingView, *, now: float, dns: dict[str, object] | None = None
) -> dict[str, object]:
    """The body of ``GET /v1/health/global`` (see the module docstring); ``dns`` is the
    section the gateway's DNS listener reports (``gateway/dns/report.py``), if it runs."""
    newest = max(
        [view.config_revision, *(g.applied_revision for g in view.gateways.values())],
    )
    clusters = [
        _cluster(view, c, newest=newest, now=now)
        for c in sorted(view.clusters.values(), key=_cluster_order)
    ]
    services = [_service(view, s) for s in sorted(view.services.values(), key=lambda s: s.name)]
    gateways = [g for c in clusters for g in c["gateways"]]
    on_newest = sum(1 for g in gateways if g["applied_revision"] == newest)
    counts = dict.fromkeys(STATES, 0)
    for c in clusters:
        counts[c["state"]] += 1
    expiring = [
        {
            "gateway": g["id"],
            "cluster": g["cluster"],
            "cert_not_after": g["cert_not_after"],
            "expires_in": g["cert_expires_in"],
            "renewal_failing": g["renewal_failing"],
            "vault_ok": g["vault_ok"],
        }
        for g in gateways
        if g["cert_warning"]
    ]
    return {
        "schema": SCHEMA_VERSION,
        "federation": view.federation,
        "generated_at": now,
        "revision": view.revision,
        "config_revision": view.config_revision,
        "source": view.source,
        "stale": view.stale,
        "summary": {
            "clusters": len(clusters),
            **counts,
            "gateways": len(gateways),
            "services": len(services),
            "services_serving": sum(1 for s in services if s["serving"]),
        },
        "convergence": {
            "config_revision": newest,
            "gateways": len(gateways),
            "on_newest": on_newest,
            "share": (on_newest / len(gateways)) if gateways else None,
            "lagging": [
                {
                    "gateway": g["id"],
                    "cluster": g["cluster"],
                    "applied_revision": g["applied_revision"],
                }
                for g in gateways
                if g["applied_revision"] != newest
            ],
        },
        "certificates": {"warn_before_seconds": CERT_WARN_SECONDS, "expiring": expiring},
        "clusters": clusters,
        "services": services,
        "rejected": [
            {"key": r.key, "error": r.error, "revision": r.revision} for r in view.rejected
        ],
        "dns": dns if dns is not None else {"enabled": False},
    }


def _cluster_order(c: Cluster) -> tuple[str, str, int, str]:
    return (c.cloud, c.environment, c.tier, c.name)


def _services_in(view: RoutingView, cluster: str) -> list[Service]:
    return sorted(
        (s for s in view.services.values() if cluster in s.clusters), key=lambda s: s.name
    )


def _cluster(view: RoutingView, c: Cluster, *, newest: int, now: float) -> dict[str, Any]:
    services = _services_in(view, c.name)
    healths = [view.health.get((s.name, c.name)) for s in services]
    gateways = [
        _gateway(g, newest=newest, now=now)
        for g in sorted(view.gateways_in(c.name), key=lambda g: g.id)
    ]
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
        "gateways": gateways,
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


def _gateway(g: GatewayRecord, *, newest: int, now: float) -> dict[str, Any]:
    expires_in = None if g.cert_not_after is None else g.cert_not_after - now
    if g.renewal_failing or (expires_in is not None and expires_in <= 0):
        warning = True
    elif g.cert_renew_at is not None:
        warning = now > g.cert_renew_at + RENEWAL_GRACE_SECONDS
    else:
        warning = expires_in is not None and expires_in < CERT_WARN_SECONDS
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


__all__ = ["CERT_WARN_SECONDS", "SCHEMA_VERSION", "cluster_state", "global_health", "worst"]
