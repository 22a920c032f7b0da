"""The authoritative DNS listener: UDP and TCP on one port, on the gateway's event loop.

UDP datagrams are answered synchronously in ``datagram_received`` (no task per query);
TCP connections carry length-prefixed messages (RFC 7766: several per connection, an
idle timeout, a cap on open connections). Each query reads ``holder.view`` once.

*Response-rate limiting* (UDP only: TCP proves the source address): a token bucket per
client network (/24 for IPv4, /56 for IPv6), the data plane's own
:class:`~gateway.ratelimit.RateLimiter`. Over the limit a response is dropped, except
every ``slip``-th, which goes out empty with TC set, so a real client whose network is
being spoofed still gets an answer over TCP while a reflection attack gains nothing
(the truncated reply is no bigger than the query).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import dns.flags
import dns.message

from federation.logging import get_logger
from federation.model import RateLimit, Service
from gateway.dns.wire import Responder
from gateway.ratelimit import RateLimiter
from gateway.types import ViewHolder

log = get_logger(__name__)

TCP_IDLE = 10.0  # seconds a TCP connection may wait for its next query
MAX_TCP_CONNECTIONS = 256
MAX_TCP_QUERIES = 1000  # per connection, then it is closed
_BIND_TRIES = 8


def client_network(address: str) -> str:
    """The response-rate-limiting key: the client's /24 (IPv4) or /56 (IPv6)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    prefix = 24 if ip.version == 4 else 56
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def truncated_reply(wire: bytes) -> bytes | None:
    """An empty answer with TC set (ask again over TCP), or None if unparsable."""
    try:
        query = dns.message.from_wire(wire, question_only=True)
    except Exception:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.TC
    return response.to_wire()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop: no subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = self.server.handle_udp(data, addr[0])
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable etc.: ignored
        log.debug("dns.udp_error", error=str(exc))


class DnsServer:
    """One gateway's DNS listener."""

    def __init__(
        self,
        holder: ViewHolder,
        responder: Responder,
        *,
        responses_per_second: float = 100.0,
        burst: int = 200,
        slip: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.holder = holder
        self.responder = responder
        self.stats = responder.stats
        self._limiter: RateLimiter | None = None
        self._rrl = Service(
            name="dns-responses",
            routes=(),
            port=53,
            clusters=(),
            rate_limit=RateLimit(average=responses_per_second, burst=burst),
        )
        if responses_per_second > 0:
            self._limiter = RateLimiter(clock=clock)
        self._slip = slip
        self._over = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self.bound: tuple[str, int] | None = None

    # ------------------------------------------------------------------ queries
    def handle_udp(self, data: bytes, peer: str) -> bytes | None:
        self.stats.udp += 1
        if self._limiter is not None:
            wait = self._limiter.check(self._rrl, client_network(peer))
            if wait > 0:
                self._over += 1
                if self._slip and self._over % self._slip == 0:
                    self.stats.slipped += 1
                    return truncated_reply(data)
                self.stats.rate_limited += 1
                return None
        reply, rcode = self.responder.respond(self.holder.view, data, peer, tcp=False)
        if reply is not None:
            self.stats.rcodes[rcode] = self.stats.rcodes.get(rcode, 0) + 1
        return reply

    def handle_tcp(self, data: bytes, peer: str) -> bytes | None:
        self.stats.tcp += 1
        reply, rcode = self.responder.respond(self.holder.view, data, peer, tcp=True)
        if reply is not None:
            self.stats.rcodes[rcode] = self.stats.rcodes.get(rcode, 0) + 1
        return reply

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        self._connections.add(writer)
        peer = writer.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else ""
        try:
            for _ in range(MAX_TCP_QUERIES):
                async with asyncio.timeout(TCP_IDLE):  # not wait_for: it can drop a cancel
                    head = await reader.readexactly(2)
                size = int.from_bytes(head, "big")
                async with asyncio.timeout(TCP_IDLE):
                    body = await reader.readexactly(size)
                reply = self.handle_tcp(body, address)
                if reply is None:
                    break  # a malformed message: the stream cannot be trusted any more
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, hostport: str) -> tuple[str, int]:
        """Bind UDP and TCP on the same port (port 0: a free one); OSError when busy."""
        host, _, port_text = hostport.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        port = int(port_text)
        loop = asyncio.get_running_loop()
        for attempt in range(_BIND_TRIES):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            where = f"{hostport} udp"
            try:
                udp.bind((host, port))
                bound_port = udp.getsockname()[1]
                where = f"{host}:{bound_port} tcp"
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((host, bound_port))
                tcp.listen(256)
            except OSError as exc:
                udp.close()
                tcp.close()
                if port != 0 or attempt == _BIND_TRIES - 1:
                    raise OSError(exc.errno, exc.strerror, where) from None
                continue
            break
        udp.setblocking(False)
        tcp.setblocking(False)
        transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp)
        self._udp = transport
        self._tcp = await asyncio.start_server(self._connection, sock=tcp)
        self.bound = (host, bound_port)
        return self.bound

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for w in list(self._connections):
                w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 2.0)

    def status(self) -> dict[str, object]:
        host, port = self.bound or ("", 0)
        return {
            "listen": f"{host}:{port}" if self.bound else "",
            "tcp_connections": len(self._connections),
            **self.stats.as_dict(),
        }
