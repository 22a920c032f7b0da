"""The manifest's wire format: pydantic v2 models, camelCase keys, unknown keys refused.

These models check the shape and every single value (types, ranges, syntax). Checks that
need more than one value (a health-check timeout shorter than its interval, a service
naming an unknown cluster, duplicate routes) live in ``federation.manifest.checks``. The
defaults written here are the documented ones (``docs/manifest.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
)
from pydantic_core import PydanticCustomError

from federation.manifest import values
from federation.model import GRPC_STATUS_CODES, RETRY_CONDITIONS

T = TypeVar("T")

API_VERSION = "fedgate/v1"
KIND = "Federation"


def _checked(check: Callable[[T], Any]) -> Callable[[T], Any]:
    """Turn a ``ValueError``-raising check into a pydantic error with our own message."""

    def run(value: T) -> Any:
        try:
            return check(value)
        except ValueError as exc:
            raise PydanticCustomError("fedgate", "{message}", {"message": str(exc)}) from None

    return run


def _duration(value: object) -> float:
    return values.parse_duration(value)


def _duration_or_zero(value: object) -> float:
    return values.parse_duration(value, allow_zero=True)


def _retry_condition(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or value not in RETRY_CONDITIONS:
        known = ", ".join(sorted(RETRY_CONDITIONS))
        raise ValueError(f"unknown retry condition {values.show_value(value)} (known: {known})")
    return value


Str = Annotated[str, Strict()]
Int = Annotated[int, Strict()]
Number = Annotated[float, Strict(), AllowInfNan(False)]
Duration = Annotated[float, BeforeValidator(_checked(_duration))]
DurationOrZero = Annotated[float, BeforeValidator(_checked(_duration_or_zero))]
DnsLabel = Annotated[str, Strict(), AfterValidator(_checked(values.check_dns_label))]
RouteHost = Annotated[str, Strict(), AfterValidator(_checked(values.check_route_host))]
PathPrefix = Annotated[str, Strict(), AfterValidator(_checked(values.check_path_prefix))]
HttpPath = Annotated[str, Strict(), AfterValidator(_checked(values.check_http_path))]
Port = Annotated[int, Strict(), AfterValidator(_checked(values.check_port))]
HostPort = Annotated[str, Strict(), AfterValidator(_checked(values.check_host_port))]
Url = Annotated[str, Strict(), AfterValidator(_checked(values.check_url))]
AllowEntry = Annotated[str, Strict(), AfterValidator(_checked(values.check_allow_entry))]
LimitKey = Annotated[str, Strict(), AfterValidator(_checked(values.check_limit_key))]
RetryCondition = Annotated[str, BeforeValidator(_checked(_retry_condition))]


def _grpc_status(value: object) -> str:
    """A gRPC status by name (``UNAVAILABLE``, ``resource-exhausted``) or by number (14,
    as etcd holds it); ``OK`` is no failure."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = next((n for n, code in GRPC_STATUS_CODES.items() if code == value), value)
    name = value.upper().replace("-", "_") if isinstance(value, str) else None
    if name is None or name not in GRPC_STATUS_CODES or name == "OK":
        known = ", ".join(n for n in GRPC_STATUS_CODES if n != "OK")
        raise ValueError(f"unknown gRPC status {values.show_value(value)} (known: {known})")
    return name


GrpcStatus = Annotated[str, BeforeValidator(_checked(_grpc_status))]
NonEmptyStr = Annotated[str, Strict(), Field(min_length=1)]
HeaderName = Annotated[str, Strict(), AfterValidator(_checked(values.check_header_name))]
HeaderValue = Annotated[str, Strict(), AfterValidator(_checked(values.check_header_value))]
CookieName = Annotated[str, Strict(), AfterValidator(_checked(values.check_cookie_name))]
Method = Annotated[str, Strict(), AfterValidator(_checked(values.check_method))]
RedirectHost = Annotated[str, Strict(), AfterValidator(_checked(values.check_exact_host))]
Hostname = Annotated[str, Strict(), AfterValidator(_checked(values.check_hostname))]
IpAddress = Annotated[str, Strict(), AfterValidator(_checked(values.check_ip_address))]
Cidr = Annotated[str, Strict(), AfterValidator(_checked(values.check_network))]
DnsTtl = Annotated[
    float,
    BeforeValidator(_checked(_duration_or_zero)),
    AfterValidator(_checked(values.check_dns_ttl)),
]


