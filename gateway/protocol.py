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
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

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


def _peer_identity(transport: asyncio.BaseTransport) -> str | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    from gateway.tls import peer_identity

    return peer_identity(ssl_object)


class GatewayProtocol(HttpToolsProtocol):
    """Per-listener settings are class attributes (see :func:`protocol_class`)."""

    max_header_bytes: int = 65536
    header_timeout: float = 10.0
    drain_grace: float = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer: str | None = None
        self._in_head = False  # a request head has begun and is not complete
        self._raw_head = 0  # bytes received while in a request head (a memory bound)
        self._head_size = 0  # exact size of the head as parsed
        self._hosts = 0
        self._te: bytes | None = None
        self._has_length = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._rejected = False
        self.draining = False
        self._drain_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.scheme == "https":
            self.peer = _peer_identity(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        self._unset_keepalive_if_required()
        if self._drain_timer is not None:  # the client is talking: let it finish
            self._drain_timer.cancel()
            self._drain_timer = None
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
        if self._in_head:
            self._raw_head += len(data)
            if self._raw_head > 2 * self.max_header_bytes + 4096:
                self.reject(431, "Request header block too large")

    def _on_upgrade(self) -> None:
        if self._should_upgrade():
            self._cancel_head_timer()
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

    # ------------------------------------------------------------ deadlines
    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served; its successor's head waits in the pipeline
        if self._in_head:
            self.reject(408, "Request head not received in time")
        elif self.cycle is None:
            self.transport.close()  # connected and never said anything

    # ------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_size = 0
        self._hosts = 0
        self._te = None
        self._has_length = False
        self.scope["fedgate.peer"] = self.peer  # type: ignore[typeddict-unknown-key]
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer of a chunked body: never merged into the request's headers
        name = name.lower()
        self._head_size += len(name) + len(value) + 4
        if name == b"host":
            self._hosts += 1
        elif name == b"content-length":
            self._has_length = True
        elif name == b"transfer-encoding":
            self._te = value if self._te is None else self._te + b"," + value
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._raw_head = 0
        self._cancel_head_timer()
        if self._head_size > self.max_header_bytes:
            raise Reject(431, "Request header block too large")
        version = self.parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise Reject(505, f"HTTP/{version} is not supported")
        url = self.url
        if not url.startswith(b"/"):
            if self.parser.get_method() == b"CONNECT":
                raise Reject(405, "CONNECT is not allowed")
            if url != b"*":
                raise Reject(400, "Absolute-form request targets are not accepted")
        elif self.parser.get_method() == b"CONNECT":
            raise Reject(405, "CONNECT is not allowed")
        te = self._te
        if te is not None:
            if version == "1.0":
                raise Reject(400, "Transfer-Encoding in an HTTP/1.0 request")
            if te.strip().lower() != b"chunked":
                raise Reject(501, "Transfer-Encoding other than chunked")
        if self._hosts != 1:
            raise Reject(400, "Exactly one Host header is required")
        super().on_headers_complete()
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False

    # ------------------------------------------------------------ answers of our own
    def reject(self, status: int, reason: str) -> None:
        """Answer ``status`` with Connection: close (or just close mid-response)."""
        self._rejected = True
        self._cancel_head_timer()
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

    def send_400_response(self, msg: str) -> None:
        self.reject(400, msg)

    # ------------------------------------------------------------ drain
    def shutdown(self) -> None:
        """Start draining: finish the request in flight with Connection: close; an idle
        connection gets a short grace for a request already on its way, then closes."""
        self.draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            return
        if self._in_head:
            return  # a request head is arriving: it will be answered with Connection: close
        if self._drain_timer is None and not self.transport.is_closing():
            self._drain_timer = self.loop.call_later(self.drain_grace, self._drain_close)

    def _drain_close(self) -> None:
        self._drain_timer = None
        if (self.cycle is None or self.cycle.response_complete) and not self._in_head:
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.draining and not self.transport.is_closing():
            self.transport.close()


def protocol_class(
    name: str, *, max_header_bytes: int, header_timeout: float, drain_grace: float = 1.0
) -> type[GatewayProtocol]:
    """A protocol class with these limits (uvicorn instantiates the class it is given)."""
    return type(
        f"GatewayProtocol_{name}",
        (GatewayProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "header_timeout": header_timeout,
            "drain_grace": drain_grace,
        },
    )
