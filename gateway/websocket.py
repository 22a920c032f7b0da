"""WebSocket proxying: uvicorn terminates the client's WebSocket, the ``websockets``
client opens one to the upstream, and frames are copied both ways until either side
closes (the close code travels across).

The upstream gets the same header hygiene as an HTTP request (hop-by-hop headers
removed, X-Forwarded-* set, hop counter, the cross-cluster hop headers) and the
client's subprotocols; the one the upstream chooses is accepted towards the client.
Routing, access policy and rate limiting are those of HTTP requests. A try that cannot
connect moves to the next endpoint or cluster (at most ``retries.attempts`` more).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from gateway import hygiene, rules
from gateway.hygiene import BACKEND_HEADER, FORWARDED_HEADER, HOPS_HEADER, MAX_HOPS, PEER_HEADER
from gateway.policy import allowed
from gateway.ratelimit import limit_key
from gateway.routing import split_host
from gateway.types import Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.app import ListenerApp

_WS_OWN = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"host",
    }
)


async def _refuse(send: Send, receive: Receive, status: int) -> None:
    """Refuse before accepting (uvicorn answers 403 to a close before accept)."""
    msg = await receive()
    if msg["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008 if status in (403, 429) else 1011})


async def proxy_websocket(app: ListenerApp, scope: Scope, receive: Receive, send: Send) -> None:
    plane = app.plane
    view, table = plane.current
    headers = scope["headers"]
    client = scope.get("client")
    client_ip = client[0] if client else "0.0.0.0"
    host_raw = b""
    hops = 0
    forwarded: bytes | None = None
    peer_hdr: bytes | None = None
    hop_ok = app.east_west and plane.hop_trusted(scope)
    for name, value in headers:
        if name == b"host":
            host_raw = value
        elif name == HOPS_HEADER:
            hops = int(value) if value.isdigit() and len(value) < 4 else MAX_HOPS
        elif hop_ok and name == FORWARDED_HEADER:
            forwarded = value
        elif hop_ok and name == PEER_HEADER:
            peer_hdr = value
    host = split_host(host_raw)
    path: str = scope["path"]
    if "/." in path and any(seg in (".", "..") for seg in path.split("/")):
        host = None  # dot segments: refused like an unknown route
    query = scope.get("query_string", b"")
    match = table.match(host, path, "GET", headers, query) if host else None
    if match is None or hops >= MAX_HOPS or match.route.redirect is not None:
        await _refuse(send, receive, 404)
        return
    service = match.pick(headers, forwarded is not None)  # a weighted split
    direct_ip = client_ip
    if forwarded is not None:
        client_ip = hygiene.last_forwarded_for(headers) or client_ip
        peer_id = peer_hdr.decode("latin-1") if peer_hdr else None
    else:
        peer_id = scope.get("fedgate.peer")
    if service.access is not None and not allowed(
        service.access, client_ip=client_ip, peer_id=peer_id
    ):
        plane.telemetry.denied(service.name)
        await _refuse(send, receive, 403)
        return
    if service.rate_limit is not None and forwarded is None:
        key = limit_key(service.rate_limit, client_ip=client_ip, headers=headers, peer_id=peer_id)
        if plane.limiter.check(service, key) > 0.0:
            plane.telemetry.rate_limited(service.name)
            await _refuse(send, receive, 429)
            return

    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    trace = plane.telemetry.begin(headers)
    trust = (app.east_west and forwarded is not None) or client_ip in plane.trusted
    base = [
        (n, v)
        for n, v in hygiene.request_headers(
            headers,
            client_ip=direct_ip if forwarded is not None else client_ip,
            scheme="https" if app.scheme == "https" else "http",
            host=host_raw,
            trust_forwarded=trust,
            traceparent=trace.traceparent or None,
            hops=hops + 1,
        )
        if n not in _WS_OWN
    ]
    target = scope["raw_path"] or path.encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    subprotocols = scope.get("subprotocols") or None
    plan = (plane.cluster,) if forwarded is not None else plane.placement.plan(view, service)
    tried: set[str] = set()
    upstream: ClientConnection | None = None
    status = 502
    tries = 0
    for cluster in plan:
        while upstream is None and tries <= service.retries.attempts:
            remote = cluster != plane.cluster
            t = plane._remote_target(view, cluster) if remote else None
            if not remote:
                t = plane._local_target(service, cluster, tried)
            if t is None:
                break
            tries += 1
            tried.add(t.address)
            extra = list(base)
            if remote:
                extra.append((FORWARDED_HEADER, plane.cluster_bytes))
                extra.append((BACKEND_HEADER, service.name.encode()))  # a split's pick
                if peer_id:
                    extra.append((PEER_HEADER, peer_id.encode("latin-1")))
            to, to_host = target, host_raw
            if match.rewrites and not remote:  # the route's rewrites, where the endpoint is
                to, to_host, extra = rules.apply_request_rules(match, target, path, host_raw, extra)
            scheme = "wss" if t.ssl is not None else "ws"
            uri = f"{scheme}://{to_host.decode('latin-1')}{to.decode('latin-1')}"
            kwargs: dict[str, Any] = {"host": t.host, "port": t.port}
            if t.ssl is not None:
                kwargs["ssl"] = t.ssl
                kwargs["server_hostname"] = t.server_hostname
            try:
                upstream = await connect(
                    uri,
                    additional_headers=[
                        (n.decode("latin-1"), v.decode("latin-1")) for n, v in extra
                    ],
                    subprotocols=subprotocols,
                    open_timeout=service.timeouts.connect + service.retries.per_try_timeout,
                    ping_interval=None,
                    max_size=None,
                    compression=None,
                    user_agent_header=None,
                    proxy=None,
                    **kwargs,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                break
            except (OSError, TimeoutError, WebSocketException):
                if not remote:
                    plane.balancer.finished(t.address, ok=False)
                plane.placement.local_failure(service.name, cluster)
                continue
        if upstream is not None or tries > service.retries.attempts:
            break
    if upstream is None:
        await send({"type": "websocket.close", "code": 1011})
        plane.telemetry.end(
            trace, method="GET", host=host or "", path=path, service=service.name,
            cluster=None, upstream=None, status=status, duration=0.0, client=client_ip,
            retries=max(tries - 1, 0), forwarded=forwarded is not None,
        )  # fmt: skip
        return
    await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def client_to_upstream() -> None:
        assert upstream is not None
        while True:
            m = await receive()
            if m["type"] == "websocket.receive":
                data = m.get("text")
                if data is None:
                    data = m.get("bytes") or b""
                await upstream.send(data)
            else:  # websocket.disconnect
                code = m.get("code", 1000)
                await upstream.close(code=code if _sendable(code) else 1000)
                return

    async def upstream_to_client() -> None:
        assert upstream is not None
        try:
            async for frame in upstream:
                if isinstance(frame, str):
                    await send({"type": "websocket.send", "text": frame})
                else:
                    await send({"type": "websocket.send", "bytes": frame})
        except ConnectionClosed:
            pass
        code = upstream.close_code or 1000
        with contextlib.suppress(Exception):
            await send(
                {
                    "type": "websocket.close",
                    "code": code if _sendable(code) else 1000,
                    "reason": upstream.close_reason or "",
                }
            )

    tasks = [
        asyncio.ensure_future(client_to_upstream()),
        asyncio.ensure_future(upstream_to_client()),
    ]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[0] in done:
            # the client left: let the upstream close handshake finish briefly
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(tasks[1]), timeout=2.0)
    finally:
        for t_ in tasks:
            if not t_.done():
                t_.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await upstream.close()
        plane.telemetry.end(
            trace, method="GET", host=host or "", path=path, service=service.name,
            cluster=None, upstream=None, status=101, duration=loop.time() - start,
            client=client_ip, retries=max(tries - 1, 0), forwarded=forwarded is not None,
        )  # fmt: skip


def _sendable(code: int) -> bool:
    """Close codes that may be sent on the wire (1005/1006/1015 may not)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code < 5000
    )
