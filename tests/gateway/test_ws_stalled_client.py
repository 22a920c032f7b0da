"""A WebSocket client that stops reading: the gateway's write of an upstream frame to it
is bounded by the route's idle limit; past it the exchange ends as the client's doing
(the upstream connection closed and its in-flight slot freed, nothing recorded against
the upstream) instead of pinning the upstream until the client goes."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from federation.model import Timeouts
from tests.gateway.harness import running_gateway, service, settings_for, view_of
from tests.support.backend import Backend
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.timeout(30)


async def test_a_client_that_stops_reading_frees_the_upstream() -> None:
    async with Backend("b1", host="127.0.0.2") as b:
        view = view_of(
            [service("shop", "shop.test", timeouts=Timeouts(request=0.5))],
            endpoints={("shop", "c1"): [b.address]},
        )
        async with running_gateway(view) as g:
            h, p = g.addr()
            # max_queue=1: the client library stops reading its socket once one frame
            # waits, and this client never calls recv()
            async with connect(
                "ws://shop.test/chat", host=h, port=p, proxy=None, max_queue=1,
                max_size=None, compression=None, close_timeout=0.5,
            ) as conn:  # fmt: skip
                frame = b"z" * (256 * 1024)
                for _ in range(200):  # echoed back by the backend, until the pipes fill
                    if not g.balancer.active(b.address):
                        break  # the gateway gave up on this client already
                    try:
                        await asyncio.wait_for(conn.send(frame), 0.5)
                    except TimeoutError:
                        break
                    except ConnectionClosed:
                        break
                else:
                    pytest.fail("200 frames of 256 KiB went through a client that reads none")
                await async_wait_for(
                    lambda: not g.balancer.active(b.address), timeout=10,
                    what="the upstream freed from a client that reads nothing",
                )  # fmt: skip
                conn.transport.abort()  # the stalled client just goes
            passive = g.gateway.plane.passive.snapshot()
    errors = passive[("shop", "c1")][0] if ("shop", "c1") in passive else 0.0
    assert errors == 0.0  # the client's doing, not the upstream's


async def test_the_stalled_client_connection_leaves_the_listener() -> None:
    """Once the gateway gives up on a client that reads nothing, its own connection used
    to stay in the listener's set (uvicorn's close waits for a flush that never comes) as
    long as the client kept its socket open: now aborted after headerTimeout; another
    client is served meanwhile."""
    async with Backend("b1", host="127.0.0.2") as b:
        view = view_of(
            [service("shop", "shop.test", timeouts=Timeouts(request=0.5))],
            endpoints={("shop", "c1"): [b.address]},
        )
        settings = settings_for(limits={"headerTimeout": 1.0})
        async with running_gateway(view, settings=settings) as g:
            server = g.gateway._servers["public"]  # no public view of a listener's connections
            h, p = g.addr()
            async with connect(
                "ws://shop.test/chat", host=h, port=p, proxy=None, max_queue=1,
                max_size=None, compression=None, close_timeout=0.5,
            ) as conn:  # fmt: skip
                frame = b"z" * (256 * 1024)
                for _ in range(200):
                    if not g.balancer.active(b.address):
                        break
                    try:
                        await asyncio.wait_for(conn.send(frame), 0.5)
                    except (TimeoutError, ConnectionClosed):
                        break
                await async_wait_for(
                    lambda: not g.balancer.active(b.address), timeout=10,
                    what="the gateway gave up on the client",
                )  # fmt: skip
                async with httpx.AsyncClient(base_url=f"http://{h}:{p}") as other:
                    r = await other.get("/", headers={"host": "shop.test"})
                    assert r.status_code == 200  # served while the stalled one is held
                await async_wait_for(
                    lambda: not server.server_state.connections, timeout=5,
                    what="the stalled client's connection gone from the listener",
                )  # fmt: skip
                conn.transport.abort()


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (a zero mask: the payload goes as is)."""
    n = len(payload)
    if n < 126:
        size = bytes([0x80 | n])
    elif n < 65536:
        size = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        size = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return bytes([0x80 | opcode]) + size + b"\0\0\0\0" + payload


async def test_an_upstream_close_to_a_stalled_client_ends_the_exchange() -> None:
    """The upstream closes while the client's buffer is full: relaying that close used to
    wait for the client to read for ever (the endpoint's in-flight slot and the client's
    connection kept); now bounded by the route's idle limit like every frame, then the
    connection is aborted after headerTimeout."""
    async with Backend("b1", host="127.0.0.2") as b:
        view = view_of(
            [service("shop", "shop.test", timeouts=Timeouts(request=0.5))],
            endpoints={("shop", "c1"): [b.address]},
        )
        settings = settings_for(limits={"headerTimeout": 1.0})
        async with running_gateway(view, settings=settings) as g:
            server = g.gateway._servers["public"]  # no public view of a listener's connections
            h, p = g.addr()
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            try:
                await loop.sock_connect(sock, (h, p))
                await loop.sock_sendall(
                    sock,
                    b"GET /chat HTTP/1.1\r\nhost: shop.test\r\nupgrade: websocket\r\n"
                    b"connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"sec-websocket-version: 13\r\n\r\n",
                )
                head = b""
                async with asyncio.timeout(10):
                    while b"\r\n\r\n" not in head:
                        head += await loop.sock_recv(sock, 1)  # the 101 head only
                assert head.startswith(b"HTTP/1.1 101")
                # echoed back (8 MiB) into a socket that reads nothing, then the upstream closes
                await loop.sock_sendall(sock, _client_frame(0x2, b"z" * (8 << 20)))

                def unflushed() -> bool:
                    return any(
                        c.transport.get_write_buffer_size() > (1 << 20)
                        for c in server.server_state.connections
                    )

                await async_wait_for(unflushed, timeout=10, what="the client's buffer full")
                await loop.sock_sendall(sock, _client_frame(0x1, b"close:1000"))
                await async_wait_for(
                    lambda: not g.balancer.active(b.address), timeout=5,
                    what="the upstream's in-flight slot freed",
                )  # fmt: skip
                await async_wait_for(
                    lambda: not server.server_state.connections, timeout=5,
                    what="the stalled client's connection gone from the listener",
                )  # fmt: skip
            finally:
                sock.close()
