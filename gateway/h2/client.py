"""The HTTP/2 upstream client: multiplexed connections, a bounded pool per endpoint.

An :class:`H2Pool` keeps at most ``max_connections`` connections per (host, port, TLS)
and opens streams on the least busy one that has room under the peer's
``SETTINGS_MAX_CONCURRENT_STREAMS``; when all are full a new stream waits (under the
caller's deadline) for one to finish. Connections are opened once per need (concurrent
requests wait for the connection being made instead of racing to open more) and idle
ones close after ``idle_timeout``.

A stream (:class:`H2Stream`) has the shape of the HTTP/1.1 transport of
:mod:`gateway.proxy`: write the body (waiting for the peer's flow-control window),
``read_head()``, ``read_body()`` until ``b""``, then ``trailers``. Failures are
:class:`gateway.proxy.UpstreamError` with the same kinds (connect, reset, protocol);
a stream the server refused (``REFUSED_STREAM``, or above a GOAWAY's last stream id)
reports ``sent=False`` because the server did not process it, so any request may be
tried again. TLS connections send the preface without ALPN (the east-west client
context offers ``http/1.1`` only, for the HTTP/1.1 pool): a fedgate east-west listener
recognises the preface.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from gateway.h2.plumbing import H2Plumbing
from gateway.proxy import CONNECT, PROTOCOL, RESET, UpstreamError

PoolKey = tuple[str, int, bool]
WINDOW = 4 * 1024 * 1024  # our receive window, per stream and per connection
_PSEUDO_OK = frozenset({b":status"})


class H2Stream:
    """One request/response exchange on an :class:`H2Connection`."""

    __slots__ = (
        "_reported",
        "body",
        "conn",
        "ended",
        "error",
        "event",
        "headers",
        "id",
        "status",
        "trailers",
    )

    def __init__(self, conn: H2Connection, stream_id: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.body: collections.deque[tuple[bytes, int]] = collections.deque()
        self.ended = False  # the server ended its side
        self.error: UpstreamError | None = None
        self.event = asyncio.Event()
        self._reported = False

    async def read_head(self) -> None:
        while not self.status:
            if self.error is not None:
                raise self.error
            self.event.clear()
            await self.event.wait()

    async def read_body(self) -> bytes:
        """The next piece of the response body; ``b""`` at its end (trailers are then in
        :attr:`trailers`)."""
        while True:
            if self.body:
                data, flow = self.body.popleft()
                self.conn.ack(self.id, flow)
                if data:
                    return data
                continue
            if self.ended:
                return b""
            if self.error is not None:
                raise self.error
            self.event.clear()
            await self.event.wait()

    async def write(self, data: bytes, *, end: bool = False) -> None:
        """Send request body bytes, waiting for the peer's window and our socket."""
        conn = self.conn
        view = memoryview(data)
        while view:
            if self.error is not None:
                raise self.error
            if self.ended:
                return  # the server answered in full: the rest is not wanted
            window = conn.send_window(self.id)
            if window is None:
                return
            if window <= 0:
                self.event.clear()
                await self.event.wait()
                continue
            chunk, view = view[:window], view[window:]
            try:
                conn.h2.send_data(self.id, chunk.tobytes(), end_stream=end and not view)
            except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError) as exc:
                self._fail(UpstreamError(RESET, f"upstream stream closed: {exc}", sent=True))
                raise self.error from None  # type: ignore[misc]
            conn.flush_now()
            await conn.drain()
        if end and not data:
            self.end()

    def end(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        """End the request (with trailers, if any)."""
        conn = self.conn
        if self.error is not None or conn.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
            if trailers:
                conn.h2.send_headers(self.id, trailers, end_stream=True)
            else:
                conn.h2.end_stream(self.id)
            conn.flush()

    def reset(self) -> None:
        """Abandon the exchange (RST_STREAM CANCEL); the connection stays."""
        self._fail(UpstreamError(RESET, "stream cancelled", sent=True))
        conn = self.conn
        if self.id in conn.streams and not conn.closed:
            with contextlib.suppress(h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
                conn.h2.reset_stream(self.id, h2.errors.ErrorCodes.CANCEL)
                conn.flush()
        conn.finished(self)

    def release(self) -> None:
        """The exchange is over: a stream still open on either side is reset (a server that
        answered before reading the whole request leaves ours open: it would count
        against the peer's concurrent-stream limit for ever)."""
        state = self.conn.h2.streams.get(self.id)
        if not self.ended or (state is not None and not state.closed):
            self.reset()
        else:
            self.conn.finished(self)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None and not (self.ended and self.status):
            self.error = error
        self.event.set()


class H2Connection(H2Plumbing):
    """One upstream HTTP/2 connection carrying many streams."""

    def __init__(self, pool: H2Pool, key: PoolKey) -> None:
        super().__init__(
            client_side=True,
            settings={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 256 * 1024,
            },
            window=WINDOW,
        )
        self.pool = pool
        self.key = key
        self.streams: dict[int, H2Stream] = {}
        self.goaway = False
        self.idle_since = time.monotonic()

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.start(transport)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.flush()
            self._fail_all(UpstreamError(PROTOCOL, f"upstream HTTP/2 error: {exc}", sent=True))
            self.close()
            return
        for event in events:
            self._event(event)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_all(UpstreamError(RESET, "upstream closed the connection", sent=True))
        self.pool.forget(self)
        self.resume_writing()

    # ------------------------------------------------------------ events
    def _event(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None)
        stream = self.streams.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived):
            if stream is not None:
                for name, value in event.headers or ():
                    if name == b":status":
                        stream.status = int(value)
                    elif name[:1] != b":":
                        stream.headers.append((name, value))
                stream.event.set()
        elif isinstance(event, h2.events.DataReceived):
            flow = event.flow_controlled_length or 0
            if stream is None:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.h2.increment_flow_control_window(flow) if flow else None
            else:
                stream.body.append((event.data or b"", flow))
                stream.event.set()
        elif isinstance(event, h2.events.TrailersReceived):
            if stream is not None:
                stream.trailers = [(n, v) for n, v in event.headers or () if n[:1] != b":"]
        elif isinstance(event, h2.events.StreamEnded):
            if stream is not None:
                stream.ended = True
                stream.event.set()
        elif isinstance(event, h2.events.StreamReset):
            if stream is not None:
                refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                stream._fail(
                    UpstreamError(
                        RESET, f"upstream reset the stream ({event.error_code!s})",
                        sent=not refused, received=bool(stream.status),
                    )
                )  # fmt: skip
                self.streams.pop(stream.id, None)
                self.pool.wake(self.key)
        elif isinstance(event, h2.events.WindowUpdated):
            if sid:
                if stream is not None:
                    stream.event.set()
            else:
                for s in self.streams.values():
                    s.event.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for s in self.streams.values():
                s.event.set()
            self.pool.wake(self.key)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = True
            last = event.last_stream_id or 0
            for s in list(self.streams.values()):
                if s.id > last:  # never processed: safe to try elsewhere
                    s._fail(UpstreamError(RESET, "upstream went away", sent=False))
            if not self.streams or event.error_code != h2.errors.ErrorCodes.NO_ERROR:
                self._fail_all(UpstreamError(RESET, "upstream went away", sent=True))
                self.close()

    # ------------------------------------------------------------ use
    @property
    def capacity(self) -> int:
        """How many more streams this connection takes now."""
        if self.closed or self.goaway:
            return 0
        limit = self.h2.remote_settings.max_concurrent_streams
        return max(0, min(limit, 1000) - len(self.streams))

    def open(self, headers: list[tuple[bytes, bytes]], *, end: bool) -> H2Stream:
        try:
            sid = self.h2.get_next_available_stream_id()
            self.h2.send_headers(sid, headers, end_stream=end)
        except h2.exceptions.ProtocolError as exc:  # closed, or out of stream ids
            self.goaway = True
            raise UpstreamError(RESET, f"cannot open a stream: {exc}", sent=False) from None
        stream = H2Stream(self, sid)
        self.streams[sid] = stream
        self.flush()
        return stream

    def finished(self, stream: H2Stream) -> None:
        if self.streams.pop(stream.id, None) is not None:
            # what the stream left unread still counts against the connection window
            left = sum(flow for _, flow in stream.body)
            stream.body.clear()
            if left and not self.closed:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.h2.increment_flow_control_window(left)
                    self.flush()
            if not self.streams:
                self.idle_since = time.monotonic()
            self.pool.wake(self.key)
        if self.goaway and not self.streams:
            self.close()

    def _fail_all(self, error: UpstreamError) -> None:
        for stream in list(self.streams.values()):
            stream._fail(error)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection()
                data = self.h2.data_to_send()
                if data and self.transport is not None:
                    self.transport.write(data)
            if self.transport is not None:
                self.transport.close()
            self._fail_all(UpstreamError(RESET, "connection closed", sent=True))
            self.pool.forget(self)


class H2Pool:
    """At most ``max_connections`` multiplexed connections per upstream."""

    def __init__(self, *, max_connections: int = 4, idle_timeout: float = 60.0) -> None:
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._conns: dict[PoolKey, list[H2Connection]] = {}
        self._connecting: dict[PoolKey, asyncio.Future[H2Connection]] = {}
        self._room: dict[PoolKey, asyncio.Event] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.connects = 0
        self._closed = False

    async def open_stream(
        self,
        host: str,
        port: int,
        headers: list[tuple[bytes, bytes]],
        *,
        end: bool,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float,
        verify: Callable[[object], str | None] | None = None,
    ) -> H2Stream:
        """A new stream with these request headers (the caller bounds the wait).
        ``verify``: given a new connection's ``ssl_object``, why its server is not who the
        caller needs (``None``: it is); run once per new connection, before any stream."""
        key = (host, port, ssl_context is not None)
        while True:
            conns = self._conns.get(key, [])
            best = max(conns, key=lambda c: c.capacity, default=None)
            if best is not None and best.capacity > 0:
                return best.open(headers, end=end)
            pending = self._connecting.get(key)
            if pending is not None:
                await asyncio.shield(pending)
                continue
            if len(conns) < self.max_connections:
                await self._connect(key, ssl_context, server_hostname, connect_timeout, verify)
                continue
            room = self._room.setdefault(key, asyncio.Event())
            room.clear()
            await room.wait()

    async def _connect(
        self,
        key: PoolKey,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        timeout: float,
        verify: Callable[[object], str | None] | None = None,
    ) -> None:
        host, port, _ = key
        loop = asyncio.get_running_loop()
        future: asyncio.Future[H2Connection] = loop.create_future()
        self._connecting[key] = future
        conn = H2Connection(self, key)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: conn, host, port, ssl=ssl_context,
                    server_hostname=(server_hostname or host) if ssl_context else None,
                )  # fmt: skip
        except TimeoutError:
            conn.close()
            error = UpstreamError(CONNECT, f"connect to {host}:{port} timed out", sent=False)
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it on their own
            raise error from None
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            error = UpstreamError(CONNECT, f"connect to {host}:{port} failed: {exc}", sent=False)
            future.set_exception(error)
            future.exception()
            raise error from None
        finally:
            self._connecting.pop(key, None)
        if verify is not None:
            tr = conn.transport
            why = verify(tr.get_extra_info("ssl_object") if tr is not None else None)
            if why is not None:
                conn.close()
                error = UpstreamError(CONNECT, why, sent=False)
                future.set_exception(error)
                future.exception()
                raise error
        self.connects += 1
        self._conns.setdefault(key, []).append(conn)
        future.set_result(conn)
        if self._sweeper is None and not self._closed:
            self._sweeper = loop.call_later(min(self.idle_timeout, 5.0), self._sweep, loop)

    def wake(self, key: PoolKey) -> None:
        room = self._room.get(key)
        if room is not None:
            room.set()

    def forget(self, conn: H2Connection) -> None:
        conns = self._conns.get(conn.key)
        if conns is not None and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._conns[conn.key]
        self.wake(conn.key)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = None
        now = time.monotonic()
        for conns in list(self._conns.values()):
            for conn in list(conns):
                if not conn.streams and now - conn.idle_since > self.idle_timeout:
                    conn.close()
        if self._conns and not self._closed:
            self._sweeper = loop.call_later(min(self.idle_timeout, 5.0), self._sweep, loop)

    def connections(self, host: str, port: int, tls: bool = False) -> int:
        return len(self._conns.get((host, port, tls), ()))

    def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conns in list(self._conns.values()):
            for conn in list(conns):
                conn.close()
        self._conns.clear()
