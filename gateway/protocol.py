"""The gateway's HTTP/1.1 server protocol: uvicorn's httptools protocol, hardened.

llhttp (under httptools) already rejects most ambiguous framing; what it lets through,
and what uvicorn does not check, is closed here (see docs/dataplane.md for the probe):

* a deadline for the request head (``limits.headerTimeout``, from the connection's
  start or the first byte of a keep-alive request): slow clients get 408 and are closed;
* a size limit on the request head (``limits.maxHeaderBytes``): 431;
* exactly one ``Host`` header: 400 otherwise;
* ``Transfer-Encoding`` other than exactly ``chunked``: 501; any ``Transfer-Encoding`` in
  an HTTP/1.0 request: 400 (RFC 9112 section 6.1);
* HTTP versions other than 1.0 and 1.1 (llhttp accepts ``HTTP/2.0`` and HTTP/0.9): 505;
* absolute-form and authority-form targets (an open-proxy attempt): 400; CONNECT: 405;
* an ``Upgrade`` other than WebSocket: served as a plain request, then the connection
  closes (llhttp stops parsing at an upgrade); with a request body: 400.

Every rejection answers with ``Connection: close`` and closes the connection. The
verified mutual-TLS peer identity goes into the scope as ``scope["fedgate.peer"]``.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, cast

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.cycles import _ASGI, FastCycle, _Cycle
from gateway.peer import transport_peer
from gateway.request_parts import (
    KNOWN_MAX,
    METHODS,
    TARGETS,
    UNREPEATED_MAX,
    KnownRequest,
    own_scope,
    parse_target,
)

REASONS = {
    400: b"Bad Request",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    505: b"HTTP Version Not Supported",
}


class Reject(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class GatewayProtocol(HttpToolsProtocol):
    """Per-listener settings are class attributes (see :func:`protocol_class`).

    Deadlines (request head, never-speaking connection, idle keep-alive, drain grace)
    are enforced by one periodic sweep per listener over its connections instead of a
    timer per request: a request costs one ``loop.time()`` call, not two timer handles.
    """

    max_header_bytes: int = 65536
    header_timeout: float = 10.0
    keep_alive_timeout: float = 60.0
    drain_grace: float = 1.0
    max_connections: int | None = None  # per listener; past it idle connections are shed
    _sweeper: ClassVar[asyncio.TimerHandle | None] = None
    # the listener's connections without a request in progress, oldest first
    _idle: ClassVar[dict[GatewayProtocol, None]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer: str | None = None
        self._in_head = False  # a request head has begun and is not complete
        self._raw_head = 0  # bytes received while in a request head (a memory bound)
        self._te: bytes | None = None
        self._has_length = False
        self._since = 0.0  # start of the current head, or of the idle period
        self._spoke = False
        self._rejected = False
        self.draining = False
        self._drain_at: float | None = None
        self._fast: FastCycle | None = None  # the callback exchange in flight
        self._try_fast = getattr(self.app, "try_fast", None)  # the app's callback entry
        # the last request read whole in one read, for the next read of the same bytes
        self._known: KnownRequest | None = None
        # the request being dispatched, when it may be replayed (its ``memo`` is the app's)
        self.request: KnownRequest | None = None
        self._candidate: KnownRequest | None = None  # the request being parsed, if it may be
        self._between = True  # the parser is between messages
        self._begun = 0  # messages begun in the current read
        self._unrepeated = 0  # requests kept since the last replay
        self._unflushed = 0.0  # the sweep that first saw it closing with bytes unsent
        self._scope_base: dict[str, Any] = {}  # what every request's scope starts from

    # ------------------------------------------------------------ connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.scheme == "https":
            self.peer = transport_peer(transport)
        # uvicorn's scope, with one shared ASGI version dict and no app state (lifespan is
        # off); the connection's parts once, each request's a copy
        self._scope_base = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": "",
            "headers": None,
            "state": None,
            "fedgate.peer": self.peer,
        }
        self._since = self.loop.time()
        cls = type(self)
        _LIVE.setdefault(cls, set()).add(self)
        cap = cls.max_connections
        if cap is not None and len(self.connections) > cap and not self._shed_idle():
            self._refuse_over_cap()
            return
        cls._idle[self] = None
        if cls._sweeper is None:
            cls._sweeper = self.loop.call_later(self._sweep_interval(), cls._sweep, self.loop)

    def _shed_idle(self) -> bool:
        """Over the connection cap: close the listener's longest-idle connection (one
        with no request in progress) to make room; False when every one is busy."""
        idle = type(self)._idle
        while idle:
            oldest = next(iter(idle))
            del idle[oldest]
            transport = oldest.transport
            if oldest is not self and not transport.is_closing():
                transport.close()
                return True
        return False

    def _refuse_over_cap(self) -> None:
        """Every connection has a request in progress: refuse this new one (503, closed)."""
        self._rejected = True
        self.transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: 20\r\nconnection: close\r\n\r\ntoo many connections\n"
        )
        self.transport.close()

    @classmethod
    def _sweep_interval(cls) -> float:
        return max(0.05, min(cls.header_timeout / 5, cls.drain_grace / 2, 1.0))

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        cls._sweeper = None
        now = loop.time()
        alive = False
        for conn in list(_LIVE.get(cls, ())):
            alive = True
            conn._check(now)
        if alive:
            cls._sweeper = loop.call_later(cls._sweep_interval(), cls._sweep, loop)

    def _check(self, now: float) -> None:
        transport = self.transport
        if transport.is_closing():  # close() waits for a flush a non-reader never allows:
            if transport.get_write_buffer_size():  # abort after the head limit
                since = self._unflushed = self._unflushed or now
                if now - since > self.header_timeout:
                    transport.abort()
            return
        cycle = self.cycle
        busy = cycle is not None and not cycle.response_complete
        if self._in_head:
            if not busy and now - self._since > self.header_timeout:
                self.reject(408, "Request head not received in time")
        elif busy:
            return
        elif cycle is None and not self._spoke:
            if now - self._since > self.header_timeout:
                self.transport.close()  # connected and never said anything
        elif now - self._since > self.keep_alive_timeout:
            self.transport.close()  # idle keep-alive connection
        elif self._drain_at is not None and now >= self._drain_at:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        cls = type(self)
        live = _LIVE.get(cls)
        if live is not None:
            live.discard(self)
        cls._idle.pop(self, None)
        fast = self._fast
        if fast is not None:
            fast.disconnected = True
            self._fast = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        self._spoke = True
        self._drain_at = None  # the client is talking: let it finish
        known = self._known
        if known is not None and data == known.data and self._between and self._replay(known):
            return
        between = self._between
        self._begun = 0
        self._candidate = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._on_upgrade()
            return
        except httptools.HttpParserError as exc:
            ctx = exc.__context__
            if isinstance(ctx, Reject):
                self.reject(ctx.status, ctx.reason)
            else:
                self.reject(400, f"Invalid HTTP request: {exc}")
            return
        candidate = self._candidate
        if candidate is not None:
            self._candidate = None
            # one whole request, alone in this read, from a parser between messages: the
            # same bytes next time are the same request (see ``_replay``)
            if between and self._begun == 1 and self._between and len(data) <= KNOWN_MAX:
                candidate.data = data
                self._known = candidate
        if self._in_head:
            self._raw_head += len(data)
            if self._raw_head > 2 * self.max_header_bytes + 4096:
                self.reject(431, "Request header block too large")

    def _replay(self, known: KnownRequest) -> bool:
        """The read is byte for byte the last request that came whole in one read (a
        keep-alive client repeating itself): take it as parsed then, without llhttp and
        its callbacks (the same bytes from a parser between messages parse the same, and
        leave the parser between messages again). Only while no request is in flight (a
        pipelined one goes through the parser and the queue); False: parse it."""
        existing = self.cycle
        if (existing is not None and not existing.response_complete) or self._fast is not None:
            return False
        try:
            # on_message_begin .. on_headers_complete
            self._unrepeated = 0
            self.expect_100_continue = False
            self._has_length = False
            self._te = None
            type(self)._idle.pop(self, None)  # a request is in progress
            self._since = self.loop.time()
            self.request = known
            # the scope is shared by the replays: an ASGI app gets a copy of its own
            self.scope = scope = known.scope
            self._dispatch(scope, known.keep_alive, known.fast)
            # on_message_complete
            cycle = self.cycle
            if not cycle.response_complete:
                cycle.more_body = False
                cycle.message_event.set()
        except Exception as exc:  # as llhttp reports an exception raised in a callback
            self.reject(400, f"Invalid HTTP request: {exc}")
        return True

    def _on_upgrade(self) -> None:
        if self._should_upgrade():
            _LIVE.get(type(self), set()).discard(self)
            self.handle_websocket_upgrade()
            return
        # an upgrade we do not tunnel (h2c, ...): llhttp stops here; serve it as a plain
        # request without a body, then close the connection
        if self._has_length or self._te is not None:
            self.reject(400, "Upgrade with a request body is not supported")
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
            cycle.more_body = False
            cycle.message_event.set()

    # ------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        headers: list[tuple[bytes, bytes]] = []
        self.headers = headers
        scope: Any = self._scope_base.copy()
        scope["headers"] = headers
        scope["state"] = {}
        self.scope = scope
        type(self)._idle.pop(self, None)  # a request is in progress
        self._between = False
        self._begun += 1
        self._in_head = True
        self._since = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # a header is appended, read once when the head is complete; a trailer of a
        # chunked body is never merged into the request's headers
        if self._in_head:
            self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._raw_head = 0
        # what the headers say, in one pass (the head's exact size as parsed)
        size = len(self.url)
        hosts = 0
        te: bytes | None = None
        has_length = expect = False
        for name, value in self.headers:
            size += len(name) + len(value) + 4
            if name == b"host":
                hosts += 1
            elif name == b"content-length":
                has_length = True
            elif name == b"transfer-encoding":
                te = value if te is None else te + b"," + value
            elif name == b"expect" and value.lower() == b"100-continue":
                expect = True
        self._te = te
        self._has_length = has_length
        self.expect_100_continue = expect
        if size > self.max_header_bytes:
            raise Reject(431, "Request header block too large")
        version = self.parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise Reject(505, f"HTTP/{version} is not supported")
        url = self.url
        method = self.parser.get_method()
        if not url.startswith(b"/"):
            if method == b"CONNECT":
                raise Reject(405, "CONNECT is not allowed")
            if url != b"*":
                raise Reject(400, "Absolute-form request targets are not accepted")
        elif method == b"CONNECT":
            raise Reject(405, "CONNECT is not allowed")
        if te is not None:
            if version == "1.0":
                raise Reject(400, "Transfer-Encoding in an HTTP/1.0 request")
            if te.strip().lower() != b"chunked":
                raise Reject(501, "Transfer-Encoding other than chunked")
        if hosts != 1:
            raise Reject(400, "Exactly one Host header is required")
        self._start_cycle(version, method)

    def _start_cycle(self, http_version: str, method: bytes) -> None:
        """uvicorn's on_headers_complete, with our cycle class."""
        scope = self.scope
        scope["method"] = METHODS.get(method) or method.decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if self.parser.should_upgrade() and self._should_upgrade():
            return
        url = self.url
        target = TARGETS.get(url)
        if target is None:
            target = parse_target(url)
        scope["raw_path"], scope["path"], scope["query_string"] = target
        keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
        bodiless = not self._has_length and self._te is None and not self.expect_100_continue
        fast = bodiless and method == b"GET"  # may be served by callbacks
        self.request = None
        if keep_alive and bodiless and (fast or method == b"HEAD"):
            # a request without a body that leaves the connection open: may be replayed;
            # from a client whose requests do not repeat, only every 64th is kept
            self._unrepeated = unrepeated = self._unrepeated + 1
            if (
                unrepeated <= UNREPEATED_MAX or not unrepeated & 63
            ) and not self.parser.should_upgrade():
                known = scope.copy()
                known["headers"] = tuple(self.headers)
                known["state"] = {}
                self._candidate = self.request = KnownRequest(known, keep_alive, fast)
        self._dispatch(scope, keep_alive, fast)

    def _dispatch(self, scope: Any, keep_alive: bool, fast: bool) -> None:
        """A request head is complete: serve it by callbacks (``fast``: a GET without a
        body), start its ASGI task, or queue it behind the request in flight."""
        app = self.app
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app = service_unavailable
        keep_alive = keep_alive and not self.draining
        existing = self.cycle
        idle = (existing is None or existing.response_complete) and self._fast is None
        if fast and idle and app is self.app:
            try_fast = self._try_fast
            if try_fast is not None:
                callbacks = FastCycle(keep_alive, scope)
                self.cycle = callbacks  # type: ignore[assignment]
                self._fast = callbacks
                if try_fast(self, scope, callbacks):
                    return
                self._fast = None
        request = self.request
        if request is not None and scope is request.scope:  # a replay's shared scope
            self.scope = scope = own_scope(scope)
        # the newest request's cycle receives its body (uvicorn's model); one queued
        # behind a request in flight starts when that one's answer is complete
        self.cycle = cycle = self._new_cycle(keep_alive, scope)
        if idle:
            self._start_asgi_task(cycle, app)
        else:
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))

    def _new_cycle(self, keep_alive: bool, scope: Any) -> _Cycle:
        return _Cycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=keep_alive,
            on_response=self.on_response_complete,
        )

    # ------------------------------------------------------------ callback exchanges
    def fast_respond(self, data: bytes, fast: FastCycle, *, close: bool = False) -> None:
        """Write a whole answer of a callback exchange."""
        if fast is not self._fast or fast.disconnected or self.transport.is_closing():
            return
        self._fast = None
        fast.response_started = fast.response_complete = True
        self.transport.write(data)
        if close or not fast.keep_alive:
            self.transport.close()
            return
        self.on_response_complete()

    def fast_fallback(self, fast: FastCycle, app: Any = None) -> bool:
        """Hand a callback exchange over to an ASGI app in a task (by default the
        listener's app, as if the request had gone there from the start). False if the
        client is gone."""
        if fast is not self._fast or fast.disconnected or self.transport.is_closing():
            return False
        self._fast = None
        cycle = self._new_cycle(fast.keep_alive, own_scope(fast.scope))
        if self.cycle is cast(object, fast):
            self.cycle = cycle  # nothing pipelined behind it
        cycle.more_body = fast.more_body
        if not fast.more_body:
            cycle.message_event.set()
        self._start_asgi_task(cycle, app or self.app)
        return True

    # ------------------------------------------------------------ answers of our own
    def reject(self, status: int, reason: str) -> None:
        """Answer ``status`` with Connection: close (or just close mid-response)."""
        self._rejected = True
        self._in_head = False
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # the request in flight must never look complete: its app sees a disconnect
            # (an upstream gets a reset, not a truncated body)
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()  # cannot answer in the middle of a response
                return
        body = reason.encode("ascii", "replace") + b"\n"
        line = STATUS_LINE.get(status) or b"HTTP/1.1 %d %s\r\n" % (
            status,
            REASONS.get(status, b""),
        )
        self.transport.write(
            b"".join(
                [
                    line,
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()

    def on_message_complete(self) -> None:
        self._between = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self.reject(400, msg)

    def on_response_complete(self) -> None:
        """uvicorn's, without a keep-alive timer per request (the sweep handles idling)."""
        self.server_state.total_requests += 1
        transport = self.transport
        if transport.is_closing():
            return
        if self.draining:
            transport.close()
            return
        flow = self.flow
        if flow.read_paused:
            flow.resume_reading()
        self._since = self.loop.time()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif not self._in_head:
            type(self)._idle[self] = None  # between requests: may be shed first

    # ------------------------------------------------------------ drain
    def shutdown(self) -> None:
        """Start draining: finish the request in flight with Connection: close; an idle
        connection gets a short grace for a request already on its way, then closes."""
        self.draining = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
            return
        if self._in_head:
            return  # a request head is arriving: it will be answered with Connection: close
        if not self.transport.is_closing():
            self._drain_at = self.loop.time() + self.drain_grace
            cls = type(self)
            if cls._sweeper is None:
                cls._sweeper = self.loop.call_later(cls._sweep_interval(), cls._sweep, self.loop)


# the connections each listener's sweep looks at (per protocol class)
_LIVE: dict[type[GatewayProtocol], set[GatewayProtocol]] = {}


def protocol_class(
    name: str,
    *,
    max_header_bytes: int,
    header_timeout: float,
    keep_alive_timeout: float = 60.0,
    drain_grace: float = 1.0,
    max_connections: int | None = None,
) -> type[GatewayProtocol]:
    """A protocol class with these limits (uvicorn instantiates the class it is given)."""
    return type(
        f"GatewayProtocol_{name}",
        (GatewayProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "header_timeout": header_timeout,
            "keep_alive_timeout": keep_alive_timeout,
            "drain_grace": drain_grace,
            "max_connections": max_connections,
            "_sweeper": None,
            "_idle": {},
        },
    )
