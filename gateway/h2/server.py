"""The HTTP/2 server protocol: each h2 stream becomes an ASGI ``http`` scope
(``http_version: "2"``) run by the same app as the listener's HTTP/1.1 connections.

A connection arrives here from :mod:`gateway.h2.listen` (ALPN ``h2`` on TLS, or the
24-byte client preface on any listener). Framing is the ``h2`` library's; on top of it:

* **flow control**: a request body is acknowledged (WINDOW_UPDATE) only as the app reads
  it, so a client can never queue more than one stream window per stream; a response
  body waits for the peer's window and for the socket's write buffer;
* **stream limits**: ``SETTINGS_MAX_CONCURRENT_STREAMS`` (h2 refuses more), a header
  list limit (``SETTINGS_MAX_HEADER_LIST_SIZE`` = ``limits.maxHeaderBytes``, enforced
  while decoding, so an HPACK bomb stops at the limit), and a deadline for a header
  block (``limits.headerTimeout``: a CONTINUATION trickle is closed; h2 caps the frames
  of one block at 64);
* **abuse budgets** per connection and window (:class:`H2Limits`): client stream resets
  (rapid reset, CVE-2023-44487), SETTINGS frames, PINGs, DATA frames without payload
  (CVE-2019-9518: they use no window), and a cap on the bytes the
  client leaves unread in our send buffer; past one, GOAWAY ``ENHANCE_YOUR_CALM`` and
  the connection closes. A reset stream's app sees ``http.disconnect`` (as on HTTP/1.1,
  its task is not cancelled: a cancellation would count as an upstream failure against
  the breaker, so a client resetting streams could open it for everyone).

A request without ``content-length`` whose HEADERS did not end the stream is given
``transfer-encoding: chunked`` in the scope (the app's name for "a body of unknown
length", never sent as such). Cookies split over several fields are joined (RFC 9113
section 8.2.3); ``:authority`` becomes ``host``. Response trailers use the ASGI
``http.response.trailers`` extension; a response whose trailers come before any body
goes out as one HEADERS frame (gRPC's trailers-only form). A gateway error on a gRPC
request becomes a trailers-only answer with the matching ``grpc-status``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from federation.logging import get_logger
from gateway.h2 import grpc
from gateway.h2.plumbing import H2Plumbing
from gateway.h2.stream import Stream, answer
from gateway.request_parts import parse_target
from gateway.types import ASGIApp

log = get_logger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_ASGI = {"version": "3.0", "spec_version": "2.3"}


@dataclass(frozen=True, slots=True)
class H2Limits:
    max_concurrent_streams: int = 128
    max_header_list_size: int = 65536
    initial_window: int = 256 * 1024  # per stream, for request bodies
    connection_window: int = 4 * 1024 * 1024
    header_timeout: float = 10.0  # a header block must complete within this
    idle_timeout: float = 60.0  # a connection without streams closes after this
    write_timeout: float = 10.0  # a stream whose answer makes no progress this long is reset
    window: float = 10.0  # the abuse budgets below count per this many seconds
    max_resets: int = 200  # streams the client resets before they complete
    max_settings: int = 100
    max_pings: int = 100
    max_empty_data: int = 100  # DATA frames without payload (they use no window)
    max_unread: int = 4 * 1024 * 1024  # bytes the client leaves in our send buffer


class _Budget:
    __slots__ = ("count", "limit", "since")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.since = 0.0

    def spend(self, now: float, window: float) -> bool:
        """Count one; False once more than ``limit`` were spent inside one window."""
        if now - self.since > window:
            self.since = now
            self.count = 0
        self.count += 1
        return self.count <= self.limit


class H2ServerProtocol(H2Plumbing):
    """One HTTP/2 client connection."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: H2Limits,
        scheme: str,
        server: Any,
        client: Any,
        peer: str | None,
        connections: set[Any],
        tasks: set[asyncio.Task[None]],
        limit_concurrency: int | None = None,
    ) -> None:
        super().__init__(
            client_side=False,
            settings={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
            window=limits.connection_window,
        )
        self.app = app
        self.limits = limits
        self.scheme = scheme
        self.server = server
        self.client = client
        self.peer = peer
        self.connections = connections
        self.tasks = tasks
        self.limit_concurrency = limit_concurrency
        # enforced from the first frame, not only once the client acknowledged SETTINGS
        self.h2.decoder.max_header_list_size = limits.max_header_list_size
        self.streams: dict[int, Stream] = {}
        self.draining = False
        self._resets = _Budget(limits.max_resets)
        self._settings = _Budget(limits.max_settings)
        self._pings = _Budget(limits.max_pings)
        self._empty = _Budget(limits.max_empty_data)
        self._partial_since: float | None = None  # a header block or frame is incomplete
        self._idle_since = self.loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self.requests = 0
        self.abuse: str | None = None  # why the connection was closed as abusive

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connections.add(self)
        self.start(transport)
        self._schedule()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.debug("h2.protocol_error", client=self.client, error=str(exc))
            self.flush()
            self.close()
            return
        for event in events:
            self._event(event)
            if self.closed:
                return
        self.flush()
        self._partial_since = self._partial_mark()
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > self.limits.max_unread:
            self._calm("the client does not read what it asked for")

    def _partial_mark(self) -> float | None:
        buffer = self.h2.incoming_buffer  # private fields: h2 has no public view of them
        if getattr(buffer, "_data", None) or getattr(buffer, "_headers_buffer", None):
            return self._partial_since if self._partial_since is not None else self.loop.time()
        return None

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stream in list(self.streams.values()):
            self._reset_stream(stream)
        self.streams.clear()
        self.resume_writing()  # writers waiting for the buffer to drain see the close

    # ------------------------------------------------------------ events
    def _event(self, event: h2.events.Event) -> None:
        now = self.loop.time()
        window = self.limits.window
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            flow = event.flow_controlled_length or 0
            if not event.data:  # costs no window, so it needs a budget of its own
                self.ack(event.stream_id, flow)
                if event.stream_ended is None and not self._empty.spend(now, window):
                    self._calm("empty DATA frame flood")
            elif stream is None or stream.reset:
                self.ack(event.stream_id, flow)
            else:
                stream.body.append((event.data, flow))
                stream.event.set()
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.ended = True
                stream.event.set()
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.request_trailers = list(event.headers or ())
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                premature = not stream.sent_end
                self._reset_stream(stream)
                if premature and not self._resets.spend(now, window):
                    self._calm("too many stream resets (rapid reset)")
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id == 0:
                for stream in self.streams.values():
                    stream.event.set()
            else:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.event.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if not self._settings.spend(now, window):
                self._calm("SETTINGS flood")
                return
            for stream in self.streams.values():
                stream.event.set()
        elif isinstance(event, h2.events.PingReceived):
            if not self._pings.spend(now, window):
                self._calm("PING flood")
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.flush()
            self.close()

    def _request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        assert sid is not None
        ended = event.stream_ended is not None
        if self.draining:
            self.h2.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        self.requests += 1
        self._idle_since = self.loop.time()
        headers: list[tuple[bytes, bytes]] = []
        method = path = authority = b""
        cookies: list[bytes] = []
        has_length = False
        for name, value in event.headers or ():
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                continue
            if name == b"cookie":
                cookies.append(value)
                continue
            if name == b"host":
                authority = authority or value
                continue
            if name == b"content-length":
                has_length = True
            headers.append((name, value))
        is_grpc = grpc.is_grpc(headers)
        stream = Stream(self, sid, ended=ended, grpc=is_grpc)
        self.streams[sid] = stream
        if method == b"CONNECT":
            self._answer(stream, 405, "CONNECT is not allowed")
            return
        if not authority:
            self._answer(stream, 400, "a :authority or Host is required")
            return
        if not path.startswith(b"/") and not (path == b"*" and method == b"OPTIONS"):
            self._answer(stream, 400, "the :path must start with /")
            return
        headers.insert(0, (b"host", authority))
        if cookies:
            headers.append((b"cookie", b"; ".join(cookies)))
        if not ended and not has_length:
            headers.append((b"transfer-encoding", b"chunked"))
        try:
            raw_path, decoded, query = parse_target(path)
            method_s = method.decode("ascii")
        except Exception:
            self._answer(stream, 400, "invalid :path or :method")
            return
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": "2",
            "method": method_s,
            "scheme": self.scheme,
            "path": decoded,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "server": self.server,
            "client": self.client,
            "state": {},
            "extensions": {"http.response.trailers": {}},
            "fedgate.peer": self.peer,
        }
        limit = self.limit_concurrency
        if limit is not None and len(self.tasks) >= limit:
            self._answer(stream, 503, "too many requests in flight")
            return
        task = self.loop.create_task(self._run(stream, scope))
        stream.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, stream: Stream, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, stream.receive, stream.send)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("h2.stream_failed", stream=stream.id, client=self.client)
            if not stream.started:
                await answer(stream, 500, "internal error")
            elif not stream.sent_end:
                self.reset_stream(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        if not stream.started:
            await answer(stream, 500, "no response")
        elif not stream.sent_end and not stream.reset:
            self.reset_stream(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
        self._stream_done(stream)

    def _answer(self, stream: Stream, status: int, text: str) -> None:
        self.loop.create_task(answer(stream, status, text))

    # ------------------------------------------------------------ output
    def send_headers(
        self, stream: Stream, headers: list[tuple[bytes, bytes]], *, end: bool
    ) -> None:
        if self.closed or stream.reset:
            return
        try:
            self.h2.send_headers(stream.id, headers, end_stream=end)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
            self._reset_stream(stream)
            return
        self.flush()
        if end:
            stream.sent_end = True
            self._stream_done(stream)

    async def send_data(self, stream: Stream, data: bytes, *, end: bool) -> None:
        view = memoryview(data)
        while True:
            if self.closed or stream.reset:
                return
            if not view:
                if end:
                    try:
                        self.h2.end_stream(stream.id)
                    except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
                        self._reset_stream(stream)  # the client reset it meanwhile
                        return
                    self.flush()
                    stream.sent_end = True
                    self._stream_done(stream)
                return
            window = self.send_window(stream.id)
            if window is None:
                self._reset_stream(stream)
                return
            if window <= 0:  # the client's window is shut: wait, bounded, for it to open
                stream.event.clear()
                if not await self._progress(stream, stream.event.wait()):
                    return
                continue
            chunk, view = view[:window], view[window:]
            last = end and not view
            try:
                self.h2.send_data(stream.id, chunk.tobytes(), end_stream=last)
            except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
                self._reset_stream(stream)
                return
            if view:
                self.flush_now()  # a large body: out now, so the write buffer can push back
            else:
                self.flush()
            if last:
                stream.sent_end = True
                self._stream_done(stream)
                return
            if self.write_paused and not await self._progress(stream, self.drain()):
                return

    async def _progress(self, stream: Stream, wait: Coroutine[Any, Any, object]) -> bool:
        """Wait for the client to take more of this stream's answer (its window to open,
        or the socket's buffer to drain), at most the answer's idle limit (the route's, set
        by the relay) or else ``limits.write_timeout``; past that the
        stream is reset (CANCEL) and False returned: the app's next ``receive`` is
        ``http.disconnect`` and its later writes go nowhere; other streams go on."""
        try:
            async with asyncio.timeout(stream.write_timeout or self.limits.write_timeout):
                await wait
        except TimeoutError:
            log.debug("h2.stream_stalled", stream=stream.id, client=self.client)
            self.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
            return False
        return True

    def reset_stream(self, stream: Stream, code: h2.errors.ErrorCodes) -> None:
        if not self.closed and not stream.reset:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(stream.id, code)
                self.flush()
        self._reset_stream(stream)

    def _reset_stream(self, stream: Stream) -> None:
        stream.reset = True  # receive() -> http.disconnect, send() -> nothing
        stream.event.set()
        self.streams.pop(stream.id, None)
        self._maybe_close()

    def _stream_done(self, stream: Stream) -> None:
        if stream.sent_end and (stream.ended or stream.reset):
            self.streams.pop(stream.id, None)
            self._idle_since = self.loop.time()
            self._maybe_close()
        elif stream.sent_end and not stream.ended:
            # the answer is complete; the rest of the client's body is not wanted
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(stream.id, h2.errors.ErrorCodes.NO_ERROR)
                self.flush()
            self.streams.pop(stream.id, None)
            stream.reset = True
            stream.event.set()
            self._maybe_close()

    def _maybe_close(self) -> None:
        if self.draining and not self.streams and not self.closed:
            self.close()

    # ------------------------------------------------------------ closing
    def _calm(self, reason: str) -> None:
        """An abusive client: GOAWAY ENHANCE_YOUR_CALM, reset every stream, close."""
        if self.closed:
            return
        self.abuse = reason
        log.warning("h2.abuse", client=self.client, reason=reason)
        self.h2.clear_outbound_data_buffer()  # the acks of the flood are not sent
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        self.flush()
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.flush_now()
        self.closed = True
        for stream in list(self.streams.values()):
            self._reset_stream(stream)
        transport = self.transport
        if transport is not None:
            transport.close()  # waits to flush what is buffered: bounded for a non-reader
            if transport.get_write_buffer_size():
                self.loop.call_later(self.limits.write_timeout, transport.abort)

    def shutdown(self) -> None:
        """Drain: GOAWAY (streams already open finish), close once none is left."""
        if self.closed or self.draining:
            return
        self.draining = True
        self.flush_now()
        # the frame is written past h2's state machine, which would refuse to send
        # anything after its own GOAWAY; the open streams still have to finish
        goaway = GoAwayFrame(0, last_stream_id=self.h2.highest_inbound_stream_id)
        if self.transport is not None:
            self.transport.write(goaway.serialize())
        self._maybe_close()

    def _schedule(self) -> None:
        interval = max(0.05, min(self.limits.header_timeout / 4, 1.0))
        self._timer = self.loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self.loop.time()
        partial = self._partial_since
        if partial is not None and now - partial > self.limits.header_timeout:
            self._calm("a frame or header block did not complete in time")
            return
        if not self.streams and now - self._idle_since > self.limits.idle_timeout:
            self.shutdown()
            self.close()
            return
        self._schedule()
