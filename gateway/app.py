"""The ASGI app of one listener: dispatch of a request to admission, the try loop and the
answer. The pieces live by concern:

* ``plane.py``: the shared state (:class:`DataPlane`) and where a try goes (``Target``);
* ``admission.py``: headers read once, route (404), hop guard (508), access (403), rate
  limit (429);
* ``bodies.py``: the request body (buffered and replayable, or streamed; 408/413/499);
* ``pipeline.py``: the try loop's state machine (:class:`Exchange`), shared by all paths;
* ``transport.py``: sending one try to an upstream (HTTP/1.1 pool; HTTP/2 in
  ``h2/transport.py``);
* ``forward.py``: the ASGI try loop and the relay of the answer;
* ``fastpath.py``: plain GETs served by callbacks, an optimisation of the same machine;
* ``websocket.py``: WebSocket tunnels through the same admission and try loop.

Nothing here awaits etcd, Vault or Kubernetes.
"""

from __future__ import annotations

import asyncio

from federation.model import HeaderRules
from gateway import acme_challenge, hygiene
from gateway.admission import (
    RequestHead,
    admit,
    backend,
    dot_segments,
    local_request,
    upstream_headers,
)
from gateway.bodies import RequestBody
from gateway.cycles import FastCycle
from gateway.failures import Reply
from gateway.fastpath import PING_PATH, try_fast
from gateway.forward import forward
from gateway.pipeline import Exchange
from gateway.plane import DataPlane, Target
from gateway.protocol import GatewayProtocol
from gateway.rules import apply_header_rules
from gateway.types import Receive, Scope, Send
from gateway.websocket import proxy_websocket

__all__ = ["DataPlane", "ListenerApp", "Target", "respond"]

_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


