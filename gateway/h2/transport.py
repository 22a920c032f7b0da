"""The HTTP/2 upstream transport (``protocol: h2`` and ``protocol: grpc`` services): one
try over the multiplexed client of :mod:`gateway.h2.client`, with the shape of
:class:`gateway.transport.Http1Transport` (``send()`` returns the answer once its head is
here, ``done()`` ends it), chosen by :meth:`gateway.plane.DataPlane.transport`.

* The request body is streamed from the first byte (a gRPC stream may be open-ended) by
  one task per try that also watches for the client leaving; what went out is kept in the
  :class:`~gateway.bodies.RequestBody` (up to 64 KiB) so a failed try can be replayed,
  past that a try that sent a byte is not tried again.
* ``grpc-timeout`` is passed on reduced to the time left before the try loop's deadline
  (which the gRPC step of ``gateway/forward.py`` set from it).
* The answer's trailers are kept in :attr:`H2Answer.trailers` for the relay; request
  trailers arrive in the last ``http.request`` message as ``fedgate.trailers``.
* A stream the server refused (``REFUSED_STREAM``, above a GOAWAY) fails with
  ``sent=False``: any request may be tried again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from gateway.bodies import RequestBody
from gateway.failures import FailureKind, Reply
from gateway.h2.client import H2Pool, H2Stream
from gateway.proxy import UpstreamError
from gateway.transport import ServerCheck, TargetLike, TryRequest
from gateway.types import Receive

_NOT_SENT = frozenset({b"host", b"transfer-encoding", b"grpc-timeout", b"content-length"})


class H2Answer:
    """The answer of one HTTP/2 try (the relay's view of :class:`H2Stream`)."""

    __slots__ = ("idle", "pump", "stream")

    def __init__(self, stream: H2Stream, pump: asyncio.Task[bool] | None) -> None:
        self.stream = stream
        self.pump = pump
        self.idle: float | None = None

    @property
    def status(self) -> int:
        return self.stream.status

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return self.stream.headers

    @property
    def trailers(self) -> Sequence[tuple[bytes, bytes]]:
        return self.stream.trailers

    @property
    def complete(self) -> bool:
        return self.stream.ended and not self.stream.body

    def take_all(self) -> bytes | None:
        """The whole body when the server has ended the stream already, else None."""
        stream = self.stream
        if not stream.ended or stream.error is not None:
            return None
        parts = []
        while stream.body:
            data, flow = stream.body.popleft()
            stream.conn.ack(stream.id, flow)
            parts.append(data)
        return b"".join(parts)

    def set_idle_timeout(self, seconds: float) -> None:
        self.idle = seconds

    async def read_body(self) -> bytes:
        """The next piece of the body (``b""`` at its end); no byte for ``idle`` seconds
        fails it (TIMEOUT)."""
        if self.idle is None:
            return await self.stream.read_body()
        try:
            async with asyncio.timeout(self.idle):
                return await self.stream.read_body()
        except TimeoutError:
            raise UpstreamError(
                FailureKind.TIMEOUT, "upstream body idle too long", sent=True
            ) from None

    def close(self) -> None:
        self.stream.reset()

    def finish(self) -> None:
        pump = self.pump
        if pump is not None:
            if not pump.done():
                pump.cancel()
            elif not pump.cancelled():
                pump.exception()  # retrieved (a 413 after the head: the relay ends anyway)
        self.stream.release()


class H2Transport:
    """Tries over the bounded pool of multiplexed HTTP/2 connections."""

    __slots__ = ("check_server", "pool")

    watches_client = True  # the body pump notices the client leaving (no relay watcher)

    def __init__(self, pool: H2Pool, *, check_server: ServerCheck | None = None) -> None:
        self.pool = pool
        self.check_server = check_server  # run once per new connection, before any stream

    def _verifier(self, target: TargetLike) -> Callable[[object], str | None] | None:
        check = self.check_server
        if check is None or target.ssl is None:
            return None
        return lambda ssl_object: check(target, ssl_object)

    async def send(self, target: TargetLike, req: TryRequest) -> H2Answer:
        """Open a stream, start the body and wait for the response head (``per_try``
        seconds; never past the deadline)."""
        _, remaining = req.time_left()
        body = req.body
        headers = req.headers
        out = _request_headers(req.method, req.path, req.host, headers, target.ssl is not None,
                               body)  # fmt: skip
        for name, _value in headers:
            if name == b"grpc-timeout":
                out.append((b"grpc-timeout", b"%dm" % max(1, int(remaining * 1000))))
                break
        kept = body.prefix if body.buffered else b"".join(body.kept or ())
        stream: H2Stream | None = None
        pump: asyncio.Task[bool] | None = None
        try:
            try:
                async with asyncio.timeout(min(req.per_try, remaining)):
                    stream = await self.pool.open_stream(
                        target.host, target.port, out,
                        end=body.done and not kept and not body.trailers,
                        ssl_context=target.ssl, server_hostname=target.server_hostname,
                        connect_timeout=min(req.connect_timeout, remaining),
                        verify=self._verifier(target),
                    )  # fmt: skip
                    pump = asyncio.ensure_future(_pump(stream, body, kept, req.receive))
                    await stream.read_head()
            except TimeoutError:
                raise UpstreamError(
                    FailureKind.TIMEOUT, "upstream did not answer in time",
                    sent=stream is not None,
                ) from None  # fmt: skip
        except BaseException:
            client = _client_fault(pump)
            if pump is not None and not pump.done():
                pump.cancel()
            if stream is not None:
                stream.release()
            if client is not None:  # the client's doing, not the upstream's
                raise client from None
            raise
        return H2Answer(stream, pump)

    def done(self, conn: H2Answer, *, reuse: bool = True) -> None:
        """The try is over: stop its body pump, release (or reset) its stream."""
        conn.finish()


def _client_fault(pump: asyncio.Task[bool] | None) -> Reply | None:
    """Why the body pump ended the try, when the client is to blame: it left (499) or
    sent too much (413)."""
    if pump is None or not pump.done() or pump.cancelled():
        return None
    exc = pump.exception()
    if isinstance(exc, Reply):
        return exc
    if exc is None and pump.result():
        return Reply(499, "client disconnected")
    return None


def _request_headers(
    method: str,
    path: bytes,
    host: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    tls: bool,
    body: RequestBody,
) -> list[tuple[bytes, bytes]]:
    out = [
        (b":method", method.encode("ascii")),
        (b":scheme", b"https" if tls else b"http"),
        (b":authority", host),
        (b":path", path),
    ]
    for name, value in headers:
        if name not in _NOT_SENT:
            out.append((name, value))
    out.append((b"te", b"trailers"))
    if body.buffered:
        if body.prefix or body.length is not None:
            out.append((b"content-length", b"%d" % len(body.prefix)))
    elif body.length is not None:
        out.append((b"content-length", b"%d" % body.length))
    return out


async def _pump(stream: H2Stream, body: RequestBody, kept: bytes, receive: Receive) -> bool:
    """Send the request body into ``stream``: what earlier tries sent (or what was read
    ahead), then the rest as it arrives (kept for a replay), the last piece with
    END_STREAM or the request trailers; then watch for the client leaving (the stream
    is reset, which ends the try or the relay). True when the client left; a body over
    the limit resets the stream and raises its Reply (413)."""
    try:
        return await _send_body(stream, body, kept, receive)
    except Reply:
        stream.reset()
        raise


async def _send_body(stream: H2Stream, body: RequestBody, kept: bytes, receive: Receive) -> bool:
    trailers = body.trailers
    if kept:
        await stream.write(kept, end=body.done and not trailers)
    if body.done and trailers:
        stream.end(trailers)
    if not body.done:
        body.keeping = True
    while not body.done:
        msg = await receive()
        if msg["type"] != "http.request":
            stream.reset()  # the client left mid-body
            return True
        chunk = msg.get("body", b"")
        more = msg.get("more_body", False)
        if not more:
            body.done = True
            body.trailers = trailers = msg.get("fedgate.trailers")
        if chunk:
            body.count(len(chunk))
            body.keep(chunk)
            await stream.write(chunk, end=not more and not trailers)
        if not more and (trailers or not chunk):
            stream.end(trailers)
    while (await receive())["type"] != "http.disconnect":
        pass
    stream.reset()  # the client left: the relay ends
    return True
