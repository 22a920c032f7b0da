"""The upstream client: an asyncio Protocol with an httptools response parser.

One :class:`UpstreamConnection` carries one request at a time (no pipelining); the pool
of idle keep-alive connections is ``gateway/upstream_pool.py``. Bodies stream both ways
with backpressure: the request body is written as the client sends it and waits while
the upstream socket's buffer is full; the response body is queued up to a high-water
mark, above which the upstream socket stops being read until the client has taken the
data. A whole answer whose head is known (``gateway/known_heads.py``) is not parsed twice.

Response framing is checked strictly: llhttp rejects Content-Length together with
Transfer-Encoding, duplicate or malformed Content-Length and bad header characters; on
top of that a Transfer-Encoding other than exactly ``chunked`` is refused. A framing
error is an :class:`UpstreamError` of kind ``protocol`` (the gateway answers 502, never
relays it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from typing import Any, cast

import httptools

from gateway import known_heads
from gateway.failures import FailureKind
from gateway.known_heads import KnownHead

HIGH_WATER = 256 * 1024  # queued response bytes above which upstream reads pause
LOW_WATER = 64 * 1024

# the failure kinds, by their short names
CONNECT = FailureKind.CONNECT
RESET = FailureKind.RESET
TIMEOUT = FailureKind.TIMEOUT
PROTOCOL = FailureKind.PROTOCOL

MAX_SWEEP_LAG = 0.1  # a deadline sweep later than this: the loop stalled, deadlines move
MAX_RESPONSE_HEAD_BYTES = 65536  # an upstream's response head (names + values)
MAX_RESPONSE_HEADERS = 200  # and its header count; past either: 502, memory bounded
MAX_RAW_HEAD_BYTES = MAX_RESPONSE_HEAD_BYTES + 4096  # raw bytes still in a head: 502


class UpstreamError(Exception):
    """An upstream attempt failed. ``sent``: whether any request byte went out."""

    def __init__(
        self, kind: FailureKind, message: str, *, sent: bool, received: bool = False
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.sent = sent
        self.received = received  # whether any response byte came back


class _BadFraming(Exception):
    pass


PoolKey = tuple[str, int, bool]


class UpstreamConnection(asyncio.Protocol):
    """One upstream HTTP/1.1 connection; reused across requests through the pool."""

    __slots__ = (
        "_body_waiter",
        "_buffered",
        "_clean",
        "_drain_waiter",
        "_has_length",
        "_head_bytes",
        "_head_waiter",
        "_idle_limit",
        "_informational",
        "_last_rx",
        "_live",
        "_parser",
        "_read_paused",
        "chunked",
        "chunks",
        "closed",
        "complete",
        "deadline",
        "error",
        "headers",
        "idle_since",
        "keep_alive",
        "key",
        "known",
        "listener",
        "loop",
        "no_body",
        "received",
        "sent",
        "status",
        "transport",
        "write_paused",
    )

    def __init__(
        self,
        key: PoolKey,
        loop: asyncio.AbstractEventLoop,
        live: set[UpstreamConnection] | None = None,
    ) -> None:
        self.key = key
        self.loop = loop
        self._live = live if live is not None else set()
        self.deadline = 0.0  # loop time after which the attempt fails (0: none)
        self.no_body = False  # the request was HEAD: the answer has no body
        self.listener: Any = None  # a callback exchange (fast path): .upstream_event(conn)
        self._parser = httptools.HttpResponseParser(self)
        self._clean = True  # the parser is between answers (not inside one)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        self._idle_limit = 0.0
        self._last_rx = 0.0
        self._reset_response()

    def _reset_response(self) -> None:
        # the parser carries on across keep-alive responses; only our state is reset
        self.deadline = 0.0
        self.no_body = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        chunks = getattr(self, "chunks", None)
        if chunks is None or chunks:  # an empty deque is reused
            self.chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._read_paused = False
        self._head_waiter: asyncio.Future[None] | None = None
        self._body_waiter: asyncio.Future[None] | None = None
        self._informational = False
        self._idle_limit = 0.0
        self._has_length = False
        self._head_bytes = 0  # raw bytes received until the head was complete
        self.chunked = False
        self.complete = False
        self.keep_alive = True
        self.error: UpstreamError | None = None
        self.sent = False
        self.received = False
        self.known: KnownHead | None = None  # the answer's head, when taken as known

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._live.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.received = True
        fresh = self._clean and not self.status and not self._head_bytes and not self.no_body
        if fresh and self._known_answer(data):
            return
        if not self.status:
            self._head_bytes += len(data)  # bytes of this answer so far (>= its head)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # 101 Switching Protocols outside a WebSocket tunnel: refuse
            self._fail(PROTOCOL, "upstream switched protocols unexpectedly")
        except httptools.HttpParserError as exc:
            reason = exc.__context__ if isinstance(exc.__context__, _BadFraming) else exc
            self._fail(PROTOCOL, f"bad upstream response: {reason}")
            return
        if not self.status and not self.complete and self._head_bytes > MAX_RAW_HEAD_BYTES:
            # still in the head: bound what it may cost (one endless header line included)
            self._fail(PROTOCOL, "upstream response head too large")
            return
        if (  # one whole answer that can be taken again as is: its head is known from now on
            fresh
            and self.complete
            and self._clean
            and self.keep_alive
            and self._has_length
            and not self.chunked
            and self.error is None
            and 200 <= self.status != 204
            and self.status != 304
        ):
            known_heads.remember(data, self.status, tuple(self.headers), self._buffered)
        listener = self.listener
        if listener is not None and self.status:
            listener.upstream_event(self)

    def _known_answer(self, data: bytes) -> bool:
        """A whole answer in one read whose head llhttp accepted before (``known_heads``):
        taken as parsed then."""
        found = known_heads.find(data)
        if found is None:
            return False
        known, end = found
        self.known = known
        self.status = known.status
        self.headers = list(known.headers)
        self._has_length = True
        if known.length:
            self.chunks.append(data[end:])
            self._buffered = known.length
        self._complete()
        if self.listener is not None:
            self.listener.upstream_event(self)
        return True

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        self.deadline = 0.0
        self._live.discard(self)
        if (
            self.status
            and not self.complete
            and self.error is None
            and not self._has_length
            and not self.chunked
        ):
            self._complete()  # a body delimited by the end of the connection
            if self.listener is not None:
                self.listener.upstream_event(self)
            return
        if not self.complete and self.error is None:
            self._fail(RESET, "upstream closed the connection" + (f": {exc}" if exc else ""))
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        w = self._drain_waiter
        if w is not None:
            self._drain_waiter = None
            if not w.done():
                w.set_result(None)

    # ------------------------------------------------------------ httptools callbacks
    def on_message_begin(self) -> None:
        self._clean = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self._has_length = True
        elif name == b"transfer-encoding":
            if value.strip().lower() != b"chunked" or self.chunked:
                raise _BadFraming(f"Transfer-Encoding {value!r} is not exactly chunked")
            self.chunked = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        headers = self.headers
        if len(headers) > MAX_RESPONSE_HEADERS:
            raise _BadFraming("too many response headers")
        if self._head_bytes > MAX_RESPONSE_HEAD_BYTES and (
            sum(len(n) + len(v) for n, v in headers) > MAX_RESPONSE_HEAD_BYTES
        ):  # only an answer this large so far can have a head this large
            raise _BadFraming("response head too large")
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # 100 Continue and friends: swallowed (the gateway sends the body anyway)
            self._informational = True
            self.headers = []
            self._has_length = self.chunked = False
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        if self.no_body:
            # an answer to HEAD: llhttp would wait for Content-Length bytes; the
            # connection is not reused (its parser state is that of a body)
            self.keep_alive = False
            self._complete()
            return
        w = self._head_waiter
        if w is not None:
            self._head_waiter = None
            if not w.done():
                w.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._idle_limit:
            self._last_rx = self.loop.time()
        self.chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake_body()

    def on_message_complete(self) -> None:
        self._clean = True
        if self.no_body and self.complete:
            return
        if self._informational:
            self._informational = False
            return
        self._complete()

    # ------------------------------------------------------------ internal
    def _complete(self) -> None:
        self.complete = True
        self.deadline = 0.0
        self._wake_body()
        w = self._head_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _wake_body(self) -> None:
        w = self._body_waiter
        if w is not None:
            self._body_waiter = None
            if not w.done():
                w.set_result(None)

    def _fail(self, kind: FailureKind, message: str) -> None:
        if self.error is None and not self.complete:
            self.error = UpstreamError(kind, message, sent=self.sent, received=self.received)
        self.keep_alive = False
        self.deadline = 0.0
        for w in (self._head_waiter, self._body_waiter):
            if w is not None and not w.done():
                w.set_result(None)
        self._head_waiter = self._body_waiter = None
        if self.transport is not None and not self.closed:
            self.transport.abort()
        listener = self.listener
        if listener is not None:
            listener.upstream_event(self)

    def check_deadline(self, now: float) -> None:
        """Called by the pool's periodic sweep."""
        if self.complete or self.error is not None:
            self.deadline = 0.0
            return
        if self._idle_limit:
            if self._read_paused:
                self._last_rx = now  # waiting for the client to take data, not the upstream
            if now - self._last_rx >= self._idle_limit:
                self._fail(TIMEOUT, "upstream body idle too long")
        elif now >= self.deadline:
            self._fail(TIMEOUT, "upstream timed out")

    # ------------------------------------------------------------ the request API
    def begin(self) -> None:
        """Prepare for a new request on this (fresh or reused) connection."""
        if self.status or self.received:
            self._reset_response()

    def set_timeout(self, seconds: float | None) -> None:
        """Fail the attempt with a timeout after ``seconds`` (None: no deadline); checked by
        the pool's sweep, so it fires up to one sweep interval late."""
        if seconds is None or self.complete or self.error is not None:
            self.deadline = 0.0
        else:
            self.deadline = self.loop.time() + seconds

    def set_idle_timeout(self, seconds: float) -> None:
        """While the body streams: fail when no byte arrived for ``seconds``."""
        self._idle_limit = seconds
        self._last_rx = self.loop.time()
        self.deadline = self._last_rx + seconds if not self.complete else 0.0

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        if self.transport is None or self.closed:
            raise UpstreamError(RESET, "upstream connection closed", sent=self.sent)
        self.sent = True
        self.transport.write(data)

    async def drain(self) -> None:
        while self.write_paused and not self.closed and self.error is None:
            if self._drain_waiter is None or self._drain_waiter.done():
                self._drain_waiter = self.loop.create_future()
            await self._drain_waiter
        if self.error is not None:
            raise self.error

    async def read_head(self) -> None:
        """Wait for the response status and headers (raises UpstreamError)."""
        if not self.status and self.error is None:
            w = self._head_waiter = self.loop.create_future()
            try:
                await w
            finally:
                self._head_waiter = None
        if self.error is not None:
            raise self.error
        if not self.status:
            raise UpstreamError(RESET, "upstream sent no response", sent=self.sent)

    async def read_body(self) -> bytes:
        """The next piece of the response body; b"" once it is complete."""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self._buffered -= len(chunk)
                if (
                    self._read_paused
                    and self._buffered < LOW_WATER
                    and self.transport is not None
                    and not self.closed
                ):
                    self._read_paused = False
                    self.transport.resume_reading()
                return chunk
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            w = self._body_waiter = self.loop.create_future()
            await w

    def take_all(self) -> bytes | None:
        """If the response is already complete and fully buffered: its whole body."""
        if not self.complete or self.error is not None:
            return None
        if not self.chunks:
            return b""
        if len(self.chunks) == 1:
            body = self.chunks.popleft()
        else:
            body = b"".join(self.chunks)
            self.chunks.clear()
        self._buffered = 0
        return body

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
