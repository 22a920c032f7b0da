"""The ASGI side of the try loop: send each try through its transport, decide on the
answer, relay it to the client (streaming, with deadlines both ways).

Deadlines: everything up to the answer's head within ``timeouts.request`` from the
request's start (a request body that an upstream does not take fails the try then); while
an answer's body streams, ``timeouts.request`` is an idle limit in each direction: no
byte from the upstream for that long, or a client that takes nothing for that long, cuts
the exchange (the upstream connection is closed, never pinned by a stalled client).

gRPC calls (``protocol: grpc`` services, ``content-type: application/grpc``) take three
protocol steps in the same loop: ``grpc-timeout`` becomes the deadline (never later than
``timeouts.request``; it also bounds the wait for each try's head, the answer's
streaming and every write of it to the client); an answer whose ``grpc-status`` is in
``retries.grpcStatus`` (UNAVAILABLE by default) is a failed try, retried like a 503 but
whatever the method; response trailers are relayed (ASGI ``http.response.trailers``)
and a failure mid-answer ends the call with a gRPC status in the trailers rather than a
broken stream. Gateway errors become trailers-only gRPC answers in the HTTP/2 server
(``gateway/h2/stream.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from federation.model import HeaderRules
from gateway import hygiene
from gateway.bodies import RequestBody
from gateway.failures import FailureKind, Reply, status_for
from gateway.h2 import grpc
from gateway.h2.stream import IDLE_KEY
from gateway.h2.transport import H2Answer
from gateway.hygiene import BACKEND_HEADER, FORWARDED_HEADER, PEER_HEADER
from gateway.pipeline import Exchange
from gateway.proxy import UpstreamError
from gateway.rules import apply_header_rules
from gateway.transport import Answer, Transport, TryRequest
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
    trailers: bool = False,
) -> int:
    """Try the plan and relay the answer; returns the status sent (raises Reply).

    ``local``: (target, Host, headers) for a local endpoint when the route rewrites them
    (``admission.local_request``); a remote cluster's gateway gets the request as it came
    and applies the route's rules itself. ``response_rules``: the route's response header
    rules, applied to the relayed answer. ``trailers``: the client takes response
    trailers (the ASGI extension)."""
    plane = ex.plane
    service = ex.service
    loop = asyncio.get_running_loop()
    remote_headers: list[tuple[bytes, bytes]] | None = None
    local_path, local_host, local_headers = local or (path, host, headers)
    is_grpc = service.protocol == "grpc" and grpc.is_grpc(headers)
    call_deadline = False
    if is_grpc:  # gRPC: the call's own deadline
        seconds = grpc.call_timeout(headers)
        if seconds is not None and loop.time() + seconds < ex.deadline:
            ex.deadline = loop.time() + seconds
            call_deadline = True
    begun = ex.target is not None  # the fast path's pick, with no idle connection to it
    while begun or ex.next_try():
        begun = False
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
                target,
                TryRequest(
                    method, to, to_host, hdrs, body, receive, service.timeouts.connect,
                    ex.deadline - loop.time() if call_deadline else ex.per_try, ex.deadline,
                ),
            )  # fmt: skip
        except UpstreamError as failure:
            ex.record(False)
            ex.try_span(None, failure.kind)
            if failure.kind is FailureKind.CONNECT:
                plane.telemetry.connect_error(service.name, target.cluster)
            ex.last = (status_for(failure.kind), str(failure))
            if ex.retry(
                failure.kind, status=None, sent=failure.sent, replayable=body.replayable,
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
        code = grpc.status_of(conn.headers) if is_grpc else None  # a trailers-only answer
        grpc_failed = code is not None and code in service.retries.grpc_status
        if status >= 500 or grpc_failed:
            ex.record(False)
            if ex.retry(
                _STATUS, status=status, sent=True, replayable=body.replayable,
                now=loop.time(), judged=grpc_failed,
            ):  # fmt: skip
                ex.last = (503 if grpc_failed else status, f"upstream answered {status}")
                transport.done(conn)
                continue
        else:
            ex.record(True)
        ex.bytes_out = await relay(
            conn, transport, send, receive, idle=service.timeouts.request,
            watch=body.done and not transport.watches_client, trailers=trailers,
            grpc_call=is_grpc, until=ex.deadline if call_deadline else None,
            rules=response_rules,
        )  # fmt: skip
        return status
    raise Reply(*ex.last)


async def relay(
    conn: Answer,
    transport: Transport,
    send: Send,
    receive: Receive,
    *,
    idle: float,
    watch: bool,
    trailers: bool = False,
    grpc_call: bool = False,
    until: float | None = None,
    rules: HeaderRules | None = None,
) -> int:
    """Send the upstream's answer to the client, streaming its body; its trailers too
    when the client takes them (``trailers``). ``grpc_call``: the answer ends with a
    gRPC status in the trailers if it fails midway; ``until``: the call's deadline (a
    loop time, from ``grpc-timeout``), by which the whole answer must be through;
    ``rules``: the route's response header rules (at the gateway the client talks to).
    Returns the body bytes sent."""
    status = conn.status
    out = hygiene.response_headers(conn.headers, status)
    if rules is not None:
        out = apply_header_rules(rules, out)
    h2answer = conn if isinstance(conn, H2Answer) else None
    tail = h2answer.trailers if h2answer is not None else None
    whole = conn.take_all()
    if whole is not None:  # the common case: everything is here already
        transport.done(conn)
        start: dict[str, object] = {"type": "http.response.start", "status": status}
        if tail and not whole:
            out += tail  # no body: one header block (a gRPC trailers-only answer)
            tail = None
        elif tail and trailers:
            start["trailers"] = True
        start["headers"] = out
        start[IDLE_KEY] = _limit(idle, until)  # the HTTP/2 server bounds its waits by it
        await send(start)
        await send({"type": "http.response.body", "body": whole, "more_body": False})
        if tail and trailers:
            await send({"type": "http.response.trailers", "headers": list(tail)})
        return len(whole)
    conn.set_idle_timeout(idle)
    trailing = trailers and h2answer is not None
    watcher: asyncio.Task[None] | None = None
    if watch:
        # a streamed answer: notice the client going away (receive() returns then)
        watcher = asyncio.ensure_future(_watch_disconnect(receive, conn))
    sent = 0
    try:
        start = {"type": "http.response.start", "status": status, "headers": out,
                 IDLE_KEY: _limit(idle, until)}  # fmt: skip
        if trailing:
            start["trailers"] = True
        await send(start)
        while True:
            if until is None:
                chunk = await conn.read_body()
            else:
                try:
                    async with asyncio.timeout_at(until):
                        chunk = await conn.read_body()
                except TimeoutError:
                    raise UpstreamError(
                        FailureKind.TIMEOUT, "deadline exceeded", sent=True
                    ) from None
            if not chunk:
                break
            sent += len(chunk)
            try:
                async with asyncio.timeout(idle if until is None else _limit(idle, until)):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except TimeoutError:
                transport.done(conn, reuse=False)
                raise Reply(499, "client stopped reading") from None
        # the answer is complete (its trailers too): its connection goes back to the pool
        # before the last writes (which may wait for a slow client), ready for the client's
        # next request; the watcher first, which must never close it once another has it
        if watcher is not None:
            watcher.cancel()
        transport.done(conn)
        await _bounded(send, {"type": "http.response.body", "body": b"", "more_body": False},
                       _limit(idle, until))  # fmt: skip
        if h2answer is not None and trailing:
            await _bounded(
                send, {"type": "http.response.trailers", "headers": list(h2answer.trailers)},
                _limit(idle, until),
            )  # fmt: skip
    except UpstreamError as failure:
        transport.done(conn, reuse=False)
        if grpc_call and trailing:  # the call ends with a status
            late = failure.kind is FailureKind.TIMEOUT
            code = grpc.DEADLINE_EXCEEDED if late else grpc.UNAVAILABLE
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            await send(
                {"type": "http.response.trailers",
                 "headers": grpc.error_headers(code, str(failure))[2:]}
            )  # fmt: skip
            return sent
        raise Reply(499, "upstream failed mid-response") from None
    finally:
        if watcher is not None and not watcher.done():
            watcher.cancel()
    return sent


def _limit(idle: float, until: float | None) -> float:
    """How long one write may wait for the client: the idle limit, and never past the
    call's deadline (``until``, a loop time) when there is one."""
    if until is None:
        return idle
    return max(0.001, min(idle, until - asyncio.get_running_loop().time()))


async def _bounded(send: Send, message: Message, idle: float) -> None:
    """One write to the client once the upstream's part is over: a client that takes
    nothing for ``idle`` seconds ends the exchange as its own doing (499)."""
    try:
        async with asyncio.timeout(idle):
            await send(message)
    except TimeoutError:
        raise Reply(499, "client stopped reading") from None


async def _watch_disconnect(receive: Receive, conn: Answer) -> None:
    while True:
        msg: Message = await receive()
        if msg["type"] == "http.disconnect":
            if not conn.complete:
                conn.close()
            return
