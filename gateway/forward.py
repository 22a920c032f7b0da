"""The ASGI side of the try loop: send each try through its transport, decide on the
answer, relay it to the client (streaming, with deadlines both ways).

Deadlines: everything up to the answer's head within ``timeouts.request`` from the
request's start (a request body that an upstream does not take fails the try then); while
an answer's body streams, ``timeouts.request`` is an idle limit in each direction: no
byte from the upstream for that long, or a client that takes nothing for that long, cuts
the exchange (the upstream connection is closed, never pinned by a stalled client).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from federation.model import HeaderRules
from gateway import hygiene
from gateway.bodies import RequestBody
from gateway.failures import FailureKind, Reply, status_for
from gateway.hygiene import BACKEND_HEADER, FORWARDED_HEADER, PEER_HEADER
from gateway.pipeline import Exchange
from gateway.proxy import UpstreamConnection, UpstreamError
from gateway.rules import apply_header_rules
from gateway.transport import Http1Transport
from gateway.types import Message, Receive, Send

_STATUS = FailureKind.STATUS


async def forward(
    ex: Exchange,
    receive: Receive,
    send: Send,
    *,
    method: str,
    path: bytes,
    host: bytes,
    headers: list[tuple[bytes, bytes]],
    body: RequestBody,
    local: tuple[bytes, bytes, list[tuple[bytes, bytes]]] | None = None,
    response_rules: HeaderRules | None = None,
) -> int:
    """Try the plan and relay the answer; returns the status sent (raises Reply).

    ``local``: (target, Host, headers) for a local endpoint when the route rewrites them
    (``admission.local_request``); a remote cluster's gateway gets the request as it came
    and applies the route's rules itself. ``response_rules``: the route's response header
    rules, applied to the relayed answer."""
    plane = ex.plane
    service = ex.service
    loop = asyncio.get_running_loop()
    remote_headers: list[tuple[bytes, bytes]] | None = None
    local_path, local_host, local_headers = local or (path, host, headers)
    while ex.next_try():
        target = ex.target
        assert target is not None
        hdrs: Sequence[tuple[bytes, bytes]] = local_headers
        to, to_host = local_path, local_host
        if target.remote:
            if remote_headers is None:
                remote_headers = [
                    *headers,
                    (FORWARDED_HEADER, plane.cluster_bytes),
                    (BACKEND_HEADER, service.name.encode()),  # the service a split picked
                ]
                if ex.peer_id:
                    remote_headers.append((PEER_HEADER, ex.peer_id.encode("latin-1")))
            hdrs = remote_headers
            to, to_host = path, host
        transport = plane.transport(target)
        try:
            conn = await transport.send(
                target, method=method, path=to, host=to_host, headers=hdrs, body=body,
                receive=receive, connect_timeout=service.timeouts.connect,
                per_try=ex.per_try, deadline=ex.deadline,
            )  # fmt: skip
        except UpstreamError as failure:
            ex.record(False)
            ex.try_span(None, failure.kind)
            if failure.kind is FailureKind.CONNECT:
                plane.telemetry.connect_error(service.name, target.cluster)
            ex.last = (status_for(failure.kind), str(failure))
            if ex.retry(
                failure.kind, status=None, sent=failure.sent, replayable=body.buffered,
                now=loop.time(),
            ):  # fmt: skip
                continue
            break
        except Reply as reply:
            ex.record(None if reply.client_fault else False)
            raise
        except BaseException:
            ex.record(None)  # cancelled: the client's connection is gone
            raise
        status = conn.status
        ex.try_span(status, None)
        if status >= 500:
            ex.record(False)
            if ex.retry(
                _STATUS, status=status, sent=True, replayable=body.buffered, now=loop.time()
            ):
                ex.last = (status, f"upstream answered {status}")
                transport.done(conn)
                continue
        else:
            ex.record(True)
        ex.bytes_out = await relay(conn, transport, send, receive, idle=service.timeouts.request,
                                   watch=body.done, rules=response_rules)  # fmt: skip
        return status
    raise Reply(*ex.last)


async def relay(
    conn: UpstreamConnection,
    transport: Http1Transport,
    send: Send,
    receive: Receive,
    *,
    idle: float,
    watch: bool,
    rules: HeaderRules | None = None,
) -> int:
    """Send the upstream's answer to the client, streaming its body; ``rules``: the
    route's response header rules (at the gateway the client talks to). Returns the
    body bytes sent."""
    status = conn.status
    out = hygiene.response_headers(conn.headers, status)
    if rules is not None:
        out = apply_header_rules(rules, out)
    whole = conn.take_all()
    if whole is not None:  # the common case: everything is here already
        transport.done(conn)
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": whole, "more_body": False})
        return len(whole)
    conn.set_idle_timeout(idle)
    watcher: asyncio.Task[None] | None = None
    if watch:
        # a streamed answer: notice the client going away (receive() returns then)
        watcher = asyncio.ensure_future(_watch_disconnect(receive, conn))
    sent = 0
    try:
        await send({"type": "http.response.start", "status": status, "headers": out})
        while True:
            chunk = await conn.read_body()
            if not chunk:
                break
            sent += len(chunk)
            try:
                async with asyncio.timeout(idle):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except TimeoutError:
                transport.done(conn, reuse=False)
                raise Reply(499, "client stopped reading") from None
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except UpstreamError:
        transport.done(conn, reuse=False)
        raise Reply(499, "upstream failed mid-response") from None
    finally:
        if watcher is not None and not watcher.done():
            watcher.cancel()
    transport.done(conn)
    return sent


async def _watch_disconnect(receive: Receive, conn: UpstreamConnection) -> None:
    while True:
        msg: Message = await receive()
        if msg["type"] == "http.disconnect":
            if not conn.complete:
                conn.close()
            return
