"""Generated federations of any size, as etcd puts (for bench/scale.py and the scale test).

The shape of issue #11: ``clusters`` clusters, ``services`` services of ``routes``
routes each, every service in ``per_service`` clusters (spread round-robin), and
``gateways`` gateways per cluster, each with its record and its local view (a report,
``federation.health``: one observation per service of its own cluster), and each
cluster's health summary as its leader writes it (``federation.health_leader``).
Values are encoded by the codec, as the real writers do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from federation import codec
from federation.etcd import Put
from federation.keys import KeyLayout
from federation.model import (
    Cluster,
    GatewayRecord,
    HealthState,
    Observation,
    Route,
    Service,
)


@dataclass(frozen=True, slots=True)
class Shape:
    clusters: int
    services: int = 2000
    routes: int = 5
    per_service: int = 20
    gateways: int = 2

    def cluster_names(self) -> list[str]:
        return [f"c{i:04d}" for i in range(self.clusters)]

    def service_clusters(self, index: int) -> tuple[str, ...]:
        names = self.cluster_names()
        n = min(self.per_service, len(names))
        return tuple(names[(index * 7 + k) % len(names)] for k in range(n))

    def service(self, index: int, *, generation: int = 0) -> Service:
        name = f"s{index:05d}"
        routes = tuple(
            Route(host=f"{name}.example.com", path_prefix=f"/p{r}") for r in range(self.routes)
        )
        return Service(
            name=name,
            routes=routes,
            port=8080 + generation % 1000,
            clusters=self.service_clusters(index),
        )

    def services_in(self) -> dict[str, list[str]]:
        """Cluster -> the services that run in it."""
        out: dict[str, list[str]] = {c: [] for c in self.cluster_names()}
        for i in range(self.services):
            for c in self.service_clusters(i):
                out[c].append(f"s{i:05d}")
        return out

    def gateway_ids(self, cluster: str) -> list[str]:
        return [f"{cluster}-gw{g}" for g in range(self.gateways)]


def config_puts(shape: Shape, layout: KeyLayout) -> Iterator[Put]:
    yield Put(layout.federation(), codec.encode({"name": f"scale-{shape.clusters}"}))
    for i, name in enumerate(shape.cluster_names()):
        c = Cluster(
            name=name,
            region=f"r{i % 20}",
            cloud="aws",
            environment="prod",
            tier=i % 2,
            east_west=f"https://{name}.example.net:15443",
        )
        yield Put(layout.cluster(name), codec.encode(c))
    for i in range(shape.services):
        yield Put(layout.service(f"s{i:05d}"), codec.encode(shape.service(i)))


def gateway_value(cluster: str, gateway_id: str, applied: int = 0) -> bytes:
    return codec.encode(GatewayRecord(id=gateway_id, cluster=cluster, applied_revision=applied))


def health_value(
    cluster: str,
    gateway_id: str,
    services: list[str],
    *,
    at: float,
    down: frozenset[str] = frozenset(),
) -> bytes:
    """A gateway's local view (its report key): one observation per own service."""
    return codec.encode(_own_view(cluster, gateway_id, services, at=at, down=down))


def _own_view(
    cluster: str,
    gateway_id: str,
    services: list[str],
    *,
    at: float,
    down: frozenset[str],
    latency: float = 0.0,
) -> list[Observation]:
    return [
        Observation(
            observer=gateway_id,
            observer_cluster=cluster,
            service=s,
            cluster=cluster,
            state=HealthState.UNHEALTHY if s in down else HealthState.HEALTHY,
            healthy=0 if s in down else 3,
            total=3,
            latency_ms=latency,
            at=at,
        )
        for s in services
    ]


def summary_puts(
    layout: KeyLayout,
    cluster: str,
    leader: str,
    services: list[str],
    *,
    at: float,
    down: frozenset[str] = frozenset(),
    only: frozenset[str] | None = None,
    lease: int | None = None,
    latency: float = 0.0,
) -> list[Put]:
    """What a cluster's health leader writes (``federation.health_leader``): one summary
    key per own service (``only``: just those), as ``health_summary.combine`` makes it."""
    view = _own_view(cluster, leader, services, at=at, down=down, latency=latency)
    return [
        Put(layout.health_summary(cluster, o.service), codec.encode([o]), lease=lease)
        for o in view
        if only is None or o.service in only
    ]


def chunks(ops: Iterator[Put], size: int = 100, max_bytes: int = 1 << 20) -> Iterator[list[Put]]:
    """Transactions of at most ``size`` puts and about ``max_bytes`` (etcd's 1.5 MiB)."""
    batch: list[Put] = []
    weight = 0
    for op in ops:
        cost = len(op.key) + len(op.value)
        if batch and (len(batch) >= size or weight + cost > max_bytes):
            yield batch
            batch, weight = [], 0
        batch.append(op)
        weight += cost
    if batch:
        yield batch
