"""WebSocket proxying: uvicorn terminates the client's WebSocket, the ``websockets``
client opens one to the upstream, and frames are copied both ways until either side
closes (the close code travels across).

The upstream gets the same header hygiene as an HTTP request (hop-by-hop headers
removed, X-Forwarded-* set, hop counter, the cross-cluster hop headers) and the
client's subprotocols; the one the upstream chooses is accepted towards the client.
Admission (route, access policy, rate limit) and the try loop (placement, balancer,
breaker, passive statistics, retry decision) are those of HTTP requests
(``gateway/admission.py``, ``gateway/pipeline.py``): a handshake that cannot connect
moves to another endpoint or the next cluster, never the same remote gateway twice.
Each try gets its CLIENT span (the handshake's ends with 101); the handshake's outcome is
what the breaker and passive statistics count, but the endpoint stays in flight for the
least-request balancer until the WebSocket closes.
Route rules: the route's conditions and a weighted split choose the service as for HTTP;
a redirect route refuses the upgrade (404); the route's request rewrites apply to the
upgrade sent to a local endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from gateway.admission import RequestHead, admit, local_request, route, upstream_headers
from gateway.failures import FailureKind, Reply, status_for
from gateway.hygiene import BACKEND_HEADER, FORWARDED_HEADER, PEER_HEADER
from gateway.pipeline import Exchange
from gateway.plane import DataPlane
from gateway.types import Receive, Scope, Send

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


async def proxy_websocket(
    plane: DataPlane, east_west: bool, scheme: str, scope: Scope, receive: Receive, send: Send
) -> None:
    view, table = plane.current
    headers = scope["headers"]
    head = RequestHead(plane, scope, east_west)
    path: str = scope["path"]
    match = route(table, head, scope)
    if match is None or match.route.redirect is not None:
        await _refuse(send, receive, 404)
        return
    try:
        admitted = admit(plane, scope, head, view, match, scheme=scheme)
    except Reply as r:
        await _refuse(send, receive, r.status)
        return
    service = admitted.service  # the owner or a weighted split's pick
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    loop = asyncio.get_running_loop()
    start = plane.clock()
    trace = plane.telemetry.begin(headers)
    sent = upstream_headers(plane, admitted, scope, scheme, trace.traceparent, east_west=east_west)
    base = [(n, v) for n, v in sent if n not in _WS_OWN]
    target = scope["raw_path"] or path.encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    subprotocols = scope.get("subprotocols") or None
    forwarded = head.forwarded is not None
    ex = Exchange(
        plane, view, service, b"GET", trace, start, loop.time() + service.timeouts.request,
        forwarded=forwarded, peer_id=admitted.peer_id,
    )  # fmt: skip
    upstream: ClientConnection | None = None
    open_on: str | None = None  # the local endpoint holding the open WebSocket
    status = 502
    host_raw = head.host_raw
    local = local_request(admitted, target, path, base)  # the route's rewrites, if any
    while ex.next_try():
        t = ex.target
        assert t is not None
        to, to_host, extra = target, host_raw, list(base)
        if t.remote:
            extra.append((FORWARDED_HEADER, plane.cluster_bytes))
            extra.append((BACKEND_HEADER, service.name.encode()))  # a split's pick
            if admitted.peer_id:
                extra.append((PEER_HEADER, admitted.peer_id.encode("latin-1")))
        elif local is not None:  # rewrites apply where the endpoint is
            to, to_host, extra = local[0], local[1], list(local[2])
        uri = f"{'wss' if t.ssl is not None else 'ws'}://{to_host.decode('latin-1')}"
        uri += to.decode("latin-1")
        kwargs: dict[str, Any] = {"host": t.host, "port": t.port}
        if t.ssl is not None:
            kwargs["ssl"] = t.ssl
            kwargs["server_hostname"] = t.server_hostname
        remaining = ex.deadline - loop.time()
        kind = FailureKind.CONNECT
        try:
            upstream = await connect(
                uri,
                additional_headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in extra],
                subprotocols=subprotocols,
                open_timeout=max(0.0, min(service.timeouts.connect + ex.per_try, remaining)),
                ping_interval=None,
                max_size=None,
                compression=None,
                user_agent_header=None,
                proxy=None,
                **kwargs,
            )
        except InvalidStatus as exc:  # an answer, not a tunnel: relayed as a close
            status = exc.response.status_code
            ex.record(status < 500)
            ex.try_span(status, None)
            break
        except TimeoutError:
            kind = FailureKind.TIMEOUT
        except OSError:
            kind = FailureKind.CONNECT
        except WebSocketException:
            kind = FailureKind.RESET
        except BaseException:
            ex.record(None)
            raise
        if upstream is not None and t.remote:
            why = plane.upstream_error(t, upstream.transport.get_extra_info("ssl_object"))
            if why is not None:  # not a live gateway of that cluster: a failed connect
                await upstream.close()
                upstream = None
                ex.record(False)
                ex.try_span(None, kind)
                ex.last = (status_for(kind), why)
                if not ex.retry(kind, status=None, sent=False, replayable=True,
                                now=loop.time()):  # fmt: skip
                    break
                continue
        if upstream is not None:
            ex.record(True)  # the handshake's outcome: breaker, passive statistics
            ex.try_span(101, None)
            if not t.remote:  # least-request: the endpoint is busy until the close
                plane.balancer.started(t.address)
                open_on = t.address
            break
        ex.record(False)
        ex.try_span(None, kind)
        if kind is FailureKind.CONNECT:
            plane.telemetry.connect_error(service.name, t.cluster)
        ex.last = (status_for(kind), f"websocket to {t.address} failed ({kind.value})")
        if not ex.retry(kind, status=None, sent=kind is not FailureKind.CONNECT,
                        replayable=True, now=loop.time()):  # fmt: skip
            break
    last = ex.tried_last
    if upstream is None:
        await send({"type": "websocket.close", "code": 1011})
        plane.telemetry.end(
            trace, method="GET", host=head.host or "", path=path, service=service.name,
            cluster=last.cluster if last is not None else None,
            upstream=last.address if last is not None else None, status=status,
            duration=plane.clock() - start, client=admitted.client_ip,
            retries=ex.retries, forwarded=forwarded, headers=scope["headers"],
            protocol=scope.get("http_version", "1.1"), scheme=scheme,
        )  # fmt: skip
        return

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

    idle = service.timeouts.request  # a client that takes no frame for this long is gone

    async def upstream_to_client() -> None:
        assert upstream is not None
        try:
            async for frame in upstream:
                async with asyncio.timeout(idle):
                    if isinstance(frame, str):
                        await send({"type": "websocket.send", "text": frame})
                    else:
                        await send({"type": "websocket.send", "bytes": frame})
        except ConnectionClosed:
            pass
        except TimeoutError:  # the client's doing: the upstream goes at once, unblamed
            upstream.transport.abort()  # its close handshake would wait on a full pipe too
            return
        code = upstream.close_code or 1000
        with contextlib.suppress(Exception):
            async with asyncio.timeout(idle):  # as every frame
                await send(
                    {
                        "type": "websocket.close",
                        "code": code if _sendable(code) else 1000,
                        "reason": upstream.close_reason or "",
                    }
                )

    tasks: list[asyncio.Future[None]] = []
    try:
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
        tasks = [
            asyncio.ensure_future(client_to_upstream()),
            asyncio.ensure_future(upstream_to_client()),
        ]
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
        if open_on is not None:  # counted at the handshake: only the in-flight slot ends
            plane.balancer.finished(open_on, ok=None)
        plane.telemetry.end(
            trace, method="GET", host=head.host or "", path=path, service=service.name,
            cluster=last.cluster if last is not None else None,
            upstream=last.address if last is not None else None, status=101,
            duration=plane.clock() - start, client=admitted.client_ip, retries=ex.retries,
            forwarded=forwarded, headers=scope["headers"],
            protocol=scope.get("http_version", "1.1"), scheme=scheme,
        )  # fmt: skip


def _sendable(code: int) -> bool:
    """Close codes that may be sent on the wire (1005/1006/1015 may not)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code < 5000
    )
