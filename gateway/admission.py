"""Admission, written once for HTTP and WebSockets: the request's headers read once
(Host, framing, the gateway's own ``x-fedgate-*``), host and path to a route (404), the
hop guard (508; a forwarded cluster that is not the client gateway's certificate's:
403), the access policy (403) and the rate limit (429 + Retry-After).

:func:`admit` returns an :class:`Admitted` or raises :class:`~gateway.failures.Reply`.
Route rules (``gateway/rules.py``) hang off ``Admitted.match``, each applied at one place:
the route's match conditions in :func:`route` (``RouteTable.match``), the weighted
split's pick in :func:`backend`, the redirect (3xx with ``Location``, no upstream) in
:func:`admit`, the request rewrites (headers, path prefix, host) in :func:`local_request`
(the head sent to a local endpoint; another cluster's gateway applies the same rules
itself), the response header rules where the answer is relayed (``gateway/forward.py``)
and on the gateway's own answers (``app.respond``), the per-route timeout folded into the
service by the route table. A route that is not ``plain`` never takes the fast path.
"""

from __future__ import annotations

import math

from federation.model import RoutingView, Service
from gateway import hygiene, rules
from gateway.failures import Reply
from gateway.hygiene import FORWARDED_HEADER, HOPS_HEADER, MAX_HOPS, PEER_HEADER
from gateway.plane import DataPlane
from gateway.policy import allowed
from gateway.ratelimit import limit_key
from gateway.routing import RouteMatch, RouteTable, split_host
from gateway.types import Scope


class RequestHead:
    """What the data plane reads from a request's headers, in one pass."""

    __slots__ = ("chunked", "forwarded", "hops", "host", "host_raw", "length", "peer_hdr")

    def __init__(self, plane: DataPlane, scope: Scope, east_west: bool) -> None:
        self.host_raw = b""
        self.length: int | None = None
        self.chunked = False
        self.forwarded: bytes | None = None
        self.hops = 0
        self.peer_hdr: bytes | None = None
        hop_ok = east_west and plane.hop_trusted(scope)
        for name, value in scope["headers"]:
            if name == b"host":
                self.host_raw = value
            elif name == b"content-length":
                self.length = int(value) if value.isdigit() else None
            elif name == b"transfer-encoding":
                self.chunked = True
            elif name[:10] == b"x-fedgate-":
                if name == HOPS_HEADER:
                    self.hops = int(value) if value.isdigit() and len(value) < 4 else MAX_HOPS
                elif hop_ok:
                    if name == FORWARDED_HEADER:
                        self.forwarded = value
                    elif name == PEER_HEADER:
                        self.peer_hdr = value
        self.host = host_name(plane, self.host_raw)


def host_name(plane: DataPlane, raw: bytes) -> str | None:
    """The Host header's host name (lower case, no port), through the plane's cache."""
    host = plane.hosts.get(raw)
    if host is None:
        host = split_host(raw)
        if host is None:
            return None
        if len(plane.hosts) > 4096:
            plane.hosts.clear()
        plane.hosts[raw] = host
    return host


def dot_segments(path: str) -> bool:
    return "/." in path and any(seg == ".." or seg == "." for seg in path.split("/"))


class Admitted:
    """A request that may go upstream: its route, who the client is, what it forwards."""

    __slots__ = ("client_ip", "direct_ip", "head", "match", "peer_id", "service", "view")

    def __init__(
        self,
        view: RoutingView,
        match: RouteMatch,
        service: Service,
        head: RequestHead,
        client_ip: str,
        direct_ip: str,
        peer_id: str | None,
    ) -> None:
        self.view = view
        self.match = match
        self.service = service  # the route's owner or a weighted split's pick
        self.head = head
        self.client_ip = client_ip  # the original client (through a gateway hop)
        self.direct_ip = direct_ip  # the peer of this connection
        self.peer_id = peer_id


