"""Send one try to an upstream: the seam between the try loop and a wire protocol.

The try loop (``gateway/forward.py``) hands a transport the target and a
:class:`TryRequest` (method, target, Host, the headers after hygiene, the body, the
deadlines: one value, whatever the protocol), and gets back an
:class:`UpstreamConnection` whose response head has arrived (``status``, ``headers``;
``read_body()`` / ``take_all()`` for the body), or an
:class:`~gateway.proxy.UpstreamError` whose ``kind`` is a
:class:`~gateway.failures.FailureKind` and whose ``sent`` says whether any request byte
left. After the answer: :meth:`Http1Transport.done` (reusable or not). A client-caused
:class:`~gateway.failures.Reply` (body too slow, too large, client gone) passes through
unchanged: the caller never records it against the upstream.

One transport per upstream protocol (:class:`Transport`): :class:`Http1Transport` is the
pooled HTTP/1.1 client of ``gateway/proxy.py``; ``gateway/h2/transport.py`` the
multiplexed HTTP/2 one (``protocol: h2`` and ``grpc`` services). Both answer with an
:class:`Answer`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.bodies import RequestBody
from gateway.failures import FailureKind
from gateway.proxy import UpstreamConnection, UpstreamError
from gateway.types import Receive
from gateway.upstream_pool import UpstreamPool


class TargetLike(Protocol):
    @property
    def cluster(self) -> str: ...
    @property
    def remote(self) -> bool: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def ssl(self) -> ssl.SSLContext | None: ...
    @property
    def server_hostname(self) -> str | None: ...


class Answer(Protocol):
    """A try's answer whose head has arrived (what the relay reads)."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> list[tuple[bytes, bytes]]: ...
    @property
    def complete(self) -> bool: ...
    def take_all(self) -> bytes | None: ...
    async def read_body(self) -> bytes: ...
    def set_idle_timeout(self, seconds: float) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class TryRequest:
    """What one try sends, as the try loop hands it to any transport."""

    method: str
    path: bytes  # the request target
    host: bytes
    headers: Sequence[tuple[bytes, bytes]]  # after hygiene, without framing
    body: RequestBody
    receive: Receive  # the client's ASGI receive (the body, the client leaving)
    connect_timeout: float
    per_try: float  # seconds for the answer's head once the request is out
    deadline: float  # the loop time nothing may go past

    def time_left(self) -> tuple[asyncio.AbstractEventLoop, float]:
        """The running loop and the seconds left before the deadline; a try with none
        left fails with TIMEOUT before anything is sent."""
        loop = asyncio.get_running_loop()
        remaining = self.deadline - loop.time()
        if remaining <= 0:
            raise UpstreamError(FailureKind.TIMEOUT, "request timeout", sent=False)
        return loop, remaining


class Transport(Protocol):
    """Sends one try (see the module docstring)."""

    @property
    def watches_client(self) -> bool:
        """Does the transport notice the client leaving by itself (no relay watcher)?"""
        ...

    async def send(self, target: TargetLike, req: TryRequest) -> Answer: ...

    def done(self, conn: Any, *, reuse: bool = True) -> None: ...


ServerCheck = Callable[[TargetLike, object], str | None]
"""Why the server of a new connection is not who the target needs (``None``: it is);
given the target and the connection's ``ssl_object`` (see ``DataPlane.upstream_error``)."""


class Http1Transport:
    """Tries over the pooled keep-alive HTTP/1.1 client."""

    __slots__ = ("check_server", "pool")

    watches_client = False

    def __init__(self, pool: UpstreamPool, *, check_server: ServerCheck | None = None) -> None:
        self.pool = pool
        self.check_server = check_server  # run once per new connection, before any byte

    async def send(self, target: TargetLike, req: TryRequest) -> UpstreamConnection:
        """Send the request and wait for the response head (``per_try`` seconds from the
        moment the request is sent; never past the deadline)."""
        loop, remaining = req.time_left()
        pool = self.pool
        conn, reused = await pool.acquire(
            target.host,
            target.port,
            ssl_context=target.ssl,
            server_hostname=target.server_hostname,
            connect_timeout=min(req.connect_timeout, remaining),
        )
        if not reused and self.check_server is not None:
            tr = conn.transport
            why = self.check_server(target, tr.get_extra_info("ssl_object") if tr else None)
            if why is not None:
                pool.discard(conn)
                raise UpstreamError(FailureKind.CONNECT, why, sent=False)
        conn.no_body = req.method == "HEAD"
        body = req.body
        head = request_head(req.method, req.path, req.host, req.headers, body.framing)
        deadline = req.deadline
        try:
            if body.buffered:
                conn.write(head + body.prefix if body.prefix else head)
            else:
                await _stream_body(conn, head, body, req.receive, deadline)
            conn.set_timeout(max(0.0, min(req.per_try, deadline - loop.time())))
            await conn.read_head()
        except BaseException:
            pool.discard(conn)
            raise
        return conn

    def done(self, conn: UpstreamConnection, *, reuse: bool = True) -> None:
        """The try's answer is over: keep the connection for another request if it can."""
        if reuse:
            if not conn.complete:
                self.pool.discard(conn)
                return
            conn.take_all()
            self.pool.release(conn)
        else:
            self.pool.discard(conn)


async def _stream_body(
    conn: UpstreamConnection, head: bytes, body: RequestBody, receive: Receive, deadline: float
) -> None:
    """Send the head, what was read ahead, then the rest of the body as it arrives; an
    upstream that stops reading fails the try at the request's deadline."""
    chunked = body.length is None
    prefix = body.prefix
    if prefix:
        conn.write(head + (b"%x\r\n%b\r\n" % (len(prefix), prefix) if chunked else prefix))
    else:
        conn.write(head)
    body.prefix = b""
    loop = conn.loop
    while True:
        if conn.write_paused:
            try:
                async with asyncio.timeout_at(deadline):
                    await conn.drain()
            except TimeoutError:
                raise UpstreamError(
                    FailureKind.TIMEOUT, "upstream did not take the request body in time",
                    sent=True,
                ) from None  # fmt: skip
        if conn.error is not None:
            raise conn.error
        if conn.status:  # the upstream answered early: stop sending
            conn.keep_alive = False
            return
        if loop.time() >= deadline:
            raise UpstreamError(FailureKind.TIMEOUT, "request timeout", sent=True)
        msg = await body.next(receive)
        chunk = msg.get("body", b"")
        if chunk:
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        if not msg.get("more_body", False):
            if chunked:
                conn.write(b"0\r\n\r\n")
            body.done = True
            return


def request_head(
    method: str, target: bytes, host: bytes, headers: Sequence[tuple[bytes, bytes]], framing: bytes
) -> bytes:
    """Serialize a request head; ``framing`` is b"content-length: N\\r\\n", chunked or b""."""
    parts = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for name, value in headers:
        if name == b"host":
            continue
        parts += (name, b": ", value, b"\r\n")
    parts += (framing, b"\r\n")
    return b"".join(parts)
