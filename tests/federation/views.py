"""Routing views built by hand for the global-health, admin API and status page tests."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from federation.model import (
    Cluster,
    Endpoint,
    GatewayRecord,
    HealthState,
    Rejection,
    Route,
    RoutingView,
    Service,
    ServiceHealth,
)

NOW = 1_800_000_000.0

CLUSTERS = (
    Cluster(
        "aws-eu-west-1", "eu-west-1", "aws", "prod", 0, "https://aws:15443", labels={"zone": "eu"}
    ),
    Cluster("gcp-europe-west4", "europe-west4", "gcp", "prod", 0, "https://gcp:15443"),
    Cluster("onprem-fra1", "fra1", "onprem", "prod", 1, "https://fra:15443"),
    Cluster("aws-us-east-1", "us-east-1", "aws", "staging", 0, "https://us:15443"),
)


def health(
    service: str,
    cluster: str,
    state: HealthState,
    *,
    healthy: int = 2,
    total: int = 2,
    score: float | None = None,
    error_rate: float = 0.0,
    latency_ms: float = 3.0,
    observers: int = 3,
) -> ServiceHealth:
    if score is None:
        score = {"healthy": 0.95, "degraded": 0.6, "unhealthy": 0.0, "unknown": 0.5}[state.value]
    return ServiceHealth(
        service,
        cluster,
        state,
        score,
        healthy_endpoints=healthy,
        total_endpoints=total,
        error_rate=error_rate,
        latency_ms=latency_ms,
        observers=observers,
        since=NOW - 60,
    )


def gateway(cluster: str, n: int = 1, **changes: object) -> GatewayRecord:
    g = GatewayRecord(
        id=f"{cluster}-gw{n}",
        cluster=cluster,
        public="127.0.0.1:8080",
        admin="127.0.0.1:9901",
        applied_revision=40,
        started_at=NOW - 3600,
        cert_not_after=NOW + 20 * 86400,
        cert_serial="0a:0b",
        vault_ok=True,
    )
    return replace(g, **changes)  # type: ignore[arg-type]


def sample_view(
    *,
    states: dict[tuple[str, str], HealthState] | None = None,
    gateways: tuple[GatewayRecord, ...] | None = None,
    revision: int = 57,
    config_revision: int = 40,
    rejected: tuple[Rejection, ...] = (),
) -> RoutingView:
    """Four clusters in three clouds and two environments, two services."""
    services = (
        Service(
            "checkout",
            (Route("shop.acme.com", "/checkout"),),
            8080,
            ("aws-eu-west-1", "gcp-europe-west4", "onprem-fra1"),
        ),
        Service(
            "search",
            (Route("*.acme.com", "/search"),),
            8080,
            ("aws-eu-west-1", "gcp-europe-west4", "aws-us-east-1"),
        ),
    )
    base = {(s.name, c): HealthState.HEALTHY for s in services for c in s.clusters}
    base.update(states or {})
    hs = {}
    for (s, c), st in base.items():
        healthy = 0 if st is HealthState.UNHEALTHY else (1 if st is HealthState.DEGRADED else 2)
        hs[(s, c)] = health(
            s, c, st, healthy=healthy, error_rate=0.2 if st is HealthState.DEGRADED else 0.0
        )
    endpoints = {
        (s.name, c): tuple(Endpoint(f"10.0.{i}.{j}:8080", c, s.name) for j in range(2))
        for i, s in enumerate(services)
        for c in s.clusters
    }
    if gateways is None:
        gateways = tuple(gateway(c.name) for c in CLUSTERS)
    return RoutingView(
        revision=revision,
        config_revision=config_revision,
        federation="acme-prod",
        clusters=MappingProxyType({c.name: c for c in CLUSTERS}),
        services=MappingProxyType({s.name: s for s in services}),
        endpoints=MappingProxyType(endpoints),
        gateways=MappingProxyType({g.id: g for g in gateways}),
        health=MappingProxyType(hs),
        rejected=rejected,
        source="etcd",
    )