def route(
    table: RouteTable, head: RequestHead, scope: Scope, method: str = "GET"
) -> RouteMatch | None:
    """The route of a request: host, longest prefix, then the route's conditions (method,
    headers, query). None: unknown host or path, no route's conditions hold, or dot
    segments."""
    path: str = scope["path"]
    if head.host is None or dot_segments(path):
        return None
    return table.match(head.host, path, method, scope["headers"], scope["query_string"])


def backend(match: RouteMatch, head: RequestHead, scope: Scope) -> Service:
    """The service of the request: the route's owner, or the one a weighted split picks
    (the first gateway's pick when forwarded; sticky by header or cookie when asked)."""
    if not match.backends:
        return match.service
    return match.pick(scope["headers"], head.forwarded is not None)


def admit(
    plane: DataPlane,
    scope: Scope,
    head: RequestHead,
    view: RoutingView,
    match: RouteMatch,
    service: Service | None = None,
    *,
    scheme: str = "http",
) -> Admitted:
    """Hop guard (with the forwarded cluster checked against the client gateway's
    certificate), a redirect route's answer, access policy, rate limit (raises Reply 508 /
    3xx / 403 / 429). ``service``: the one :func:`backend` picked (default: picked here)."""
    if service is None:
        service = backend(match, head, scope)
    client = scope.get("client")
    direct_ip = client[0] if client else "0.0.0.0"
    if head.hops >= MAX_HOPS:
        raise Reply(508, "loop detected: too many gateway hops")
    if match.route.redirect is not None:  # a redirect route answers by itself
        redirect = rules.redirect_for(match, scheme, head.host_raw, scope, scope["path"])
        if redirect is not None:
            raise Reply(redirect[0], "redirect", [(b"location", redirect[1])])
    client_ip = direct_ip
    if head.forwarded is not None:
        if not plane.forwarded_ok(scope, head.forwarded):
            raise Reply(403, "x-fedgate-forwarded does not name the peer's cluster")
        client_ip = hygiene.last_forwarded_for(scope["headers"]) or direct_ip
        peer_id = head.peer_hdr.decode("latin-1") if head.peer_hdr else None
    else:
        peer_id = scope.get("fedgate.peer")
    if service.access is not None and not allowed(
        service.access, client_ip=client_ip, peer_id=peer_id
    ):
        plane.telemetry.denied(service.name)
        raise Reply(403, "forbidden")
    if service.rate_limit is not None and head.forwarded is None:
        key = limit_key(
            service.rate_limit, client_ip=client_ip, headers=scope["headers"], peer_id=peer_id
        )
        wait = plane.limiter.check(service, key)
        if wait > 0.0:
            plane.telemetry.rate_limited(service.name)
            raise Reply(
                429, "rate limited", [(b"retry-after", str(max(1, math.ceil(wait))).encode())]
            )
    return Admitted(view, match, service, head, client_ip, direct_ip, peer_id)


def upstream_headers(
    plane: DataPlane, admitted: Admitted, scope: Scope, scheme: str, traceparent: bytes, *,
    east_west: bool,
) -> list[tuple[bytes, bytes]]:  # fmt: skip
    """The request headers sent upstream (hygiene); a route's request header rules are
    applied on top for a local endpoint (:func:`local_request`)."""
    head = admitted.head
    forwarded = head.forwarded is not None
    trust = (east_west and forwarded) or admitted.client_ip in plane.trusted
    return hygiene.request_headers(
        scope["headers"],
        client_ip=admitted.direct_ip if forwarded else admitted.client_ip,
        scheme=scheme,
        host=head.host_raw,
        trust_forwarded=trust,
        traceparent=traceparent or None,
        hops=head.hops + 1,
    )


def local_request(
    admitted: Admitted, target: bytes, path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]] | None:
    """The request target, Host and headers for a local endpoint when the route rewrites
    any of them (None: send the request as it came). ``headers`` are those of
    :func:`upstream_headers`; ``path`` is the decoded path the route matched."""
    match = admitted.match
    if not match.rewrites:
        return None
    return rules.apply_request_rules(match, target, path, admitted.head.host_raw, headers)
