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
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Cloud = Literal["aws", "gcp", "azure", "onprem", "other"]
CLOUDS: tuple[Cloud, ...] = ("aws", "gcp", "azure", "onprem", "other")

FailoverPolicy = Literal["healthiest", "ordered"]
RateLimitScope = Literal["gateway", "federation"]
TlsSource = Literal["vault", "acme"]  # where a route host's public certificate comes from

ServiceProtocol = Literal["http", "h2", "grpc"]  # what the backends speak
# gRPC status names -> codes (retries.grpcStatus; gateway/h2/grpc.py)
GRPC_STATUS_CODES: Mapping[str, int] = MappingProxyType(
    {
        name: code
        for code, name in enumerate(
            [
                "OK",
                "CANCELLED",
                "UNKNOWN",
                "INVALID_ARGUMENT",
                "DEADLINE_EXCEEDED",
                "NOT_FOUND",
                "ALREADY_EXISTS",
                "PERMISSION_DENIED",
                "RESOURCE_EXHAUSTED",
                "FAILED_PRECONDITION",
                "ABORTED",
                "OUT_OF_RANGE",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS",
                "UNAUTHENTICATED",
            ]
        )
    }
)
DnsStrategy = Literal["healthiest", "ordered", "weighted", "nearest"]
DNS_STRATEGIES: tuple[DnsStrategy, ...] = ("healthiest", "ordered", "weighted", "nearest")
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
class PublicEntry:
    """Where clients reach a cluster's gateways from outside: what DNS answers for it.

    Either IP addresses (A/AAAA records) or one hostname (a CNAME, e.g. a cloud load
    balancer's name); never both."""

    addresses: tuple[str, ...] = ()
    hostname: str = ""


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
    public_entry: PublicEntry | None = None  # None: DNS never answers with this cluster


ValueMatchKind = Literal["exact", "prefix", "present", "absent"]
REDIRECT_CODES: frozenset[int] = frozenset({301, 302, 303, 307, 308})
# hop-by-hop headers (RFC 9110 7.6.1 and the HTTP/1.1-only ones): the gateway owns them,
# so no route rule may set them; gateway.hygiene strips them
HOP_BY_HOP_HEADERS: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"http2-settings",
    }
)

HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
# what routing rules may put into a request or response head (the manifest checks the
# same; these guard values that come from etcd, which is not trusted to be well formed)
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
_PATH = re.compile(r"/[\x21-\x7e]*")
_HOST = re.compile(r"[a-z0-9_.-]+")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_header_name(name: str) -> None:
    _require(HEADER_NAME.fullmatch(name) is not None and name == name.lower(),
             f"invalid header name {name!r}")  # fmt: skip


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """One condition on a request header (name lower case) or query parameter."""

    name: str
    kind: ValueMatchKind = "exact"
    value: str = ""  # with exact and prefix

    def __post_init__(self) -> None:
        _require(bool(self.name), "a condition needs a name")


