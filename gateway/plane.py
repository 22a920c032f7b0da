"""The shared state of the request path (one :class:`DataPlane` per gateway process) and
where a try goes (:class:`Target`: an endpoint of the local cluster or a remote cluster's
east-west gateway)."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet

from federation.model import Endpoint, RoutingView, Service
from gateway import hygiene
from gateway.addresses import split_host_port
from gateway.balancer import Balancer
from gateway.config import DataPlaneSettings
from gateway.h2.client import H2Pool
from gateway.h2.transport import H2Transport
from gateway.latency import LatencyTracker
from gateway.passive import PassiveStats
from gateway.placement import Placement
from gateway.ratelimit import RateLimiter
from gateway.resilience import CircuitBreakers, RetryBudget
from gateway.routing import RouteTable
from gateway.telemetry import Telemetry
from gateway.tls import (
    TlsContexts,
    forwarded_matches,
    peer_gateway_cluster,
    upstream_gateway_error,
)
from gateway.transport import Http1Transport, TargetLike, Transport
from gateway.types import Scope, ViewHolder
from gateway.upstream_pool import UpstreamPool


class Target:
    """Where one try goes: an endpoint of the local cluster or a remote cluster's gateway.

    ``protocol`` names the upstream transport (``http/1.1``, or ``h2`` for the services
    marked ``protocol: h2`` or ``grpc``); the data plane picks the transport of a try by
    it (:meth:`DataPlane.transport`)."""

    __slots__ = (
        "address",
        "cluster",
        "host",
        "pool_key",
        "port",
        "protocol",
        "remote",
        "server_hostname",
        "ssl",
    )

    def __init__(
        self,
        cluster: str,
        address: str,
        host: str,
        port: int,
        *,
        remote: bool,
        ssl: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        protocol: str = "http/1.1",
    ) -> None:
        self.cluster = cluster
        self.address = address
        self.host = host
        self.port = port
        self.remote = remote
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.protocol = protocol
        self.pool_key = (host, port, ssl is not None)  # UpstreamPool's key


class DataPlane:
    """The shared state of the request path (one per gateway process)."""

    def __init__(
        self,
        *,
        settings: DataPlaneSettings,
        holder: ViewHolder,
        placement: Placement,
        balancer: Balancer,
        breakers: CircuitBreakers,
        budget: RetryBudget,
        limiter: RateLimiter,
        telemetry: Telemetry,
        passive: PassiveStats,
        tls: TlsContexts | None,
        pool: UpstreamPool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.cluster = settings.cluster
        self.cluster_bytes = settings.cluster.encode()
        self.placement = placement
        self.balancer = balancer
        self.breakers = breakers
        self.budget = budget
        self.limiter = limiter
        self.telemetry = telemetry
        self.passive = passive
        self.tls = tls
        self.pool = pool or UpstreamPool()
        self.http1 = Http1Transport(self.pool, check_server=self.upstream_error)
        self.h2_pool = H2Pool()  # protocol: h2 / grpc upstreams (gateway/h2)
        self.h2 = H2Transport(self.h2_pool, check_server=self.upstream_error)
        self.latency = LatencyTracker()
        self.clock = clock
        self.fast_path = settings.fast_path
        self.trusted = hygiene.TrustedProxies(settings.trusted_proxies)
        self.insecure_east_west = settings.insecure_east_west
        self.trust_domain = settings.trust_domain
        self._hop_peers: dict[str, str | None] = {}  # peer identity -> cluster it speaks for
        self.body_timeout = settings.limits.header_timeout  # idle limit while a body arrives
        self._locals: dict[str, Target] = {}  # endpoint address -> target (immutable)
        self._locals_h2: dict[str, Target] = {}  # the same, for h2 / grpc services
        self.hosts: dict[bytes, str] = {}  # Host header -> host name (a parse cache)
        self.fast_served = 0  # requests served by callbacks, without an ASGI task
        self._remotes: dict[tuple[str, str], Target | None] = {}
        self.route_builds = 0  # route tables (re)compiled: config changes only
        self.current: tuple[RoutingView, RouteTable] = (holder.view, RouteTable.build(holder.view))
        holder.subscribe(self._on_view)

    def transport(self, target: Target) -> Transport:
        """The upstream transport of a try: by its target's protocol, which comes from the
        service's (``http`` -> HTTP/1.1; ``h2`` and ``grpc`` -> HTTP/2)."""
        return self.h2 if target.protocol == "h2" else self.http1

    def hop_trusted(self, scope: Scope) -> bool:
        """May this east-west connection speak for another gateway (``x-fedgate-forwarded``
        and ``x-fedgate-peer``)? Only when its verified client certificate is a gateway's
        SPIFFE ID (``spiffe://<trust domain>/cluster/<name>/gateway``) of a cluster of the
        view (cached per identity, cleared on a new view); any other peer
        that merely chains to the CA is served as a direct client with its own identity.
        In the development mode without TLS (``insecureEastWest``) there is no identity
        to check."""
        if self.insecure_east_west:
            return True
        peer = scope.get("fedgate.peer")
        if not peer:
            return False
        if peer not in self._hop_peers:
            if len(self._hop_peers) > 1024:
                self._hop_peers.clear()
            self._hop_peers[peer] = peer_gateway_cluster(
                peer, self.trust_domain, self.current[0].clusters
            )
        return self._hop_peers[peer] is not None

    def forwarded_ok(self, scope: Scope, forwarded: bytes) -> bool:
        """``x-fedgate-forwarded`` names the cluster of the client gateway's certificate
        (and that cluster exists): checked by admission for every path."""
        if self.insecure_east_west:
            return True
        peer = scope.get("fedgate.peer") or ""
        cluster = self._hop_peers.get(peer) if self.hop_trusted(scope) else None
        return cluster is not None and forwarded_matches(forwarded, cluster)

    def upstream_error(self, target: TargetLike, ssl_object: object) -> str | None:
        """Why the server of a new east-west connection is not a live gateway of the
        cluster dialled (``None``: it is, or the target is not a remote gateway over TLS)."""
        if not target.remote or target.ssl is None:
            return None
        return upstream_gateway_error(
            ssl_object if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket) else None,
            trust_domain=self.trust_domain, cluster=target.cluster, view=self.current[0],
        )  # fmt: skip

    def _on_view(self, view: RoutingView) -> None:
        before, table = self.current
        if view is not before:
            # the incremental view keeps ``services`` (the same object) on a runtime change:
            # no route work at all; otherwise only the services that changed are rebuilt
            if view.services is not before.services:
                table = RouteTable.build(view, previous=table)
                self.route_builds += 1
            self.current = (view, table)  # one assignment: a consistent pair
            self._remotes = {}
            self._hop_peers = {}  # a cluster may have come or gone
            if len(self._locals) > 10000:
                self._locals = {}
            if len(self._locals_h2) > 10000:
                self._locals_h2 = {}

    # ------------------------------------------------------------ targets
    def local_target(
        self, service: Service, cluster: str, exclude: AbstractSet[str]
    ) -> Target | None:
        view = self.current[0]
        ep: Endpoint | None = self.balancer.pick(
            service.name, cluster, view.endpoints_of(service.name, cluster), exclude=exclude
        )
        if ep is None:
            return None
        address = ep.address
        cache = self._locals if service.protocol == "http" else self._locals_h2
        target = cache.get(address)
        if target is None or target.cluster != cluster:
            try:
                host, port = split_host_port(address)
            except ValueError:
                return None  # the view's validation keeps these out
            target = cache[address] = Target(
                cluster, address, host, port, remote=False, protocol=upstream_protocol(service)
            )
        return target

    def remote_target(
        self, view: RoutingView, cluster: str, protocol: str = "http/1.1"
    ) -> Target | None:
        """The gateway of ``cluster``, spoken to in ``protocol`` (``h2`` for the services
        whose own protocol is h2 or grpc: trailers cross east-west)."""
        key = (cluster, protocol)
        if key in self._remotes:
            return self._remotes[key]
        target: Target | None = None
        c = view.clusters.get(cluster)
        url = c.east_west if c is not None else ""
        scheme, sep, rest = url.partition("://")
        hostport = rest.split("/", 1)[0] if sep else ""
        if hostport and scheme in ("http", "https"):
            try:
                host, port = split_host_port(hostport, 443 if scheme == "https" else 80)
            except ValueError:
                host, port = "", 0
            if not host:
                pass
            elif scheme == "https":
                ctx = self.tls.east_west_client if self.tls is not None else None
                if ctx is not None:
                    target = Target(
                        cluster, hostport, host, port, remote=True, ssl=ctx,
                        server_hostname=host, protocol=protocol,
                    )  # fmt: skip
            elif self.insecure_east_west:
                target = Target(cluster, hostport, host, port, remote=True, protocol=protocol)
        self._remotes[key] = target
        return target


def upstream_protocol(service: Service) -> str:
    """The transport protocol of a service's tries (:attr:`Target.protocol`)."""
    return "http/1.1" if service.protocol == "http" else "h2"
