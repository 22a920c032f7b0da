"""A client that never opens its HTTP/2 flow-control window (SETTINGS_INITIAL_WINDOW_SIZE
0 and no WINDOW_UPDATE for that stream): every write to it is bounded, the stream is
reset once the limit passes, the upstream is released and not blamed, and the other
streams of the same connection are answered (the ``h2`` library as the client)."""

from __future__ import annotations

import asyncio
import socket
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from federation.model import Timeouts
from tests.gateway.harness import running_gateway, service, settings_for, view_of
from tests.h2.grpc_support import EchoServer
from tests.support.backend import Backend
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.timeout(30)
AUTHORITY = "shop.test"


class StalledClient:
    """An h2 client whose streams get no window unless :meth:`open_window` says so."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        self.flush()
        self.status: dict[int, int] = {}
        self.body: dict[int, int] = {}
        self.ended: set[int] = set()
        self.reset: set[int] = set()

    @classmethod
    async def connect(cls, host: str, port: int) -> StalledClient:
        return cls(*await asyncio.open_connection(host, port))

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    def get(self, path: str, *, authority: str = AUTHORITY, grpc_timeout: str = "") -> int:
        """A GET, or with ``grpc_timeout`` a unary gRPC call (one message) with that
        deadline."""
        sid: int = self.h2.get_next_available_stream_id()
        headers = [(b":method", b"POST" if grpc_timeout else b"GET"), (b":scheme", b"http"),
                   (b":authority", authority.encode()), (b":path", path.encode())]  # fmt: skip
        if grpc_timeout:
            headers += [(b"content-type", b"application/grpc"), (b"te", b"trailers"),
                        (b"grpc-timeout", grpc_timeout.encode())]  # fmt: skip
            self.h2.send_headers(sid, headers)
            self.h2.send_data(sid, b"\x00\x00\x00\x00\x02hi", end_stream=True)
        else:
            self.h2.send_headers(sid, headers, end_stream=True)
        self.flush()
        return sid

    def open_window(self, sid: int, size: int) -> None:
        self.h2.increment_flow_control_window(size, stream_id=sid)
        self.flush()

    async def until(self, done: object, timeout: float) -> bool:
        """Read frames until ``done()`` or ``timeout`` seconds (False then)."""
        assert callable(done)
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except TimeoutError:
                return False
            if not data:
                return bool(done())
            for event in self.h2.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    for name, value in event.headers or ():
                        if name == b":status":
                            self.status[event.stream_id] = int(value)
                elif isinstance(event, h2.events.DataReceived):
                    self.body[event.stream_id] = self.body.get(event.stream_id, 0) + len(event.data)
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    self.ended.add(event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    self.reset.add(event.stream_id)
            self.flush()
        return True

    def close(self) -> None:
        self.writer.close()


@pytest.mark.parametrize("path", ["/down?size=20000", "/down?stream=400&chunk=16384", "/nowhere"])
async def test_a_client_that_never_opens_its_window(path: str) -> None:
    """An answer (the upstream's whole or streamed, or the gateway's own 404) to a stream
    whose window stays 0: the stream is reset after the idle limit (was, for a whole
    answer or the 404: its task waited forever, the request never ended; a streamed one
    was already cut by the relay); a second stream on the same connection is answered
    meanwhile; the upstream is released and not blamed."""
    async with Backend("b1", host="127.0.0.2") as b:
        view = view_of(
            [service("shop", AUTHORITY, prefix="/down", timeouts=Timeouts(request=0.5))],
            endpoints={("shop", "c1"): [b.address]},
        )
        settings = settings_for(limits={"headerTimeout": 1.0})  # the listener's own limit
        async with running_gateway(view, settings=settings) as g:
            client = await StalledClient.connect(*g.addr())
            try:
                stalled = client.get(path)
                other = client.get("/down?size=100")
                client.open_window(other, 65535)
                assert await client.until(lambda: other in client.ended, 10)
                assert client.status[other] == 200 and client.body[other] == 100
                assert await client.until(lambda: stalled in client.reset, 10), (
                    "the stalled stream was never reset"
                )
                assert stalled not in client.ended
            finally:
                client.close()
            assert not g.balancer.active(b.address)
            passive = g.gateway.plane.passive.snapshot()
    errors = passive[("shop", "c1")][0] if ("shop", "c1") in passive else 0.0
    assert errors == 0.0  # the client's doing, not the upstream's


async def test_a_grpc_call_deadline_bounds_the_writes_to_a_stalled_client() -> None:
    """A gRPC call whose client never opens its window: the stream is reset at the
    call's deadline (grpc-timeout 1 s), not at the route's 10 s idle limit."""
    with EchoServer("b1") as b:
        view = view_of(
            [service("echo", "echo.test", protocol="grpc", timeouts=Timeouts(request=10.0))],
            endpoints={("echo", "c1"): [b.address]},
        )
        async with running_gateway(view) as g:
            client = await StalledClient.connect(*g.addr())
            try:
                t0 = time.monotonic()
                sid = client.get("/test.Echo/Unary", authority="echo.test", grpc_timeout="1S")
                assert await client.until(lambda: sid in client.reset, 5), (
                    "the stalled call outlived its deadline"
                )
                took = time.monotonic() - t0
                assert client.status[sid] == 200 and sid not in client.ended
            finally:
                client.close()
    assert 0.5 < took < 5


async def test_a_closed_connection_to_a_client_that_reads_nothing_goes() -> None:
    """A client that stops reading its socket, then floods PINGs: the gateway closes the
    connection (GOAWAY ENHANCE_YOUR_CALM), and with its send buffer full that close used
    to wait for a flush that never came, the connection kept (and counted against the
    listener's cap) for ever; now it is aborted after the write limit."""
    async with Backend("b1", host="127.0.0.2") as b:
        view = view_of(
            [service("shop", AUTHORITY, timeouts=Timeouts(request=1.0))],
            endpoints={("shop", "c1"): [b.address]},
        )
        settings = settings_for(limits={"headerTimeout": 1.0})
        async with running_gateway(view, settings=settings) as g:
            server = g.gateway._servers["public"]  # no public view of a listener's connections
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, g.addr())
            client = StalledClient(*await asyncio.open_connection(sock=sock))
            try:
                client.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**30})
                client.h2.increment_flow_control_window(2**30)
                client.get("/down?size=30000000")  # then read nothing

                def stuck() -> bool:
                    return any(
                        c.transport is not None and c.transport.get_write_buffer_size() > 0
                        for c in server.server_state.connections
                    )

                await async_wait_for(stuck, timeout=10, what="the gateway's buffer full")
                for n in range(150):  # past the PING budget (100 in 10 s)
                    client.h2.ping(n.to_bytes(8, "big"))
                client.flush()
                await async_wait_for(
                    lambda: not server.server_state.connections, timeout=10,
                    what="the closed connection gone",
                )  # fmt: skip
            finally:
                client.close()
