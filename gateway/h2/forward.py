"""The forwarding step for ``protocol: h2`` and ``protocol: grpc`` services: the same
plan, balancer, breakers, retry budget and failover as HTTP/1.1 (``gateway/app.py``),
over the multiplexed HTTP/2 client of :mod:`gateway.h2.client`.

* The request body is streamed from the first byte (a gRPC stream may be open-ended);
  up to 64 KiB of it is kept so a failed try can be replayed, past that a try that
  already sent a byte is not retried.
* ``grpc-timeout`` is the call's deadline (never later than ``timeouts.request``); it
  replaces the per-try timeout for the response head and is passed on reduced to the
  time left. Past it the call ends with ``DEADLINE_EXCEEDED``.
* A gRPC call answered trailers-only with a status in ``retries.grpcStatus``
  (UNAVAILABLE by default) counts as a failed try: retried (budget permitting) on
  another endpoint or cluster, and it counts against the breaker, like a 503.
* Response trailers are passed on with the ASGI ``http.response.trailers`` extension
  (dropped for an HTTP/1.1 client, which cannot carry them); request trailers arrive in
  the last ``http.request`` message as ``fedgate.trailers``.
* Gateway errors are ``_Reply`` as on the HTTP/1.1 path; the HTTP/2 server turns them
  into trailers-only gRPC answers on a gRPC request (:mod:`gateway.h2.server`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from federation.model import RoutingView, Service
from gateway.app import BUFFER_LIMIT, ListenerApp, _Body, _Reply, _Target
from gateway.h2 import grpc
from gateway.h2.client import H2Stream
from gateway.hygiene import FORWARDED_HEADER, PEER_HEADER, response_headers
from gateway.proxy import CONNECT, PROTOCOL, TIMEOUT, UpstreamError
from gateway.resilience import FailureKind, retryable
from gateway.telemetry import RequestTrace
from gateway.types import Receive, Scope, Send

_KIND = {CONNECT: FailureKind.CONNECT, TIMEOUT: FailureKind.TIMEOUT}
_NOT_SENT = frozenset({b"host", b"transfer-encoding", b"grpc-timeout"})


class _Replay:
    """The client's request body, pumped into one try after another; what was sent is
    kept (up to BUFFER_LIMIT) so the next try can start over."""

    __slots__ = ("body", "chunks", "done", "overflow", "receive", "size", "trailers")

    def __init__(self, body: _Body, receive: Receive) -> None:
        self.body = body
        self.receive = receive
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = body.done  # the client has sent all of it
        self.overflow = False  # more than BUFFER_LIMIT went out: no replay
        self.trailers: list[tuple[bytes, bytes]] | None = None

    @property
    def replayable(self) -> bool:
        return not self.overflow

    async def pump(self, stream: H2Stream) -> None:
        """Send the body into ``stream`` (what is kept, then the rest as it arrives; the
        last piece carries END_STREAM), then watch for the client leaving: one task per
        try does both."""
        if self.chunks:
            for i, chunk in enumerate(self.chunks):
                last = self.done and i == len(self.chunks) - 1 and not self.trailers
                await stream.write(chunk, end=last)
            if self.done and self.trailers:
                stream.end(self.trailers)
        elif self.done and self.trailers:
            stream.end(self.trailers)
        while not self.done:
            msg = await self.receive()
            if msg["type"] != "http.request":
                stream.reset()  # the client left mid-body
                return
            chunk = msg.get("body", b"")
            more = msg.get("more_body", False)
            if not more:
                self.done = True
                self.trailers = msg.get("fedgate.trailers")
            if chunk:
                self.body._count(len(chunk))
                if not self.overflow:
                    self.size += len(chunk)
                    if self.size > BUFFER_LIMIT:
                        self.overflow = True
                        self.chunks = []
                    else:
                        self.chunks.append(chunk)
                await stream.write(chunk, end=not more and not self.trailers)
            if not more and (self.trailers or not chunk):
                stream.end(self.trailers)
        while (await self.receive())["type"] != "http.disconnect":
            pass
        stream.reset()  # the client left: the relay ends


def _request_headers(
    method: str, target: bytes, host: bytes, headers: list[tuple[bytes, bytes]], scheme: bytes,
    body: _Body,
) -> list[tuple[bytes, bytes]]:  # fmt: skip
    out = [(b":method", method.encode("ascii")), (b":scheme", scheme), (b":authority", host),
           (b":path", target)]  # fmt: skip
    for name, value in headers:
        if name not in _NOT_SENT:
            out.append((name, value))
    out.append((b"te", b"trailers"))
    if body.length is not None:
        out.append((b"content-length", str(body.length).encode("ascii")))
    return out


async def forward_h2(
    app: ListenerApp,
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
    """Try the plan over HTTP/2; returns (status sent, cluster, upstream address, retries)."""
    plane = app.plane
    name = service.name
    plane.budget.on_request(name)
    plan: tuple[str, ...] = (plane.cluster,) if forwarded else plane.placement.plan(view, service)
    if not plan:
        raise _Reply(503, "no healthy cluster for this service")
    is_grpc = service.protocol == "grpc" and grpc.is_grpc(headers)
    deadline = start + service.timeouts.request
    call_deadline = False
    if is_grpc:
        for hname, value in headers:
            if hname == b"grpc-timeout":
                seconds = grpc.parse_timeout(value)
                if seconds is not None and start + seconds < deadline:
                    deadline = start + seconds
                    call_deadline = True
    retries_cfg = service.retries
    max_tries = retries_cfg.attempts + 1
    replay = _Replay(body, receive)
    tried: set[str] = set()
    ci = in_cluster = tries = 0
    last: tuple[int, str] = (503, "no upstream available")
    trailers_ok = "http.response.trailers" in (scope.get("extensions") or {})
    while ci < len(plan):
        cluster = plan[ci]
        remote = cluster != plane.cluster
        target_: _Target | None
        if remote:
            target_ = None if forwarded else plane._remote_target(view, cluster)
        else:
            target_ = plane._local_target(service, cluster, tried)
        if target_ is None:
            ci, in_cluster = ci + 1, 0
            continue
        breaker = plane.breakers.get(name, cluster, service.circuit_breaker)
        if not breaker.try_acquire():
            last = (503, f"circuit breaker open for {name} in {cluster}")
            ci, in_cluster = ci + 1, 0
            continue
        if tries and cluster != plan[0] and in_cluster == 0:
            plane.telemetry.failover(name, plan[0], cluster)
        tries += 1
        in_cluster += 1
        address = target_.address
        if not remote:
            plane.balancer.started(address)
        t0 = plane.clock()
        out = _request_headers(method, target, host, headers,
                               b"https" if target_.ssl is not None else b"http", body)  # fmt: skip
        if call_deadline:
            out.append((b"grpc-timeout", b"%dm" % max(1, int((deadline - t0) * 1000))))
        if remote:
            out.append((FORWARDED_HEADER, plane.cluster_bytes))
            if peer_id:
                out.append((PEER_HEADER, peer_id.encode("latin-1")))
        stream: H2Stream | None = None
        pump: asyncio.Task[None] | None = None
        failure: UpstreamError | None = None
        try:
            remaining = deadline - t0
            if remaining <= 0:
                raise UpstreamError(TIMEOUT, "request timeout", sent=False)
            head_wait = remaining if call_deadline else min(retries_cfg.per_try_timeout, remaining)
            try:
                async with asyncio.timeout(head_wait):
                    stream = await plane.h2_pool.open_stream(
                        target_.host,
                        target_.port,
                        out,
                        end=replay.done and not replay.chunks and not replay.trailers,
                        ssl_context=target_.ssl,
                        server_hostname=target_.server_hostname,
                        connect_timeout=min(service.timeouts.connect, remaining),
                    )
                    pump = asyncio.ensure_future(replay.pump(stream))
                    await stream.read_head()
            except TimeoutError:
                raise UpstreamError(
                    TIMEOUT, "upstream did not answer in time", sent=stream is not None
                ) from None
        except UpstreamError as exc:
            failure = exc
        except BaseException:
            _abandon(stream, pump)
            breaker.release(ok=False)
            if not remote:
                plane.balancer.finished(address, ok=False)
            raise
        if failure is None:
            assert stream is not None
            status = stream.status
            code = grpc.status_of(stream.headers) if is_grpc and stream.ended else None
            ok = status < 500 and (code is None or code not in retries_cfg.grpc_status)
            if not ok:
                retry = replay.replayable and tries < max_tries
                if code is None:
                    retry = retry and retryable(
                        method=method.encode("ascii"),
                        kind=FailureKind.STATUS,
                        status=status,
                        conditions=retries_cfg.on,
                        request_sent=True,
                    )
                if (
                    retry
                    and app._more_targets(plan, ci, cluster, view, service, tried)
                    and plane.clock() < deadline
                    and plane.budget.try_retry(name, retries_cfg.budget_percent)
                ):
                    _abandon(stream, pump)
                    app._record(service, target_, breaker, ok=False, t0=t0)
                    tried.add(address)
                    last = (status if code is None else 503, f"upstream answered {status}")
                    ci, in_cluster = app._advance(
                        plan, ci, in_cluster, tries, max_tries, plane.cluster
                    )
                    continue
            app._record(service, target_, breaker, ok=ok, t0=t0)
            try:
                await _relay(stream, send, deadline - plane.clock(), is_grpc, trailers_ok)
            finally:
                _abandon(stream, pump)
            return status, cluster, address, tries - 1
        # a failed try
        _abandon(stream, pump)
        app._record(service, target_, breaker, ok=False, t0=t0)
        tried.add(address)
        kind = _KIND.get(failure.kind, FailureKind.RESET)
        http_code = 504 if failure.kind == TIMEOUT else 503 if failure.kind == CONNECT else 502
        last = (http_code, str(failure))
        if (
            tries < max_tries
            and (replay.replayable or not failure.sent)
            and failure.kind != PROTOCOL
            and (
                not failure.sent
                or retryable(
                    method=method.encode("ascii"),
                    kind=kind,
                    status=None,
                    conditions=retries_cfg.on,
                    request_sent=failure.sent,
                )
            )
            and plane.clock() < deadline
            and plane.budget.try_retry(name, retries_cfg.budget_percent)
        ):
            ci, in_cluster = app._advance(plan, ci, in_cluster, tries, max_tries, plane.cluster)
            continue
        break
    raise _Reply(last[0], last[1])


def _abandon(stream: H2Stream | None, pump: asyncio.Task[None] | None) -> None:
    if pump is not None and not pump.done():
        pump.cancel()
    if stream is not None:
        stream.release()


async def _relay(
    stream: H2Stream, send: Send, remaining: float, is_grpc: bool, trailers_ok: bool
) -> None:
    """Send the upstream answer to the client: head, body as it comes, trailers."""
    status = stream.status
    out = response_headers(stream.headers, status)
    if stream.ended and not stream.body:  # no body: headers only (gRPC trailers-only)
        out += stream.trailers
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": out}
    if trailers_ok:
        start["trailers"] = True
    await send(start)
    try:
        async with asyncio.timeout(max(remaining, 0.0)):
            while True:
                chunk = await stream.read_body()
                if not chunk:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (TimeoutError, UpstreamError) as exc:
        stream.reset()
        late = isinstance(exc, TimeoutError)
        if is_grpc and trailers_ok:  # the call ends with a status, not a broken stream
            code, text = (
                (grpc.DEADLINE_EXCEEDED, "deadline exceeded")
                if late
                else (grpc.UNAVAILABLE, "upstream failed mid-response")
            )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            await send(
                {"type": "http.response.trailers", "headers": grpc.error_headers(code, text)[2:]}
            )
            return
        raise _Reply(499, "upstream failed mid-response") from None
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    if trailers_ok:
        await send({"type": "http.response.trailers", "headers": stream.trailers})
