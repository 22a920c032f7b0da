"""The request path: a raw ASGI callable per listener over one shared :class:`DataPlane`.

A request: take the current (view, route table) pair once -> host and path to a route ->
hop guard -> access policy (403) -> rate limit (429) -> body limit (413) -> placement
(clusters in order) -> endpoint (balancer) or the remote cluster's gateway -> forward
with retries, breakers and a retry budget -> stream the answer back -> telemetry.
Nothing here awaits etcd, Vault or Kubernetes.

Retries: a failed try (connect failure, reset, per-try timeout, a status in
``retries.on``) is tried again when ``retryable()`` and the retry budget allow it and
the body can be sent again: bodies up to 64 KiB are buffered and can; bigger ones are
streamed and are not retried once a byte went upstream. A retry goes to another
endpoint of the same cluster first, the last one to the next cluster of the plan.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from federation.model import Endpoint, RoutingView, Service
from federation.settings import GatewaySettings
from gateway import hygiene
from gateway.balancer import Balancer
from gateway.hygiene import FORWARDED_HEADER, HOPS_HEADER, MAX_HOPS, PEER_HEADER
from gateway.passive import PassiveStats
from gateway.placement import Placement
from gateway.policy import allowed
from gateway.protocol import FastCycle, GatewayProtocol
from gateway.proxy import (
    CONNECT,
    PROTOCOL,
    TIMEOUT,
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    request_head,
)
from gateway.ratelimit import RateLimiter, limit_key
from gateway.resilience import CircuitBreakers, FailureKind, RetryBudget, retryable
from gateway.routing import RouteTable, split_host
from gateway.telemetry import RequestTrace, Telemetry
from gateway.tls import TlsContexts, gateway_cluster, parse_spiffe_id
from gateway.types import Message, Receive, Scope, Send, ViewHolder

BUFFER_LIMIT = 64 * 1024  # request bodies up to this size are buffered (and retryable)
PING_PATH = "/__fedgate/ping"
_KIND = {
    CONNECT: FailureKind.CONNECT,
    TIMEOUT: FailureKind.TIMEOUT,
}
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


class _Reply(Exception):
    def __init__(self, status: int, reason: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


async def respond(
    send: Send,
    status: int,
    text: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    close: bool = False,
) -> None:
    body = text.encode() + b"\n"
    h = [*_TEXT, (b"content-length", str(len(body)).encode())]
    if headers:
        h += headers
    if close:
        h.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": h})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class _Target:
    """Where one try goes: an endpoint of the local cluster or a remote cluster's gateway."""

    __slots__ = (
        "address",
        "cluster",
        "host",
        "pool_key",
        "port",
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
        ssl: Any = None,
        server_hostname: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.address = address
        self.host = host
        self.port = port
        self.remote = remote
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.pool_key = (host, port, ssl is not None)  # UpstreamPool's key


class DataPlane:
    """The shared state of the request path (one per gateway process)."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
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
        self.clock = clock
        self.trusted = hygiene.TrustedProxies(settings.trusted_proxies)
        self.insecure_east_west = settings.insecure_east_west
        pki = settings.vault.pki if settings.vault is not None else None
        self.trust_domain = pki.trust_domain if pki is not None else None
        self._hop_peers: dict[str, bool] = {}  # peer identity -> may speak for a gateway
        self.body_timeout = settings.limits.header_timeout  # idle limit while a body arrives
        self._locals: dict[str, _Target] = {}  # endpoint address -> target (immutable)
        self.hosts: dict[bytes, str] = {}  # Host header -> host name (a parse cache)
        self.fast_served = 0  # requests served by callbacks, without an ASGI task
        self._remotes: dict[str, _Target | None] = {}
        self.route_builds = 0  # route tables compiled (config changes only)
        self.current: tuple[RoutingView, RouteTable] = (holder.view, RouteTable.build(holder.view))
        holder.subscribe(self._on_view)

    def hop_trusted(self, scope: Scope) -> bool:
        """May this east-west connection speak for another gateway (``x-fedgate-forwarded``
        and ``x-fedgate-peer``)? Only when its verified client certificate is a gateway's
        SPIFFE ID (``spiffe://<trust domain>/cluster/<name>/gateway``); any other peer
        that merely chains to the CA is served as a direct client with its own identity.
        In the development mode without TLS (``insecureEastWest``) there is no identity
        to check."""
        if self.insecure_east_west:
            return True
        peer = scope.get("fedgate.peer")
        if not peer:
            return False
        ok = self._hop_peers.get(peer)
        if ok is None:
            domain = self.trust_domain
            if domain is None:  # certificates from KV: the peer's own trust domain
                parsed = parse_spiffe_id(peer)
                domain = parsed[0] if parsed is not None else ""
            ok = gateway_cluster(peer, domain) is not None
            if len(self._hop_peers) > 1024:
                self._hop_peers.clear()
            self._hop_peers[peer] = ok
        return ok

    def _on_view(self, view: RoutingView) -> None:
        before, table = self.current
        if view is not before:
            if view.services is not before.services:  # the incremental view keeps it otherwise
                table = RouteTable.build(view)
                self.route_builds += 1
            self.current = (view, table)  # one assignment: a consistent pair
            self._remotes = {}
            if len(self._locals) > 10000:
                self._locals = {}

    def app(self, listener: str) -> ListenerApp:
        return ListenerApp(self, listener=listener)

    # ------------------------------------------------------------ targets
    def _local_target(self, service: Service, cluster: str, exclude: set[str]) -> _Target | None:
        view = self.current[0]
        ep: Endpoint | None = self.balancer.pick(
            service.name, cluster, view.endpoints_of(service.name, cluster), exclude=exclude
        )
        if ep is None:
            return None
        address = ep.address
        target = self._locals.get(address)
        if target is None or target.cluster != cluster:
            host, port = _split_address(address)
            target = self._locals[address] = _Target(cluster, address, host, port, remote=False)
        return target

    def _remote_target(self, view: RoutingView, cluster: str) -> _Target | None:
        if cluster in self._remotes:
            return self._remotes[cluster]
        target: _Target | None = None
        c = view.clusters.get(cluster)
        url = c.east_west if c is not None else ""
        scheme, sep, rest = url.partition("://")
        hostport = rest.split("/", 1)[0] if sep else ""
        if hostport and scheme in ("http", "https"):
            host, _, port_s = hostport.rpartition(":")
            if not host or not port_s.isdigit():
                host, port_s = hostport, ("443" if scheme == "https" else "80")
            host = host.strip("[]")
            if scheme == "https":
                ctx = self.tls.east_west_client if self.tls is not None else None
                if ctx is not None:
                    target = _Target(
                        cluster, hostport, host, int(port_s), remote=True, ssl=ctx,
                        server_hostname=host,
                    )  # fmt: skip
            elif self.insecure_east_west:
                target = _Target(cluster, hostport, host, int(port_s), remote=True)
        self._remotes[cluster] = target
        return target


class _Body:
    """The client's request body: buffered (retryable) or a stream to pass through."""

    __slots__ = ("buffered", "chunked", "done", "length", "max", "prefix", "received", "timeout")

    def __init__(
        self, length: int | None, chunked: bool, limit: int | None, timeout: float
    ) -> None:
        self.timeout = timeout  # the client must send the next piece within this
        self.length = length  # Content-Length, or None
        self.chunked = chunked
        self.max = limit
        self.prefix = b""  # what was read ahead (the whole body when buffered)
        self.done = length is None and not chunked  # no body at all
        self.buffered = self.done
        self.received = 0

    async def read_ahead(self, receive: Receive) -> None:
        """Read up to BUFFER_LIMIT bytes; ``buffered`` when that was the whole body."""
        if self.done:
            return
        if self.length is not None and self.length > BUFFER_LIMIT:
            return  # stream it from the first byte
        parts = []
        size = 0
        while True:
            msg = await self.next(receive)
            if msg["type"] != "http.request":
                raise _Reply(499, "client disconnected")
            chunk = msg.get("body", b"")
            if chunk:
                parts.append(chunk)
                size += len(chunk)
                self._count(len(chunk))
            if not msg.get("more_body", False):
                self.done = self.buffered = True
                break
            if size > BUFFER_LIMIT:
                break
        self.prefix = b"".join(parts)

    async def next(self, receive: Receive) -> Message:
        try:
            async with asyncio.timeout(self.timeout):
                return await receive()
        except TimeoutError:
            raise _Reply(408, "request body not received in time") from None

    def _count(self, n: int) -> None:
        self.received += n
        if self.max is not None and self.received > self.max:
            raise _Reply(413, "request body too large")


class ListenerApp:
    """The ASGI app of one listener (public, public_tls or east_west)."""

    __slots__ = ("east_west", "listener", "plane", "scheme")

    def __init__(self, plane: DataPlane, *, listener: str) -> None:
        self.plane = plane
        self.listener = listener
        self.east_west = listener == "east_west"
        self.scheme = "https" if listener == "public_tls" else "http"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "websocket":
            from gateway.websocket import proxy_websocket

            await proxy_websocket(self, scope, receive, send)
        # lifespan is off

    # ------------------------------------------------------------ the callback fast path
    def try_fast(self, protocol: GatewayProtocol, scope: Scope, fast: FastCycle) -> bool:
        """Serve a plain GET without an ASGI task: callbacks from the client protocol to
        an idle pooled upstream connection and back. Only the common case qualifies (a
        known host, a route without access policy or rate limit, the local cluster
        first in the plan, an idle keep-alive connection to the picked endpoint);
        everything else, and every try that fails in a retryable way, goes the ASGI way
        (:meth:`http`), which applies the same rules. Returns False to decline."""
        plane = self.plane
        view, table = plane.current
        headers = scope["headers"]
        host_raw = None
        for name, value in headers:
            if name == b"host":
                host_raw = value
            elif name[:10] == b"x-fedgate-":
                return False
        if host_raw is None:
            return False
        host = plane.hosts.get(host_raw)
        if host is None:
            return False  # the ASGI path parses and caches it
        path: str = scope["path"]
        if "/." in path or (self.east_west and path == PING_PATH):
            return False
        match = table.match(host, path)
        if match is None:
            return False
        service = match.service
        if service.access is not None or service.rate_limit is not None:
            return False
        start = plane.clock()
        plan = plane.placement.plan(view, service)
        if not plan or plan[0] != plane.cluster:
            return False
        cluster = plan[0]
        target = plane._local_target(service, cluster, _NO_EXCLUDE)
        if target is None:
            return False
        pool = plane.pool
        conn = pool.take_idle(target.pool_key)
        if conn is None:
            return False
        breaker = plane.breakers.get(service.name, cluster, service.circuit_breaker)
        if not breaker.try_acquire():
            pool.put_back(conn)
            return False
        client = scope.get("client")
        client_ip = client[0] if client else "0.0.0.0"
        trace = plane.telemetry.begin(headers)
        plane.budget.on_request(service.name)
        target_bytes: bytes = scope["raw_path"]
        qs = scope["query_string"]
        if qs:
            target_bytes = target_bytes + b"?" + qs
        head = hygiene.upstream_head(
            b"GET",
            target_bytes,
            host_raw,
            headers,
            client_ip=client_ip,
            scheme=self.scheme,
            trust_forwarded=client_ip in plane.trusted,
            traceparent=trace.traceparent or None,
            hops=1,
        )
        plane.balancer.started(target.address)
        plane.fast_served += 1
        conn.listener = _FastExchange(
            self, protocol, fast, service, target, breaker, trace, start, host, path, client_ip
        )
        # conn.write + conn.set_timeout inlined: an idle connection just taken from the
        # pool has a transport, no error and no answer
        conn.sent = True
        transport = conn.transport
        assert transport is not None
        transport.write(head)
        conn.deadline = conn.loop.time() + min(
            service.retries.per_try_timeout, service.timeouts.request
        )
        return True

    # ------------------------------------------------------------ the hot path
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        plane = self.plane
        start = plane.clock()
        view, table = plane.current
        headers = scope["headers"]
        method: str = scope["method"]
        path: str = scope["path"]
        client = scope.get("client")
        client_ip = client[0] if client else "0.0.0.0"

        host_raw = b""
        length: int | None = None
        chunked = False
        forwarded: bytes | None = None
        hops = 0
        peer_hdr: bytes | None = None
        hop_ok = self.east_west and plane.hop_trusted(scope)
        for name, value in headers:
            if name == b"host":
                host_raw = value
            elif name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
            elif name[:10] == b"x-fedgate-":
                if name == HOPS_HEADER:
                    hops = int(value) if value.isdigit() and len(value) < 4 else MAX_HOPS
                elif hop_ok:
                    if name == FORWARDED_HEADER:
                        forwarded = value
                    elif name == PEER_HEADER:
                        peer_hdr = value

        host = plane.hosts.get(host_raw)
        if host is None:
            host = split_host(host_raw)
            if host is None:
                await respond(send, 400, "invalid Host header", close=True)
                return
            if len(plane.hosts) > 4096:
                plane.hosts.clear()
            plane.hosts[host_raw] = host
        if self.east_west and path == PING_PATH:
            pong = plane.cluster_bytes
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*_TEXT, (b"content-length", str(len(pong)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": pong})
            return
        if "/." in path and _dot_segments(path):
            await respond(send, 400, "dot segments in the path are not accepted")
            return

        match = table.match(host, path)
        if match is None:
            plane.telemetry.end(
                plane.telemetry.begin(headers), method=method, host=host, path=path,
                service=None, cluster=None, upstream=None, status=404,
                duration=plane.clock() - start, client=client_ip, retries=0,
                forwarded=forwarded is not None,
            )  # fmt: skip
            await respond(send, 404, "no route for this host and path")
            return
        service = match.service
        trace = plane.telemetry.begin(headers)
        status = 502
        cluster: str | None = None
        upstream: str | None = None
        retries = 0
        try:
            if hops >= MAX_HOPS:
                raise _Reply(508, "loop detected: too many gateway hops")
            if forwarded is not None:
                client_ip = hygiene.last_forwarded_for(headers) or client_ip
                peer_id = peer_hdr.decode("latin-1") if peer_hdr else None
            else:
                peer_id = scope.get("fedgate.peer")
            if service.access is not None and not allowed(
                service.access, client_ip=client_ip, peer_id=peer_id
            ):
                plane.telemetry.denied(service.name)
                raise _Reply(403, "forbidden")
            if service.rate_limit is not None and forwarded is None:
                key = limit_key(
                    service.rate_limit, client_ip=client_ip, headers=headers, peer_id=peer_id
                )
                wait = plane.limiter.check(service, key)
                if wait > 0.0:
                    plane.telemetry.rate_limited(service.name)
                    raise _Reply(
                        429,
                        "rate limited",
                        [(b"retry-after", str(max(1, math.ceil(wait))).encode())],
                    )
            limit = service.max_body_bytes
            if limit is not None and length is not None and length > limit:
                raise _Reply(413, "request body too large")
            body = _Body(length, chunked, limit, plane.body_timeout)
            await body.read_ahead(receive)

            trust = (self.east_west and forwarded is not None) or client_ip in plane.trusted
            out_headers = hygiene.request_headers(
                headers,
                client_ip=client_ip if forwarded is None else _peer_ip(scope),
                scheme=self.scheme,
                host=host_raw,
                trust_forwarded=trust,
                traceparent=trace.traceparent or None,
                hops=hops + 1,
            )
            target_bytes: bytes = scope["raw_path"]
            qs = scope["query_string"]
            if qs:
                target_bytes = target_bytes + b"?" + qs
            status, cluster, upstream, retries = await self._forward(
                scope, receive, send, view, service, method, target_bytes, host_raw,
                out_headers, body, forwarded is not None, peer_id, trace, start,
            )  # fmt: skip
        except _Reply as r:
            status = r.status
            if status != 499:
                await respond(send, status, r.reason, r.headers, close=status in (408, 413))
        finally:
            plane.telemetry.end(
                trace, method=method, host=host, path=path, service=service.name,
                cluster=cluster, upstream=upstream, status=status,
                duration=plane.clock() - start, client=client_ip, retries=retries,
                forwarded=forwarded is not None,
            )  # fmt: skip

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        view: RoutingView,
        service: Service,
        method: str,
        target: bytes,
        host: bytes,
        headers: list[tuple[bytes, bytes]],
        body: _Body,
        forwarded: bool,
        peer_id: str | None,
        trace: RequestTrace,
        start: float,
    ) -> tuple[int, str | None, str | None, int]:
        """Try the plan; returns (status sent, cluster, upstream address, retries)."""
        plane = self.plane
        local = plane.cluster
        name = service.name
        plane.budget.on_request(name)
        if forwarded:
            plan: tuple[str, ...] = (local,)
        else:
            plan = plane.placement.plan(view, service)
        if not plan:
            raise _Reply(503, "no healthy cluster for this service")
        retries_cfg = service.retries
        deadline = start + service.timeouts.request
        max_tries = retries_cfg.attempts + 1
        method_b = method.encode("ascii")
        tried: set[str] = set()
        ci = 0
        in_cluster = 0
        tries = 0
        last: tuple[int, str] = (503, "no upstream available")
        local_head: bytes | None = None
        remote_head: bytes | None = None
        framing = _framing(body)
        while ci < len(plan):
            cluster = plan[ci]
            remote = cluster != local
            target_: _Target | None
            if remote:
                target_ = None if forwarded else plane._remote_target(view, cluster)
            else:
                target_ = plane._local_target(service, cluster, tried)
            if target_ is None:
                ci += 1
                in_cluster = 0
                continue
            breaker = plane.breakers.get(name, cluster, service.circuit_breaker)
            if not breaker.try_acquire():
                last = (503, f"circuit breaker open for {name} in {cluster}")
                ci += 1
                in_cluster = 0
                continue
            if tries and cluster != plan[0] and in_cluster == 0:
                plane.telemetry.failover(name, plan[0], cluster)
            tries += 1
            in_cluster += 1
            address = target_.address
            if remote:
                if remote_head is None:
                    extra = [(FORWARDED_HEADER, plane.cluster_bytes)]
                    if peer_id:
                        extra.append((PEER_HEADER, peer_id.encode("latin-1")))
                    remote_head = request_head(method, target, host, headers + extra, framing)
                head = remote_head
            else:
                plane.balancer.started(address)
                if local_head is None:
                    local_head = request_head(method, target, host, headers, framing)
                head = local_head
            t0 = plane.clock()
            remaining = deadline - t0
            conn: UpstreamConnection | None = None
            failure: UpstreamError | None = None
            try:
                if remaining <= 0:
                    raise UpstreamError(TIMEOUT, "request timeout", sent=False)
                conn = await self._send_request(
                    target_, service, head, body, receive, remaining, method == "HEAD"
                )
                conn.set_timeout(min(retries_cfg.per_try_timeout, deadline - plane.clock()))
                await conn.read_head()
            except UpstreamError as exc:
                failure = exc
                if conn is not None:
                    plane.pool.discard(conn)
            except BaseException:
                if conn is not None:
                    plane.pool.discard(conn)
                breaker.release(ok=False)
                if not remote:
                    plane.balancer.finished(address, ok=False)
                raise
            if failure is None:
                assert conn is not None
                status = conn.status
                ok = status < 500
                can_retry = (
                    not ok
                    and tries < max_tries
                    and body.buffered
                    and retryable(
                        method=method_b,
                        kind=FailureKind.STATUS,
                        status=status,
                        conditions=retries_cfg.on,
                        request_sent=True,
                    )
                )
                if (
                    can_retry
                    and self._more_targets(plan, ci, cluster, view, service, tried)
                    and plane.budget.try_retry(name, retries_cfg.budget_percent)
                ):
                    self._record(service, target_, breaker, ok=False, t0=t0)
                    if conn.complete:
                        conn.take_all()
                        plane.pool.release(conn)
                    else:
                        plane.pool.discard(conn)
                    tried.add(address)
                    last = (status, f"upstream answered {status}")
                    ci, in_cluster = self._advance(
                        plan, ci, in_cluster, tries, max_tries, plane.cluster
                    )
                    continue
                self._record(service, target_, breaker, ok=ok, t0=t0)
                await self._relay(conn, send, receive, method, service, body)
                return status, cluster, address, tries - 1
            # a failed try
            assert failure is not None
            self._record(service, target_, breaker, ok=False, t0=t0)
            tried.add(address)
            kind = _KIND.get(failure.kind, FailureKind.RESET)
            code = 504 if failure.kind == TIMEOUT else 503 if failure.kind == CONNECT else 502
            last = (code, str(failure))
            if (
                tries < max_tries
                and (body.buffered or not failure.sent)
                and failure.kind != PROTOCOL
                and retryable(
                    method=method_b,
                    kind=kind,
                    status=None,
                    conditions=retries_cfg.on,
                    request_sent=failure.sent,
                )
                and plane.clock() < deadline
                and plane.budget.try_retry(name, retries_cfg.budget_percent)
            ):
                ci, in_cluster = self._advance(
                    plan, ci, in_cluster, tries, max_tries, plane.cluster
                )
                continue
            break
        raise _Reply(last[0], last[1])

    @staticmethod
    def _advance(
        plan: tuple[str, ...], ci: int, in_cluster: int, tries: int, max_tries: int, local: str
    ) -> tuple[int, int]:
        """Where the next try goes: the same cluster (another endpoint) or the next one.

        At most two tries per local cluster, one per remote cluster (its gateway has
        already tried its own endpoints, so a second try there only doubles the wait on
        a blackholed region), and the last try always goes to another cluster when the
        plan has one."""
        remote = plan[ci] != local
        if ci + 1 < len(plan) and (remote or in_cluster >= 2 or tries + 1 >= max_tries):
            return ci + 1, 0
        return ci, in_cluster

    def _more_targets(
        self,
        plan: tuple[str, ...],
        ci: int,
        cluster: str,
        view: RoutingView,
        service: Service,
        tried: set[str],
    ) -> bool:
        if ci + 1 < len(plan):
            return True
        if cluster != self.plane.cluster:
            return False
        eps = view.endpoints_of(service.name, cluster)
        return sum(1 for e in eps if e.routable) > len(tried) + 1

    def _record(
        self, service: Service, target: _Target, breaker: Any, *, ok: bool, t0: float
    ) -> None:
        plane = self.plane
        breaker.release(ok=ok)
        if not target.remote:
            plane.balancer.finished(target.address, ok=ok)
        plane.passive.record(service.name, target.cluster, ok=ok, latency=plane.clock() - t0)
        if ok:
            plane.placement.local_success(service.name, target.cluster)
        else:
            plane.placement.local_failure(service.name, target.cluster)

    async def _send_request(
        self,
        target: _Target,
        service: Service,
        head: bytes,
        body: _Body,
        receive: Receive,
        remaining: float,
        no_body: bool,
    ) -> UpstreamConnection:
        pool = self.plane.pool
        conn, _reused = await pool.acquire(
            target.host,
            target.port,
            ssl_context=target.ssl,
            server_hostname=target.server_hostname,
            connect_timeout=min(service.timeouts.connect, remaining),
        )
        conn.no_body = no_body
        try:
            if body.buffered:
                conn.write(head + body.prefix if body.prefix else head)
            else:
                await self._stream_body(conn, head, body, receive)
        except BaseException:
            pool.discard(conn)
            raise
        return conn

    async def _stream_body(
        self, conn: UpstreamConnection, head: bytes, body: _Body, receive: Receive
    ) -> None:
        """Send the head, what was read ahead, then the rest of the body as it arrives."""
        chunked = body.length is None
        prefix = body.prefix
        if prefix:
            conn.write(head + (b"%x\r\n%b\r\n" % (len(prefix), prefix) if chunked else prefix))
        else:
            conn.write(head)
        body.prefix = b""
        while True:
            if conn.write_paused:
                await conn.drain()
            if conn.error is not None:
                raise conn.error
            if conn.status:  # the upstream answered early: stop sending
                conn.keep_alive = False
                return
            msg = await body.next(receive)
            if msg["type"] != "http.request":
                conn.close()
                raise _Reply(499, "client disconnected")
            chunk = msg.get("body", b"")
            more = msg.get("more_body", False)
            if chunk:
                body._count(len(chunk))
                if chunked:
                    conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                else:
                    conn.write(chunk)
            if not more:
                if chunked:
                    conn.write(b"0\r\n\r\n")
                body.done = True
                return

    async def _relay(
        self,
        conn: UpstreamConnection,
        send: Send,
        receive: Receive,
        method: str,
        service: Service,
        body: _Body,
    ) -> None:
        """Send the upstream response to the client, streaming its body."""
        pool = self.plane.pool
        status = conn.status
        out = hygiene.response_headers(conn.headers, status)
        whole = conn.take_all()
        if whole is not None:  # the common case: everything is here already
            pool.release(conn)
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": whole, "more_body": False})
            return
        conn.set_idle_timeout(service.timeouts.request)
        watcher: asyncio.Task[None] | None = None
        if body.done:
            # a streamed answer: notice the client going away (receive() returns then)
            watcher = asyncio.ensure_future(_watch_disconnect(receive, conn))
        try:
            await send({"type": "http.response.start", "status": status, "headers": out})
            while True:
                chunk = await conn.read_body()
                if not chunk:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except UpstreamError:
            pool.discard(conn)
            raise _Reply(499, "upstream failed mid-response") from None
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
        pool.release(conn)


_NO_EXCLUDE: set[str] = set()
_DROP = hygiene.RESPONSE_DROP


class _FastExchange:
    """One callback exchange (see :meth:`ListenerApp.try_fast`)."""

    __slots__ = (
        "app",
        "breaker",
        "client_ip",
        "fast",
        "host",
        "path",
        "protocol",
        "service",
        "start",
        "target",
        "trace",
    )

    def __init__(
        self,
        app: ListenerApp,
        protocol: GatewayProtocol,
        fast: FastCycle,
        service: Service,
        target: _Target,
        breaker: Any,
        trace: RequestTrace,
        start: float,
        host: str,
        path: str,
        client_ip: str,
    ) -> None:
        self.app = app
        self.protocol = protocol
        self.fast = fast
        self.service = service
        self.target = target
        self.breaker = breaker
        self.trace = trace
        self.start = start
        self.host = host
        self.path = path
        self.client_ip = client_ip

    def upstream_event(self, conn: UpstreamConnection) -> None:
        conn.listener = None
        app = self.app
        plane = app.plane
        service = self.service
        target = self.target
        error = conn.error
        if error is not None:
            app._record(service, target, self.breaker, ok=False, t0=self.start)
            plane.pool.discard(conn)
            kind = _KIND.get(error.kind, FailureKind.RESET)
            if (
                error.kind != PROTOCOL
                and retryable(
                    method=b"GET",
                    kind=kind,
                    status=None,
                    conditions=service.retries.on,
                    request_sent=error.sent,
                )
                and plane.budget.try_retry(service.name, service.retries.budget_percent)
            ):
                self.protocol.fast_fallback(self.fast)  # tried again the ASGI way
                return
            code = 504 if error.kind == TIMEOUT else 503 if error.kind == CONNECT else 502
            text = str(error).encode() + b"\n"
            self._answer(
                code,
                [(b"content-type", b"text/plain; charset=utf-8")],
                text,
                None,
            )
            return
        status = conn.status
        ok = status < 500
        if (
            not ok
            and retryable(
                method=b"GET",
                kind=FailureKind.STATUS,
                status=status,
                conditions=service.retries.on,
                request_sent=True,
            )
            and service.retries.attempts > 0
            and plane.budget.try_retry(service.name, service.retries.budget_percent)
        ):
            app._record(service, target, self.breaker, ok=False, t0=self.start)
            if conn.complete:
                conn.take_all()
                plane.pool.release(conn)
            else:
                plane.pool.discard(conn)
            self.protocol.fast_fallback(self.fast)
            return
        app._record(service, target, self.breaker, ok=ok, t0=self.start)
        if not conn.complete:
            # a body still on its way: relay it from a task, streaming
            body = _Body(None, False, None, plane.body_timeout)

            async def relay(scope: Scope, receive: Receive, send: Send) -> None:
                try:
                    await app._relay(conn, send, receive, "GET", service, body)
                except _Reply:
                    pass
                finally:
                    self._end(conn.status)

            if not self.protocol.fast_fallback(self.fast, relay):
                plane.pool.discard(conn)
                self._end(499)
            return
        whole = conn.take_all() or b""
        plane.pool.release(conn)
        # hygiene.response_headers and the serialization in one pass: hop-by-hop headers
        # dropped; a Connection header naming other headers (rare) takes the long way
        parts = [STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status]
        has_length = False
        drop = hygiene.RESPONSE_DROP_NO_BODY if status == 204 or status == 304 else _DROP
        for name, value in conn.headers:
            if name in drop:
                if name == b"connection" and value != b"keep-alive" and value != b"close":
                    out = hygiene.response_headers(conn.headers, status)
                    self._answer(status, out, whole, conn)
                    return
                continue
            if name == b"content-length":
                has_length = True
            parts += (name, b": ", value, b"\r\n")
        if not has_length and status != 204 and status != 304:
            parts.append(b"content-length: %d\r\n" % len(whole))
        fast = self.fast
        if fast.keep_alive:
            parts += (b"\r\n", whole)
            self.protocol.fast_respond(b"".join(parts), fast)
        else:
            parts += (b"connection: close\r\n\r\n", whole)
            self.protocol.fast_respond(b"".join(parts), fast, close=True)
        self._end(status)

    def _answer(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        conn: UpstreamConnection | None,
    ) -> None:
        line = STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status
        parts = [line]
        has_length = False
        for name, value in headers:
            if name == b"content-length":
                has_length = True
            parts += (name, b": ", value, b"\r\n")
        self._finish(parts, has_length, status, body, conn)

    def _finish(
        self,
        parts: list[bytes],
        has_length: bool,
        status: int,
        body: bytes,
        conn: UpstreamConnection | None,
    ) -> None:
        if not has_length and status != 204 and status != 304:
            parts.append(b"content-length: %d\r\n" % len(body))
        close = not self.fast.keep_alive or conn is None
        if close:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.protocol.fast_respond(b"".join(parts), self.fast, close=close)
        self._end(status)

    def _end(self, status: int) -> None:
        plane = self.app.plane
        plane.telemetry.end(
            self.trace, method="GET", host=self.host, path=self.path,
            service=self.service.name, cluster=self.target.cluster,
            upstream=self.target.address, status=status,
            duration=plane.clock() - self.start, client=self.client_ip, retries=0,
            forwarded=False,
        )  # fmt: skip


async def _watch_disconnect(receive: Receive, conn: UpstreamConnection) -> None:
    while True:
        msg: Message = await receive()
        if msg["type"] == "http.disconnect":
            if not conn.complete:
                conn.close()
            return


def _framing(body: _Body) -> bytes:
    if body.buffered:
        n = len(body.prefix)
        if n or body.length is not None or body.chunked:
            return b"content-length: %d\r\n" % n
        return b""
    if body.length is not None:
        return b"content-length: %d\r\n" % body.length
    return b"transfer-encoding: chunked\r\n"


def _peer_ip(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "0.0.0.0"


def _dot_segments(path: str) -> bool:
    return any(seg == ".." or seg == "." for seg in path.split("/"))
