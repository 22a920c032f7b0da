"""The domain model: frozen value objects shared by the control plane and the data plane.

Everything here is immutable. A :class:`RoutingView` is built once per change by
``federation.view`` and swapped into the gateway with one assignment; requests in
flight keep the view they started with. The wire format (JSON in etcd, YAML in the
manifest) lives elsewhere (``federation.codec``, ``federation.manifest``).

Durations are float seconds everywhere in the model.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Cloud = Literal["aws", "gcp", "azure", "onprem", "other"]
CLOUDS: tuple[Cloud, ...] = ("aws", "gcp", "azure", "onprem", "other")

FailoverPolicy = Literal["healthiest", "ordered"]
RateLimitScope = Literal["gateway", "federation"]
RETRY_CONDITIONS: frozenset[str] = frozenset(
    {"connect-failure", "reset", "timeout", "502", "503", "504", "5xx"}
)

EMPTY_MAP: Mapping[str, str] = MappingProxyType({})


def frozen_map(items: Mapping[str, object] | None = None) -> Mapping[str, object]:
    """A read-only mapping (a view over a private copy)."""
    return MappingProxyType(dict(items or {}))


class HealthState(enum.StrEnum):
    """The state of a (service, cluster) pair or of a whole cluster."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True, slots=True)
class KubernetesDiscovery:
    """Discover endpoints from this cluster's API (EndpointSlices) in these namespaces."""

    namespaces: tuple[str, ...]
    context: str | None = None  # kubeconfig context; None = in-cluster or current context


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    region: str
    cloud: Cloud
    environment: str
    tier: int = 0
    east_west: str = ""  # URL where other gateways reach this one, e.g. https://host:15443
    kubernetes: KubernetesDiscovery | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_MAP)


@dataclass(frozen=True, slots=True)
class Route:
    host: str  # exact host, or "*.example.com" (one or more labels in front)
    path_prefix: str = "/"


@dataclass(frozen=True, slots=True)
class HealthCheck:
    path: str = "/healthz"
    interval: float = 1.0
    timeout: float = 0.5
    healthy_after: int = 2
    unhealthy_after: int = 3


@dataclass(frozen=True, slots=True)
class Failover:
    policy: FailoverPolicy = "healthiest"
    order: tuple[str, ...] = ()  # with policy "ordered": clusters in order of preference
    failback_window: float = 10.0  # seconds over which traffic ramps back to a recovered cluster


@dataclass(frozen=True, slots=True)
class Retries:
    attempts: int = 2  # retries after the first try
    per_try_timeout: float = 2.0
    budget_percent: float = 20.0  # retries may add at most this share of requests
    on: frozenset[str] = frozenset({"connect-failure", "reset", "502", "503", "504"})


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    max_pending: int = 1024
    consecutive_failures: int = 5
    open_for: float = 10.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    average: float  # tokens per second
    burst: int
    per: str = "client-ip"  # client-ip | peer-identity | header:<Name>
    scope: RateLimitScope = "gateway"


@dataclass(frozen=True, slots=True)
class Access:
    """Allow list. SPIFFE IDs match the peer certificate's URI SAN; networks the client address."""

    spiffe_ids: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 1.0
    request: float = 30.0  # total, across retries
    idle: float = 60.0  # an idle upstream keep-alive connection is closed after this


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    routes: tuple[Route, ...]
    port: int
    clusters: tuple[str, ...]
    endpoints: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    health_check: HealthCheck = HealthCheck()
    failover: Failover = Failover()
    retries: Retries = Retries()
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    rate_limit: RateLimit | None = None
    access: Access | None = None  # None: public
    timeouts: Timeouts = Timeouts()
    max_body_bytes: int | None = None  # None: unlimited (streamed)


@dataclass(frozen=True, slots=True)
class Federation:
    """A whole manifest: what `fedgate apply` registers."""

    name: str
    clusters: tuple[Cluster, ...]
    services: tuple[Service, ...]