@dataclass(frozen=True, slots=True)
class RouteConditions:
    """What a request must also carry to take a route (all must hold)."""

    methods: frozenset[str] = frozenset()  # empty: any method
    headers: tuple[ValueMatch, ...] = ()
    query: tuple[ValueMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class WeightedBackend:
    service: str
    weight: int = 1

    def __post_init__(self) -> None:
        _require(self.weight >= 0, f"a weight is >= 0, got {self.weight}")


@dataclass(frozen=True, slots=True)
class Sticky:
    """Keep a client on one backend of a split: hash of a header's or a cookie's value."""

    header: str = ""  # lower case
    cookie: str = ""

    def __post_init__(self) -> None:
        _require(bool(self.header) != bool(self.cookie), "sticky: one of header or cookie")
        if self.header:
            _check_header_name(self.header)
        _require(not self.cookie or HEADER_NAME.fullmatch(self.cookie) is not None,
                 f"invalid cookie name {self.cookie!r}")  # fmt: skip


@dataclass(frozen=True, slots=True)
class HeaderRules:
    add: tuple[tuple[str, str], ...] = ()  # appended (names lower case)
    set: tuple[tuple[str, str], ...] = ()  # replaces every value of the name
    remove: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, value in (*self.add, *self.set):
            _check_header_name(name)
            _require(_HEADER_VALUE.fullmatch(value) is not None, f"invalid value of {name}")
        for name in self.remove:
            _check_header_name(name)


@dataclass(frozen=True, slots=True)
class Redirect:
    scheme: str | None = None  # None: keep the request's
    host: str | None = None
    port: int | None = None
    path: str | None = None  # replaces the whole path
    path_prefix: str | None = None  # replaces the matched route prefix
    status: int = 302

    def __post_init__(self) -> None:
        _require(self.status in REDIRECT_CODES, f"not a redirect status: {self.status}")
        _require(self.scheme in (None, "http", "https"), f"invalid scheme {self.scheme!r}")
        _require(self.host is None or _HOST.fullmatch(self.host) is not None,
                 f"invalid host {self.host!r}")  # fmt: skip
        _require(self.port is None or 1 <= self.port <= 65535, f"invalid port {self.port}")
        for path in (self.path, self.path_prefix):
            _require(path is None or _PATH.fullmatch(path) is not None, f"invalid path {path!r}")


@dataclass(frozen=True, slots=True)
class Route:
    host: str  # exact host, or "*.example.com" (one or more labels in front)
    path_prefix: str = "/"
    # routing rules (docs/manifest.md, "Routing rules"); all optional
    match: RouteConditions | None = None
    backends: tuple[WeightedBackend, ...] = ()  # weighted split; empty: the owning service
    sticky: Sticky | None = None
    request_headers: HeaderRules | None = None
    response_headers: HeaderRules | None = None
    rewrite_path_prefix: str | None = None  # replaces the matched prefix ("/" strips it)
    rewrite_host: str | None = None
    redirect: Redirect | None = None
    timeout: float | None = None  # replaces the service's timeouts.request on this route
    tls: TlsSource | None = None  # None: the service's (docs/tls.md, "ACME")

    def __post_init__(self) -> None:
        if self.rewrite_path_prefix is not None:
            _require(_PATH.fullmatch(self.rewrite_path_prefix) is not None,
                     f"invalid rewrite path prefix {self.rewrite_path_prefix!r}")  # fmt: skip
        if self.rewrite_host is not None:
            _require(_HOST.fullmatch(self.rewrite_host) is not None,
                     f"invalid rewrite host {self.rewrite_host!r}")  # fmt: skip
        if self.timeout is not None:
            _require(math.isfinite(self.timeout) and self.timeout > 0,
                     f"invalid timeout {self.timeout}")  # fmt: skip


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
    on: frozenset[str] = frozenset({"connect-failure", "reset", "timeout", "502", "503", "504"})
    grpc_status: frozenset[int] = frozenset({14})  # gRPC calls: retried on these (UNAVAILABLE)


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
class NearestRule:
    """DNS ``nearest``: clients in ``network`` prefer ``clusters``, in this order."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    clusters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServiceDns:
    """How the federation's authoritative DNS answers for a service's route hosts."""

    strategy: DnsStrategy = "healthiest"
    ttl: float = 5.0
    order: tuple[str, ...] = ()  # with strategy "ordered"; empty: failover.order, else clusters
    nearest: tuple[NearestRule, ...] = ()  # with strategy "nearest"


@dataclass(frozen=True, slots=True)
class Zone:
    """A DNS zone the gateways serve authoritatively (SOA and NS at its apex)."""

    name: str  # lowercase, no trailing dot
    hostmaster: str = ""  # the SOA RNAME as a hostname; empty: hostmaster.<zone>
    ttl: float = 60.0  # of SOA and NS records
    negative_ttl: float = 5.0  # SOA minimum: how long resolvers cache NXDOMAIN / NODATA


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
    protocol: ServiceProtocol = "http"  # h2 / grpc: HTTP/2 to the backends (gateway/h2)
    dns: ServiceDns = ServiceDns()
    tls: TlsSource = "vault"  # "acme": public certificates by ACME for the route hosts


@dataclass(frozen=True, slots=True)
class Federation:
    """A whole manifest: what `fedgate apply` registers."""

    name: str
    clusters: tuple[Cluster, ...]
    services: tuple[Service, ...]
    zones: tuple[Zone, ...] = ()


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
    dns: str = ""  # host:port of its authoritative DNS listener ("" when off)
    # ACME (docs/tls.md): tls: acme hosts still served the Vault PKI certificate, and the
    # CA's last problem document in one line
    acme_missing: tuple[str, ...] = ()
    acme_problem: str | None = None
    # the ACME certificate of this gateway that expires first: its name, expiry and
    # renewal time (global health's certificate warnings, as for the Vault certificate)
    acme_name: str = ""
    acme_not_after: float | None = None
    acme_renew_at: float | None = None


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
    observations: Sequence[Observation] = ()  # a tuple, or federation.observations' table
    health: Mapping[tuple[str, str], ServiceHealth] = field(
        default_factory=lambda: MappingProxyType({})
    )
    rejected: tuple[Rejection, ...] = ()
    source: Literal["empty", "etcd", "snapshot", "manifest"] = "empty"
    stale: bool = False  # True while served from a snapshot / etcd unreachable
    zones: tuple[Zone, ...] = ()  # the DNS zones the gateways serve
    # ACME HTTP-01: token -> key authorization (``{p}acme/challenge/{token}``, the orderer's)
    acme_challenges: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # ACME TLS-ALPN-01: name -> key authorization (``{p}acme/alpn/{name}``)
    acme_alpn: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # ACME DNS-01: ``_acme-challenge.<name>`` -> its TXT values (``{p}acme/dns/{name}``)
    acme_txt: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def gateways_in(self, cluster: str) -> tuple[GatewayRecord, ...]:
        return tuple(g for g in self.gateways.values() if g.cluster == cluster)

    def endpoints_of(self, service: str, cluster: str) -> tuple[Endpoint, ...]:
        return self.endpoints.get((service, cluster), ())

    def health_of(self, service: str, cluster: str) -> ServiceHealth | None:
        return self.health.get((service, cluster))


def acme_hosts(services: Iterable[Service]) -> frozenset[str]:
    """The route hosts whose public certificate comes from ACME (``tls: acme``)."""
    return frozenset(
        r.host.lower() for s in services for r in s.routes if (r.tls or s.tls) == "acme"
    )
