"""The callback fast path: a plain GET served without an ASGI task.

It is an optimisation of the same state machine as the ASGI path, not a copy: it takes an
:class:`~gateway.pipeline.Exchange` (the same placement, balancer, breaker, budget,
recording and retry decision) and drives its first try by callbacks — the client
protocol writes the upstream head straight onto an idle pooled connection, and the
upstream connection's ``data_received`` writes the whole answer back. Only the common
case qualifies (a known host, a plain route (no rules, no split) without access policy
or rate limit, the local cluster first in the plan); anything else declines before
anything is counted. Without an idle keep-alive connection to the endpoint picked, the
exchange goes on the ASGI way with its first try begun, and that try dials the endpoint
picked: one balancer decision per request, so a cold endpoint gets its first connection
instead of a second pick sending the request elsewhere. A try that fails
in a retryable way hands its Exchange (trace, tries, tried endpoints, budget) to the ASGI
path (:meth:`ListenerApp.resume`), and so does an answer whose body is still arriving.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from federation.model import Service
from gateway import hygiene
from gateway.cycles import FastCycle
from gateway.failures import FailureKind, Reply, status_for
from gateway.fixedend import FixedEnd
from gateway.forward import relay
from gateway.pipeline import Exchange
from gateway.plane import Target
from gateway.protocol import GatewayProtocol
from gateway.proxy import UpstreamConnection
from gateway.routing import RouteTable
from gateway.tracecontext import NO_TRACE
from gateway.types import Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.app import ListenerApp

PING_PATH = "/__fedgate/ping"
_NO_EXCLUDE: frozenset[str] = frozenset()
_DROP = hygiene.RESPONSE_DROP
_STATUS = FailureKind.STATUS
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_ENDS_MAX = 16  # upstream targets per repeated request whose end is kept


class _Repeat:
    """What one request decided on a connection, for the next read of the same bytes (the
    protocol's ``KnownRequest.memo``): a keep-alive client repeats its requests, and the
    same request against the same route table decides the same (Host parse, route,
    service checks, upstream head), and ends the same way but for its numbers (``ends``:
    per upstream target, the metrics and access-log line made once)."""

    __slots__ = ("ends", "head", "host", "host_raw", "path", "service", "table")

    def __init__(
        self,
        table: RouteTable,
        service: Service,
        host: str,
        host_raw: bytes,
        path: str,
        head: bytes | None,
    ) -> None:
        self.table = table
        self.service = service
        self.host = host
        self.host_raw = host_raw
        self.path = path
        self.head = head  # the upstream head (None when it carried our own traceparent)
        self.ends: dict[Target, FixedEnd | None] = {}


def try_fast(app: ListenerApp, protocol: GatewayProtocol, scope: Scope, fast: FastCycle) -> bool:
    """Start a callback exchange for this GET, or return False (nothing counted yet)."""
    plane = app.plane
    if not plane.fast_path:
        return False
    view, table = plane.current
    headers = scope["headers"]
    request = protocol.request  # set when this request may come again byte for byte
    repeat: _Repeat | None = request.memo if request is not None else None
    if repeat is not None and repeat.table is table:
        service = repeat.service
        host = repeat.host
        host_raw = repeat.host_raw
        path = repeat.path
    else:
        repeat = None
        found = None
        for name, value in headers:
            if name == b"host":
                found = value
            elif name[:10] == b"x-fedgate-":
                return False
        if found is None:
            return False
        host_raw = found
        parsed = plane.hosts.get(host_raw)
        if parsed is None:
            return False  # the ASGI path parses and caches it
        host = parsed
        path = scope["path"]
        if "/." in path or (app.east_west and path == PING_PATH):
            return False
        match = table.match(host, path, "GET", headers, scope["query_string"])
        if match is None or not match.plain:  # route rules and splits: the ASGI way
            return False
        service = match.service
        if service.protocol != "http":
            return False  # HTTP/2 upstreams (h2, grpc): the ASGI path's H2 transport
        if service.access is not None or service.rate_limit is not None:
            return False
    plan = plane.placement.plan(view, service)
    if not plan or plan[0] != plane.cluster:
        return False
    target = plane.local_target(service, plan[0], _NO_EXCLUDE)
    if target is None:
        return False
    pool = plane.pool
    conn = pool.take_idle(target.pool_key)
    breaker = plane.breakers.get(service.name, plan[0], service.circuit_breaker)
    if not breaker.try_acquire():
        if conn is not None:
            pool.put_back(conn)
        return False
    # committed: from here on this is the request's Exchange
    client = scope.get("client")
    client_ip = client[0] if client else "0.0.0.0"
    telemetry = plane.telemetry
    trace = telemetry.begin(headers) if telemetry.tracing else NO_TRACE
    now = protocol.loop.time()
    timeouts = service.timeouts
    ex = FastExchange(plane, view, service, b"GET", trace, plane.clock(), now + timeouts.request,
                      plan)  # fmt: skip
    ex.app = app
    ex.protocol = protocol
    ex.fast = fast
    ex.host = host
    ex.host_raw = host_raw
    ex.path = path
    ex.client_ip = client_ip
    ex.begin_try(target, breaker)
    if conn is None:
        # no idle connection to the endpoint picked: the ASGI path dials that one (the
        # try begun here), never a second pick of its own (the balancer decides once)
        ex._fallback()
        return True
    head = repeat.head if repeat is not None and not trace.traceparent else None
    if head is None:
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
            scheme=app.scheme,
            trust_forwarded=client_ip in plane.trusted,
            traceparent=trace.traceparent or None,
            hops=1,
        )
        if repeat is None and request is not None:
            request.memo = _Repeat(table, service, host, host_raw, path,
                                   None if trace.traceparent else head)  # fmt: skip
    # a request that came again: its end's fixed parts are kept (made on its first repeat,
    # so that requests that never repeat do not pay for them)
    ex.repeat = repeat if trace is NO_TRACE else None
    plane.fast_served += 1
    conn.listener = ex
    # conn.write + conn.set_timeout inlined: an idle connection just taken from the pool
    # has a transport, no error and no answer
    conn.sent = True
    transport = conn.transport
    assert transport is not None
    transport.write(head)
    conn.deadline = now + min(ex.per_try, timeouts.request)
    return True


class FastExchange(Exchange):
    """One callback exchange: the request's :class:`~gateway.pipeline.Exchange` itself,
    with what the callbacks need, and the upstream connection's listener (see
    :func:`try_fast`). One object per request: a fallback hands it on as the Exchange."""

    __slots__ = ("app", "client_ip", "fast", "host", "host_raw", "path", "protocol", "repeat")

    app: ListenerApp
    protocol: GatewayProtocol
    fast: FastCycle
    host: str
    host_raw: bytes
    path: str
    client_ip: str
    repeat: _Repeat | None  # what this request's head decided, when it may come again

    def upstream_event(self, conn: UpstreamConnection) -> None:
        conn.listener = None
        ex = self
        plane = self.plane
        error = conn.error
        if error is not None:
            ex.record(False)
            if ex.trace.span is not None:
                ex.try_span(None, error.kind)
            if error.kind is FailureKind.CONNECT:
                plane.telemetry.connect_error(ex.service.name, self._cluster())
            plane.pool.discard(conn)
            ex.last = (status_for(error.kind), str(error))
            if ex.retry(error.kind, status=None, sent=error.sent, replayable=True,
                        now=conn.loop.time()):  # fmt: skip
                self._fallback()  # tried again the ASGI way, as the same exchange
                return
            text = ex.last[1].encode() + b"\n"
            self._answer(ex.last[0], [_TEXT], text, close=True)
            return
        status = conn.status
        if ex.trace.span is not None:
            ex.try_span(status, None)
        if status >= 500:
            ex.record(False)
            if ex.retry(_STATUS, status=status, sent=True, replayable=True, now=conn.loop.time()):
                ex.last = (status, f"upstream answered {status}")
                plane.http1.done(conn)
                self._fallback()
                return
        else:
            ex.record(True)
        if not conn.complete:
            # a body still on its way: relay it from a task, streaming
            idle = ex.service.timeouts.request

            async def relay_rest(scope: Scope, receive: Receive, send: Send) -> None:
                code = conn.status
                try:
                    ex.bytes_out = await relay(conn, plane.http1, send, receive, idle=idle,
                                               watch=True)  # fmt: skip
                except Reply:
                    code = 499
                finally:
                    self._end(code)

            if not self.protocol.fast_fallback(self.fast, relay_rest):
                plane.pool.discard(conn)
                self._end(499)
            return
        whole = conn.take_all() or b""
        known = conn.known
        head = known.relay if known is not None else None
        if head is None:
            head = _relay_head(status, conn.headers, len(whole))
            if head is None:  # a Connection header naming other headers (rare)
                plane.pool.release(conn)
                self._answer(status, hygiene.response_headers(conn.headers, status), whole)
                return
            if known is not None:
                known.relay = head  # the next answer with this head is served from it
        plane.pool.release(conn)
        fast = self.fast
        if fast.keep_alive:
            self.protocol.fast_respond(b"".join((head, b"\r\n", whole)), fast)
        else:
            self.protocol.fast_respond(
                b"".join((head, b"connection: close\r\n\r\n", whole)), fast, close=True
            )
        self.bytes_out = len(whole)
        self._end(status)

    def _fallback(self) -> None:
        resume = functools.partial(
            self.app.resume, self, self.host, self.host_raw, self.path, self.client_ip
        )
        if not self.protocol.fast_fallback(self.fast, resume):
            self.record(None)  # a try begun and not sent (try_fast's cold pick): no one's fault
            self._end(499)  # the client is gone

    def _answer(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, close: bool = False
    ) -> None:
        parts = [STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status]
        has_length = False
        for name, value in headers:
            if name == b"content-length":
                has_length = True
            parts += (name, b": ", value, b"\r\n")
        if not has_length and status != 204 and status != 304:
            parts.append(b"content-length: %d\r\n" % len(body))
        close = close or not self.fast.keep_alive
        if close:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.protocol.fast_respond(b"".join(parts), self.fast, close=close)
        self._end(status)

    def _cluster(self) -> str:
        target = self.tried_last
        assert target is not None  # the first try began in try_fast
        return target.cluster

    def _end(self, status: int) -> None:
        plane = self.plane
        target = self.tried_last
        assert target is not None
        repeat = self.repeat
        if repeat is not None:  # a request that may come again: its end's fixed parts kept
            ends = repeat.ends
            if target in ends:
                end = ends[target]
            else:
                if len(ends) >= _ENDS_MAX:
                    ends.clear()
                end = ends[target] = self._fixed_end(target)
            if end is not None:
                end.end(status, plane.clock() - self.start, self.tries - 1, self.bytes_out,
                        self.upstream_time)  # fmt: skip
                return
        scope = self.fast.scope
        plane.telemetry.end(
            self.trace, method="GET", host=self.host, path=self.path,
            service=self.service.name, cluster=target.cluster, upstream=target.address,
            status=status, duration=plane.clock() - self.start, client=self.client_ip,
            retries=self.tries - 1, forwarded=False, bytes_out=self.bytes_out,
            upstream_time=self.upstream_time, headers=scope["headers"],
            protocol=scope["http_version"], scheme=self.app.scheme,
        )  # fmt: skip

    def _fixed_end(self, target: Target) -> FixedEnd | None:
        scope = self.fast.scope
        return self.plane.telemetry.fixed_end(
            method="GET", host=self.host, path=self.path, service=self.service.name,
            cluster=target.cluster, upstream=target.address, client=self.client_ip,
            headers=scope["headers"], protocol=scope["http_version"],
        )  # fmt: skip


def _relay_head(status: int, headers: list[tuple[bytes, bytes]], length: int) -> bytes | None:
    """The client's answer head for a whole upstream answer, without its final CRLF:
    ``hygiene.response_headers`` and the serialization in one pass (hop-by-hop headers
    dropped, a Content-Length added when missing); None when a Connection header names
    other headers (rare: the caller takes the long way)."""
    parts = [STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status]
    has_length = False
    drop = hygiene.RESPONSE_DROP_NO_BODY if status == 204 or status == 304 else _DROP
    for name, value in headers:
        if name in drop:
            if name == b"connection" and value != b"keep-alive" and value != b"close":
                return None
            continue
        if name == b"content-length":
            has_length = True
        parts += (name, b": ", value, b"\r\n")
    if not has_length and status != 204 and status != 304:
        parts.append(b"content-length: %d\r\n" % length)
    return b"".join(parts)
