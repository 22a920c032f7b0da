"""An HTTP/1.1 client that stops reading a large answer: the gateway gives up on it
(its writes bounded by the route's idle limit) and closes the connection; that close used
to wait for a flush that never came, the connection kept in the listener's set (a slot
under its cap, the unsent bytes in memory) as long as the client kept its socket open.
Now the sweep aborts a closing connection whose buffer has not drained within
``limits.headerTimeout``; another client is served meanwhile."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from federation.model import Timeouts
from tests.gateway.harness import running_gateway, service, settings_for, view_of
from tests.support.backend import Backend
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.timeout(30)


async def test_a_closed_connection_to_a_client_that_reads_nothing_goes() -> None:
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
            try:
                loop = asyncio.get_running_loop()
                await loop.sock_connect(sock, (h, p))
                await loop.sock_sendall(
                    sock, b"GET /?size=30000000 HTTP/1.1\r\nhost: shop.test\r\n\r\n"
                )  # then read nothing

                def closing_unflushed() -> bool:
                    return any(
                        c.transport.is_closing() and c.transport.get_write_buffer_size() > 0
                        for c in server.server_state.connections
                    )

                await async_wait_for(
                    closing_unflushed, timeout=10, what="the gateway gave up on the client"
                )
                async with httpx.AsyncClient(base_url=f"http://{h}:{p}") as other:
                    r = await other.get("/", headers={"host": "shop.test"})
                    assert r.status_code == 200  # served while the stalled one is held
                await async_wait_for(
                    lambda: not server.server_state.connections, timeout=5,
                    what="the stalled client's connection gone from the listener",
                )  # fmt: skip
            finally:
                sock.close()