async def respond(
    send: Send,
    status: int,
    text: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    close: bool = False,
    rules: HeaderRules | None = None,
) -> None:
    """The gateway's own answer (``rules``: the route's response header rules)."""
    body = text.encode() + b"\n"
    h = [*_TEXT, (b"content-length", str(len(body)).encode())]
    if headers:
        h += headers
    if close:
        h.append((b"connection", b"close"))
    if rules is not None:
        h = apply_header_rules(rules, h)
    await send({"type": "http.response.start", "status": status, "headers": h})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_plain(send: Send, body: bytes) -> None:
    """200 with ``body`` as text (the gateway's own small answers)."""
    headers = [*_TEXT, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def listener_app(plane: DataPlane, listener: str) -> ListenerApp:
    return ListenerApp(plane, listener=listener)


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
            await proxy_websocket(self.plane, self.east_west, self.scheme, scope, receive, send)
        # lifespan is off

    def try_fast(self, protocol: GatewayProtocol, scope: Scope, fast: FastCycle) -> bool:
        """Serve a plain GET by callbacks (``gateway/fastpath.py``); False to decline."""
        return try_fast(self, protocol, scope, fast)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        plane = self.plane
        start = plane.clock()
        deadline_base = asyncio.get_running_loop().time()
        view, table = plane.current
        method: str = scope["method"]
        path: str = scope["path"]
        head = RequestHead(plane, scope, self.east_west)
        if head.host is None:
            await respond(send, 400, "invalid Host header", close=True)
            return
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
        if dot_segments(path):
            await respond(send, 400, "dot segments in the path are not accepted")
            return
        if not self.east_west and view.acme_challenges:
            key_authz = acme_challenge.lookup(path, view.acme_challenges)
            if key_authz is not None:  # ACME HTTP-01, before routing (docs/tls.md)
                await send_plain(send, key_authz)
                return
        client = scope.get("client")
        client_ip = client[0] if client else "0.0.0.0"
        match = table.match(head.host, path, method, scope["headers"], scope["query_string"])
        telemetry = plane.telemetry
        if match is None:
            telemetry.end(
                telemetry.begin(scope["headers"]), method=method, host=head.host, path=path,
                service=None, cluster=None, upstream=None, status=404,
                duration=plane.clock() - start, client=client_ip, retries=0,
                forwarded=head.forwarded is not None, headers=scope["headers"],
                protocol=scope["http_version"], scheme=self.scheme, port=_port(scope),
            )  # fmt: skip
            await respond(send, 404, "no route for this host and path")
            return
        service = backend(match, head, scope)  # the owner or a weighted split's pick
        # response header rules apply at the gateway the client talks to, to every answer
        answer_rules = match.route.response_headers if head.forwarded is None else None
        trace = telemetry.begin(scope["headers"])
        status = 502
        ex: Exchange | None = None
        try:
            admitted = admit(plane, scope, head, view, match, service, scheme=self.scheme)
            client_ip = admitted.client_ip
            limit = service.max_body_bytes
            if limit is not None and head.length is not None and head.length > limit:
                raise Reply(413, "request body too large")
            deadline = deadline_base + service.timeouts.request
            loop = asyncio.get_running_loop()
            body = RequestBody(
                head.length, head.chunked, limit, plane.body_timeout, deadline, loop.time
            )
            if service.protocol == "http":  # h2/grpc stream it (gateway/h2/transport.py)
                await body.read_ahead(receive)
            out_headers = upstream_headers(
                plane, admitted, scope, self.scheme, trace.traceparent, east_west=self.east_west
            )
            ex = Exchange(
                plane, view, service, method.encode("ascii"), trace, start, deadline,
                forwarded=head.forwarded is not None, peer_id=admitted.peer_id,
            )  # fmt: skip
            target = _target(scope)
            status = await forward(
                ex, receive, send, method=method, path=target, host=head.host_raw,
                headers=out_headers, body=body,
                local=local_request(admitted, target, path, out_headers),
                response_rules=answer_rules,
                trailers="http.response.trailers" in (scope.get("extensions") or ()),
            )  # fmt: skip
        except Reply as r:
            status = r.status
            if status != 499:
                await respond(send, status, r.reason, r.headers, close=status in (408, 413),
                              rules=answer_rules)  # fmt: skip
        finally:
            last = ex.tried_last if ex is not None else None
            telemetry.end(
                trace, method=method, host=head.host, path=path, service=service.name,
                cluster=last.cluster if last is not None else None,
                upstream=last.address if last is not None else None, status=status,
                duration=plane.clock() - start, client=client_ip,
                retries=ex.retries if ex is not None else 0,
                forwarded=head.forwarded is not None, bytes_in=head.length or 0,
                bytes_out=ex.bytes_out if ex is not None else 0,
                upstream_time=ex.upstream_time if ex is not None else None,
                headers=scope["headers"], protocol=scope["http_version"], scheme=self.scheme,
                port=_port(scope), route=match.route.host + match.route.path_prefix,
            )  # fmt: skip

    async def resume(
        self,
        ex: Exchange,
        host: str,
        host_raw: bytes,
        path: str,
        client_ip: str,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Go on with an exchange the fast path began: its try failed in a retryable way,
        or its pick had no idle connection (that try goes on here, dialling the endpoint
        picked). The same trace, tries, tried endpoints and budget."""
        plane = self.plane
        status = 502
        try:
            body = RequestBody(None, False, None, plane.body_timeout)
            out_headers = upstream_headers_for_fast(self, scope, host_raw, client_ip, ex)
            status = await forward(
                ex, receive, send, method="GET", path=_target(scope), host=host_raw,
                headers=out_headers, body=body,
            )  # fmt: skip
        except Reply as r:
            status = r.status
            if status != 499:
                await respond(send, status, r.reason, r.headers)
        finally:
            last = ex.tried_last
            plane.telemetry.end(
                ex.trace, method="GET", host=host, path=path, service=ex.service.name,
                cluster=last.cluster if last is not None else None,
                upstream=last.address if last is not None else None, status=status,
                duration=plane.clock() - ex.start, client=client_ip, retries=ex.retries,
                forwarded=False, bytes_out=ex.bytes_out, upstream_time=ex.upstream_time,
                headers=scope["headers"], protocol=scope["http_version"], scheme=self.scheme,
                port=_port(scope),
            )  # fmt: skip


def upstream_headers_for_fast(
    app: ListenerApp, scope: Scope, host_raw: bytes, client_ip: str, ex: Exchange
) -> list[tuple[bytes, bytes]]:
    return hygiene.request_headers(
        scope["headers"],
        client_ip=client_ip,
        scheme=app.scheme,
        host=host_raw,
        trust_forwarded=client_ip in app.plane.trusted,
        traceparent=ex.trace.traceparent or None,
        hops=1,
    )


def _target(scope: Scope) -> bytes:
    target: bytes = scope["raw_path"]
    qs = scope["query_string"]
    return target + b"?" + qs if qs else target


def _port(scope: Scope) -> int | None:
    server = scope.get("server")
    return server[1] if server else None