# ------------------------------------------------------------------ runtime facts (etcd)


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str  # "host:port"
    cluster: str
    service: str
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    source: str = "static"  # static | kubernetes
    zone: str | None = None

    @property
    def routable(self) -> bool:
        """Takes new requests (terminating endpoints drain: they take none)."""
        return self.ready and self.serving and not self.terminating


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    """A live gateway, registered under its lease; gone when the lease expires."""

    id: str
    cluster: str
    public: str = ""  # host:port
    east_west: str = ""  # URL
    admin: str = ""  # host:port
    applied_revision: int = 0  # the config revision this gateway has applied
    started_at: float = 0.0
    cert_not_after: float | None = None  # east-west certificate expiry (unix seconds)
    cert_serial: str | None = None
    cert_renew_at: float | None = None  # when renewal is due (~2/3 of the lifetime)
    vault_ok: bool | None = None  # None: no Vault configured
    renewal_failing: bool = False
    stale: bool = False  # serving from a snapshot while etcd is unreachable


ANY = "*"  # Observation.service / .cluster: every service of a cluster, every cluster


@dataclass(frozen=True, slots=True)
class Observation:
    """One observer's opinion of one (service, cluster), published under its lease.

    ``service="*"`` is a cluster-wide exception (the cluster's gateways unreachable, or
    ``unknown``: no opinion); ``service="*", cluster="*"`` is the marker "I ping every
    other cluster; those I list no exception for are reachable" (``federation.aggregate``).
    """

    observer: str  # gateway id
    observer_cluster: str
    service: str
    cluster: str
    state: HealthState
    healthy: int = 0  # healthy endpoints seen (own cluster) or 1/0 for a remote gateway probe
    total: int = 0
    error_rate: float = 0.0  # passive, 0..1, recent window
    latency_ms: float = 0.0  # passive EWMA
    at: float = 0.0  # unix seconds


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    """The federation's aggregated opinion of one (service, cluster)."""

    service: str
    cluster: str
    state: HealthState
    score: float  # 0..1, higher is healthier
    healthy_endpoints: int = 0
    total_endpoints: int = 0
    error_rate: float = 0.0
    latency_ms: float = 0.0
    observers: int = 0
    down_votes: int = 0
    since: float = 0.0  # when the state last changed (for failback ramps)


@dataclass(frozen=True, slots=True)
class Rejection:
    """An etcd item the view builder refused; the previous value keeps serving."""

    key: str
    error: str
    revision: int


@dataclass(frozen=True, slots=True)
class RoutingView:
    """The immutable routing view at one etcd revision."""

    revision: int = 0  # etcd revision the view reflects
    config_revision: int = 0  # highest mod revision of clusters/services/federation keys
    federation: str = ""
    clusters: Mapping[str, Cluster] = field(default_factory=lambda: MappingProxyType({}))
    services: Mapping[str, Service] = field(default_factory=lambda: MappingProxyType({}))
    # (service, cluster) -> endpoints: static ones from the manifest plus discovered ones
    endpoints: Mapping[tuple[str, str], tuple[Endpoint, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    gateways: Mapping[str, GatewayRecord] = field(default_factory=lambda: MappingProxyType({}))
    observations: tuple[Observation, ...] = ()
    health: Mapping[tuple[str, str], ServiceHealth] = field(
        default_factory=lambda: MappingProxyType({})
    )
    rejected: tuple[Rejection, ...] = ()
    source: Literal["empty", "etcd", "snapshot", "manifest"] = "empty"
    stale: bool = False  # True while served from a snapshot / etcd unreachable

    def gateways_in(self, cluster: str) -> tuple[GatewayRecord, ...]:
        return tuple(g for g in self.gateways.values() if g.cluster == cluster)

    def endpoints_of(self, service: str, cluster: str) -> tuple[Endpoint, ...]:
        return self.endpoints.get((service, cluster), ())

    def health_of(self, service: str, cluster: str) -> ServiceHealth | None:
        return self.health.get((service, cluster))