class Doc(BaseModel):
    """Base of every wire model: camelCase keys only, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


# ------------------------------------------------------------------------------ clusters


class GatewayDoc(Doc):
    east_west: Url = Field(
        alias="eastWest",
        description="Required. URL where other gateways reach this cluster's gateway "
        "(east-west listener, mutual TLS), http(s)://host:port.",
    )


class KubernetesDoc(Doc):
    namespaces: list[DnsLabel] = Field(
        default=["default"],
        min_length=1,
        description="Namespaces whose EndpointSlices are watched. Default: [default].",
    )
    context: NonEmptyStr | None = Field(
        default=None,
        description="kubeconfig context. Default: null (in-cluster config, else the "
        "current context).",
    )


class PublicEntryDoc(Doc):
    addresses: list[IpAddress] | None = Field(
        default=None,
        min_length=1,
        description="IP addresses where clients reach this cluster's gateways (its load "
        "balancer): DNS answers A/AAAA records with them. Exactly one of addresses, "
        "hostname. Default: none.",
    )
    hostname: Hostname | None = Field(
        default=None,
        description="A hostname for the same (e.g. a cloud load balancer's name): DNS answers "
        "a CNAME to it. Exactly one of addresses, hostname. Default: none.",
    )


class ClusterDoc(Doc):
    name: DnsLabel = Field(description="Required. Unique name, DNS-label syntax.")
    region: NonEmptyStr = Field(description="Required. The provider's region or the site name.")
    cloud: Literal["aws", "gcp", "azure", "onprem", "other"] = Field(
        description="Required. aws | gcp | azure | onprem | other."
    )
    environment: NonEmptyStr = Field(default="prod", description="Default: prod.")
    tier: Int = Field(
        default=0,
        ge=0,
        description="Failover tier, >= 0. Traffic leaves the lowest tier only when it has no "
        "healthy cluster. Default: 0.",
    )
    gateway: GatewayDoc = Field(description="Required. How other gateways reach this one.")
    kubernetes: KubernetesDoc | None = Field(
        default=None,
        description="Discover endpoints from this cluster's Kubernetes API. Default: null "
        "(no discovery: static endpoints only).",
    )
    labels: dict[Str, Str] = Field(default={}, description="Free-form labels. Default: {}.")
    public_entry: PublicEntryDoc | None = Field(
        default=None,
        alias="publicEntry",
        description="Where clients reach this cluster from outside, for the federation's "
        "DNS. Default: null (DNS never answers with this cluster).",
    )


# ------------------------------------------------------------------------------ services


class ValueMatchDoc(Doc):
    name: HeaderName = Field(description="Required. Header name (any case) or query parameter.")
    exact: Str | None = Field(default=None, description="The value equals this. Default: none.")
    prefix: Str | None = Field(
        default=None, description="The value starts with this. Default: none."
    )
    present: Annotated[bool, Strict()] | None = Field(
        default=None, description="true: carried (any value); false: not carried. Default: none."
    )


class QueryMatchDoc(ValueMatchDoc):
    name: NonEmptyStr = Field(description="Required. Query parameter name (case-sensitive).")


class RouteMatchDoc(Doc):
    methods: list[Method] = Field(
        default=[], description="Any of these methods (upper case). Default: any method."
    )
    headers: list[ValueMatchDoc] = Field(
        default=[], description="Every one must hold. Default: none."
    )
    query: list[QueryMatchDoc] = Field(
        default=[], description="Every one must hold. Default: none."
    )


class BackendDoc(Doc):
    service: DnsLabel = Field(description="Required. A service of this manifest.")
    weight: Int = Field(default=1, ge=0, le=10000, description="0..10000. Default: 1.")


class StickyDoc(Doc):
    header: HeaderName | None = Field(
        default=None, description="Hash this header's value. Default: none."
    )
    cookie: CookieName | None = Field(
        default=None, description="Hash this cookie's value. Default: none."
    )


class HeaderRulesDoc(Doc):
    add: dict[HeaderName, HeaderValue] = Field(default={}, description="Appended. Default: {}.")
    set_: dict[HeaderName, HeaderValue] = Field(
        default={}, alias="set", description="Replaces every value. Default: {}."
    )
    remove: list[HeaderName] = Field(default=[], description="Removed. Default: [].")


class RewriteDoc(Doc):
    path_prefix: PathPrefix | None = Field(
        default=None,
        alias="pathPrefix",
        description="Replaces the matched route prefix ('/' strips it). Default: unchanged.",
    )
    host: RedirectHost | None = Field(
        default=None, description="The Host header sent upstream. Default: unchanged."
    )


class RedirectDoc(Doc):
    scheme: Literal["http", "https"] | None = Field(
        default=None, description="http | https. Default: the request's."
    )
    host: RedirectHost | None = Field(default=None, description="Default: the request's.")
    port: Port | None = Field(default=None, description="Default: the scheme's default.")
    path: HttpPath | None = Field(
        default=None, description="Replaces the whole path. Default: none."
    )
    path_prefix: PathPrefix | None = Field(
        default=None,
        alias="pathPrefix",
        description="Replaces the matched route prefix. Default: none.",
    )
    status: Literal[301, 302, 303, 307, 308] = Field(
        default=302, description="301 | 302 | 303 | 307 | 308. Default: 302."
    )


class RouteDoc(Doc):
    host: RouteHost = Field(
        description="Required. Exact host (shop.acme.com) or wildcard (*.acme.com); "
        "matched case-insensitively."
    )
    path_prefix: PathPrefix = Field(
        default="/", alias="pathPrefix", description="Starts with '/'. Default: /."
    )
    match: RouteMatchDoc | None = Field(
        default=None, description="Methods, headers, query parameters. Default: any request."
    )
    backends: list[BackendDoc] = Field(
        default=[], description="Weighted split between services. Default: this service."
    )
    sticky: StickyDoc | None = Field(
        default=None, description="Keep a client on one backend of the split. Default: null."
    )
    request_headers: HeaderRulesDoc | None = Field(
        default=None, alias="requestHeaders", description="Default: null."
    )
    response_headers: HeaderRulesDoc | None = Field(
        default=None, alias="responseHeaders", description="Default: null."
    )
    rewrite: RewriteDoc | None = Field(default=None, description="Default: null.")
    redirect: RedirectDoc | None = Field(
        default=None, description="Answer with a redirect instead. Default: null."
    )
    timeout: Duration | None = Field(
        default=None, description="Replaces timeouts.request on this route. Default: null."
    )
    tls: Literal["vault", "acme"] | None = Field(
        default=None,
        description="The public certificate of this host: vault (the Vault PKI or KV one) "
        "or acme (ordered once for the federation, docs/tls.md). Default: the service's.",
    )


class HealthCheckDoc(Doc):
    path: HttpPath = Field(default="/healthz", description="Default: /healthz.")
    interval: Duration = Field(default=1.0, description="Default: 1s.")
    timeout: Duration = Field(default=0.5, description="Shorter than interval. Default: 500ms.")
    healthy_after: Int = Field(
        default=2, ge=1, alias="healthyAfter", description="Successes to turn healthy. Default: 2."
    )
    unhealthy_after: Int = Field(
        default=3,
        ge=1,
        alias="unhealthyAfter",
        description="Failures to turn unhealthy. Default: 3.",
    )


class FailoverDoc(Doc):
    policy: Literal["healthiest", "ordered"] = Field(
        default="healthiest", description="healthiest | ordered. Default: healthiest."
    )
    order: list[DnsLabel] | None = Field(
        default=None,
        description="With policy ordered (required there): clusters of the service in order "
        "of preference. Default: none.",
    )
    failback_window: DurationOrZero = Field(
        default=10.0,
        alias="failbackWindow",
        description="Time over which traffic ramps back to a recovered cluster; 0s: at once. "
        "Default: 10s.",
    )


class RetriesDoc(Doc):
    attempts: Int = Field(
        default=2, ge=0, le=10, description="Retries after the first try, 0..10. Default: 2."
    )
    per_try_timeout: Duration = Field(
        default=2.0,
        alias="perTryTimeout",
        description="At most timeouts.request. Default: 2s.",
    )
    budget_percent: Number = Field(
        default=20.0,
        ge=0,
        le=100,
        alias="budgetPercent",
        description="Retries add at most this percentage of requests, 0..100. Default: 20.",
    )
    on: list[RetryCondition] = Field(
        default=["connect-failure", "reset", "timeout", "502", "503", "504"],
        description="connect-failure | reset | timeout | 502 | 503 | 504 | 5xx. "
        "Default: [connect-failure, reset, timeout, 502, 503, 504].",
    )
    grpc_status: list[GrpcStatus] = Field(
        default=["UNAVAILABLE"],
        alias="grpcStatus",
        description="For protocol: grpc, a call answered with one of these gRPC statuses "
        "(names, e.g. UNAVAILABLE, RESOURCE_EXHAUSTED) is tried again. Default: [UNAVAILABLE].",
    )


class CircuitBreakerDoc(Doc):
    max_pending: Int = Field(default=1024, ge=1, alias="maxPending", description="Default: 1024.")
    consecutive_failures: Int = Field(
        default=5, ge=1, alias="consecutiveFailures", description="Default: 5."
    )
    open_for: Duration = Field(default=10.0, alias="openFor", description="Default: 10s.")


class RateLimitDoc(Doc):
    average: Number = Field(gt=0, description="Required. Requests per second, > 0.")
    burst: Int | None = Field(
        default=None, ge=1, description="Bucket size, >= 1. Default: average rounded up."
    )
    per: LimitKey = Field(
        default="client-ip",
        description="client-ip | peer-identity | header:<Header-Name>. Default: client-ip.",
    )
    scope: Literal["gateway", "federation"] = Field(
        default="gateway",
        description="gateway: the limit holds per gateway; federation: shared by all live "
        "gateways. Default: gateway.",
    )


class AccessDoc(Doc):
    allow: list[AllowEntry] = Field(
        min_length=1,
        description="Required, non-empty. SPIFFE IDs (matched against the mTLS peer) and "
        "IP addresses / CIDRs (matched against the client address).",
    )


class TimeoutsDoc(Doc):
    connect: Duration = Field(default=1.0, description="Default: 1s.")
    request: Duration = Field(default=30.0, description="Total, across retries. Default: 30s.")
    idle: Duration = Field(default=60.0, description="Idle upstream connection. Default: 60s.")


class NearestDoc(Doc):
    cidr: Cidr = Field(description="Required. Client network (CIDR or one address).")
    clusters: list[DnsLabel] = Field(
        min_length=1,
        description="Required, non-empty. This service's clusters these clients prefer, in order.",
    )


class ServiceDnsDoc(Doc):
    strategy: Literal["healthiest", "ordered", "weighted", "nearest"] = Field(
        default="healthiest",
        description="healthiest | ordered | weighted | nearest (docs/dns.md). Default: healthiest.",
    )
    ttl: DnsTtl = Field(
        default=5.0, description="TTL of the answers, whole seconds, 0s..24h. Default: 5s."
    )
    order: list[DnsLabel] | None = Field(
        default=None,
        description="With strategy ordered: clusters in order of preference. Default: "
        "failover.order, else the service's clusters in order.",
    )
    nearest: list[NearestDoc] | None = Field(
        default=None,
        description="With strategy nearest (required there): client networks and the "
        "clusters they prefer; the longest matching network wins. Default: none.",
    )


class ServiceDoc(Doc):
    name: DnsLabel = Field(description="Required. Unique name, DNS-label syntax.")
    routes: list[RouteDoc] = Field(min_length=1, description="Required, non-empty.")
    port: Port = Field(description="Required. The backends' port (for discovered endpoints).")
    clusters: list[DnsLabel] = Field(
        min_length=1, description="Required, non-empty. Clusters that run the service."
    )
    endpoints: dict[Str, Annotated[list[HostPort], Field(min_length=1)]] = Field(
        default={},
        description="Static endpoints per cluster (host:port). Default: {}.",
    )
    health_check: HealthCheckDoc = Field(
        default=HealthCheckDoc(), alias="healthCheck", description="Default: all defaults."
    )
    failover: FailoverDoc = Field(default=FailoverDoc(), description="Default: healthiest.")
    retries: RetriesDoc = Field(default=RetriesDoc(), description="Default: all defaults.")
    circuit_breaker: CircuitBreakerDoc = Field(
        default=CircuitBreakerDoc(), alias="circuitBreaker", description="Default: all defaults."
    )
    rate_limit: RateLimitDoc | None = Field(
        default=None, alias="rateLimit", description="Default: null (no limit)."
    )
    access: AccessDoc | None = Field(default=None, description="Default: null (public).")
    timeouts: TimeoutsDoc = Field(default=TimeoutsDoc(), description="Default: all defaults.")
    max_body_bytes: Int | None = Field(
        default=None,
        ge=1,
        alias="maxBodyBytes",
        description="Request body limit (413 above). Default: null (unlimited, streamed).",
    )
    protocol: Literal["http", "h2", "grpc"] = Field(
        default="http",
        description="What the backends speak: http (HTTP/1.1), h2 (HTTP/2 with prior "
        "knowledge) or grpc (HTTP/2; trailers, grpc-timeout, retries on grpc-status, "
        "health checks through grpc.health.v1). Default: http.",
    )
    dns: ServiceDnsDoc = Field(
        default=ServiceDnsDoc(),
        description="How the federation's DNS answers for the route hosts. Default: "
        "healthiest, ttl 5s.",
    )
    tls: Literal["vault", "acme"] = Field(
        default="vault",
        description="The public certificate of the route hosts: vault or acme (ordered "
        "once for the federation, docs/tls.md). Default: vault.",
    )


# ------------------------------------------------------------------------------ document


class MetadataDoc(Doc):
    name: DnsLabel = Field(description="Required. The federation's name, DNS-label syntax.")


class ZoneDoc(Doc):
    name: Hostname = Field(description="Required. The zone's apex, e.g. acme.com.")
    hostmaster: Hostname | None = Field(
        default=None,
        description="The SOA contact as a hostname (hostmaster.acme.com). "
        "Default: hostmaster.<zone>.",
    )
    ttl: DnsTtl = Field(default=60.0, description="TTL of SOA and NS records. Default: 60s.")
    negative_ttl: DnsTtl = Field(
        default=5.0,
        alias="negativeTtl",
        description="How long resolvers cache NXDOMAIN and no-data answers (the SOA "
        "minimum). Default: 5s.",
    )


class ManifestDoc(Doc):
    api_version: Literal["fedgate/v1"] = Field(alias="apiVersion", description="Required.")
    kind: Literal["Federation"] = Field(description="Required.")
    metadata: MetadataDoc = Field(description="Required.")
    clusters: list[ClusterDoc] = Field(min_length=1, description="Required, non-empty.")
    services: list[ServiceDoc] = Field(default=[], description="Default: [].")
    zones: list[ZoneDoc] = Field(
        default=[],
        description="DNS zones the gateways serve authoritatively (docs/dns.md). Default: [].",
    )
