"""The client's request body: read ahead and buffered (replayable), or streamed through.

Two deadlines hold while it arrives: the next piece within ``idle`` seconds
(``limits.headerTimeout``) and the whole body before the request's deadline
(``timeouts.request`` from the request's start), so a body trickled one byte at a time
cannot hold the request for longer than that. Either gives 408; too many bytes 413; a
client that goes away 499. All of them are :class:`~gateway.failures.Reply` with
``client_fault``: they never count against an upstream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.failures import Reply
from gateway.types import Message, Receive

BUFFER_LIMIT = 64 * 1024  # request bodies up to this size are buffered (and retryable)


class RequestBody:
    __slots__ = (
        "buffered",
        "chunked",
        "clock",
        "deadline",
        "done",
        "idle",
        "keeping",
        "kept",
        "length",
        "max",
        "prefix",
        "received",
        "trailers",
    )

    def __init__(
        self,
        length: int | None,
        chunked: bool,
        limit: int | None,
        idle: float,
        deadline: float = float("inf"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle = idle  # the client must send the next piece within this
        self.deadline = deadline  # and the whole body before this (clock time)
        self.clock = clock
        self.length = length  # Content-Length, or None
        self.chunked = chunked
        self.max = limit
        self.prefix = b""  # what was read ahead (the whole body when buffered)
        self.done = length is None and not chunked  # no body at all
        self.buffered = self.done
        self.received = 0
        # a streamed body kept for replay as it goes out (the HTTP/2 transport:
        # gateway/h2/transport.py): up to BUFFER_LIMIT bytes, past that not replayable
        self.keeping = False
        self.kept: list[bytes] | None = []
        self.trailers: list[tuple[bytes, bytes]] | None = None  # request trailers (HTTP/2)

    @property
    def replayable(self) -> bool:
        """May a try that sent some of this body be followed by another?"""
        return self.buffered or (self.keeping and self.kept is not None)

    def keep(self, chunk: bytes) -> None:
        """A streamed piece went out: keep it for a replay while under BUFFER_LIMIT."""
        kept = self.kept
        if kept is not None:
            if self.received > BUFFER_LIMIT:
                self.kept = None
            else:
                kept.append(chunk)

    def count(self, n: int) -> None:
        """``n`` more body bytes arrived (413 past the limit)."""
        self.received += n
        if self.max is not None and self.received > self.max:
            raise Reply(413, "request body too large")

    @property
    def framing(self) -> bytes:
        """The framing header the upstream request carries."""
        if self.buffered:
            n = len(self.prefix)
            if n or self.length is not None or self.chunked:
                return b"content-length: %d\r\n" % n
            return b""
        if self.length is not None:
            return b"content-length: %d\r\n" % self.length
        return b"transfer-encoding: chunked\r\n"

    async def read_ahead(self, receive: Receive) -> None:
        """Read up to BUFFER_LIMIT bytes; ``buffered`` when that was the whole body."""
        if self.done:
            return
        if self.length is not None and self.length > BUFFER_LIMIT:
            return  # stream it from the first byte
        parts = []
        size = 0
        while True:
            msg = await self.next(receive)
            chunk = msg.get("body", b"")
            if chunk:
                parts.append(chunk)
                size += len(chunk)
            if not msg.get("more_body", False):
                self.done = self.buffered = True
                break
            if size > BUFFER_LIMIT:
                break
        self.prefix = b"".join(parts)

    async def next(self, receive: Receive) -> Message:
        """The next ``http.request`` message (its bytes counted against the limit)."""
        left = self.deadline - self.clock()
        if left <= 0:
            raise Reply(408, "request body not received in time")
        try:
            async with asyncio.timeout(min(self.idle, left)):
                msg = await receive()
        except TimeoutError:
            raise Reply(408, "request body not received in time") from None
        if msg["type"] != "http.request":
            raise Reply(499, "client disconnected")
        n = len(msg.get("body", b""))
        if n:
            self.count(n)
        return msg
