"""One HTTP/2 request stream as ASGI: ``receive`` hands the request body over (and
acknowledges it to the client's flow control as it goes), ``send`` turns the app's
messages into HEADERS/DATA frames through :class:`~gateway.h2.server.H2ServerProtocol`.

The response head is held until the first body bytes, so an answer without a body is
one HEADERS frame; trailers (ASGI ``http.response.trailers``) end the stream, and
trailers that come before any body join the head (gRPC's trailers-only form). On a gRPC
request, a non-200 answer (a gateway error) becomes a trailers-only answer with the
matching ``grpc-status``; its text goes into ``grpc-message``.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

from gateway.h2 import grpc
from gateway.types import Message

if TYPE_CHECKING:
    from gateway.h2.server import H2ServerProtocol

# connection-specific fields never sent in HTTP/2 (RFC 9113 section 8.2.2)
# an ``http.response.start`` key: how long each write of this answer may wait for the
# client to take more (the route's idle limit; the listener's ``write_timeout`` without it)
IDLE_KEY = "fedgate.idle"

_RESPONSE_DROP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class Stream:
    """One request: its ASGI receive/send and the state they share with the connection."""

    __slots__ = (
        "body",
        "body_done",
        "conn",
        "ended",
        "error_body",
        "error_status",
        "event",
        "grpc",
        "head",
        "id",
        "reported",
        "request_trailers",
        "reset",
        "sent_end",
        "started",
        "task",
        "trailers",
        "trailers_wanted",
        "write_timeout",
    )

    def __init__(self, conn: H2ServerProtocol, stream_id: int, *, ended: bool, grpc: bool):
        self.conn = conn
        self.id = stream_id
        self.body: collections.deque[tuple[bytes, int]] = collections.deque()
        self.event = asyncio.Event()  # data, end, reset or window: someone should look
        self.ended = ended  # the client finished its body
        self.reset = False
        self.reported = False  # the end of the body went to the app
        self.grpc = grpc
        self.started = False
        self.body_done = False
        self.sent_end = False
        self.head: list[tuple[bytes, bytes]] | None = None  # held until the first body
        self.trailers_wanted = False
        self.trailers: list[tuple[bytes, bytes]] = []
        self.request_trailers: list[tuple[bytes, bytes]] | None = None
        self.error_status = 0  # a non-200 answer to a gRPC request, being converted
        self.error_body = b""
        self.task: asyncio.Task[None] | None = None
        self.write_timeout: float | None = None  # the answer's own limit (IDLE_KEY)

    # ------------------------------------------------------------ ASGI receive
    async def receive(self) -> Message:
        while True:
            if self.reset:
                return {"type": "http.disconnect"}
            if self.body:
                data, flow = self.body.popleft()
                self.conn.ack(self.id, flow)
                more = bool(self.body) or not self.ended
                return self._message(data, more)
            if self.ended and not self.reported:
                return self._message(b"", False)
            self.event.clear()  # the whole body was delivered: wait for a disconnect
            await self.event.wait()

    def _message(self, data: bytes, more: bool) -> Message:
        msg: dict[str, Any] = {"type": "http.request", "body": data, "more_body": more}
        if not more:
            self.reported = True
            if self.request_trailers is not None:
                msg["fedgate.trailers"] = self.request_trailers
        return msg

    # ------------------------------------------------------------ ASGI send
    async def send(self, message: Message) -> None:
        if self.reset or self.sent_end:
            return
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.write_timeout = message.get(IDLE_KEY)
            status = int(message["status"])
            if self.grpc and status != 200:
                self.error_status = status  # becomes a trailers-only gRPC answer
                return
            head = [(b":status", str(status).encode("ascii"))]
            for name, value in message.get("headers", ()):
                name = name.lower()
                if name not in _RESPONSE_DROP:
                    head.append((name, value))
            self.head = head
            self.trailers_wanted = bool(message.get("trailers", False))
        elif kind == "http.response.body":
            if not self.started or self.body_done:
                raise RuntimeError("http.response.body out of order")
            body = message.get("body", b"")
            more = bool(message.get("more_body", False))
            if self.error_status:
                if len(self.error_body) < 1024:
                    self.error_body += body[:1024]
                if not more:
                    self.body_done = True
                    self._send_grpc_error()
                return
            end = not more and not self.trailers_wanted
            if self.head is not None:
                head, self.head = self.head, None
                self.conn.send_headers(self, head, end=end and not body)
                if end and not body:
                    self.body_done = True
                    return
            if body or end:
                await self.conn.send_data(self, body, end=end)
            if not more:
                self.body_done = True
        elif kind == "http.response.trailers":
            self.trailers += [(n.lower(), v) for n, v in message.get("headers", ())]
            if message.get("more_trailers", False):
                return
            self.body_done = True
            if self.head is not None:  # no body at all: trailers-only (one HEADERS frame)
                head, self.head = self.head, None
                self.conn.send_headers(self, head + self.trailers, end=True)
            elif self.trailers:
                self.conn.send_headers(self, self.trailers, end=True)
            else:
                await self.conn.send_data(self, b"", end=True)

    def _send_grpc_error(self) -> None:
        text = self.error_body.decode("utf-8", "replace").strip()
        code = grpc.status_from_http(self.error_status)
        self.conn.send_headers(
            self, grpc.error_headers(code, text or f"gateway answered {self.error_status}"),
            end=True,
        )  # fmt: skip


async def answer(stream: Stream, status: int, text: str) -> None:
    body = text.encode() + b"\n"
    await stream.send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await stream.send({"type": "http.response.body", "body": body, "more_body": False})
