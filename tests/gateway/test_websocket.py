"""WebSocket proxying through a real gateway to a real WebSocket backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from federation.model import Retries
from tests.gateway.harness import RunningGateway, cluster, running_gateway, service, view_of
from tests.gateway.rawhttp import HostileUpstream
from tests.support.backend import Backend
from tests.support.ports import free_port


@pytest.fixture
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


@pytest.fixture
async def gw() -> AsyncIterator[tuple[RunningGateway, Backend]]:
    async with Backend("b1", host="127.0.0.2") as b1:
        dead = f"127.0.0.4:{free_port('127.0.0.4')}"
        v = view_of(
            [
                service("shop", "shop.test"),
                # the budget is not what these tests test (WebSocket tries spend it too)
                service("retry", "retry.test", retries=Retries(attempts=2, budget_percent=100)),
            ],
            endpoints={("shop", "c1"): [b1.address], ("retry", "c1"): [dead, b1.address]},
        )
        async with running_gateway(v) as g:
            yield g, b1


def ws(g: RunningGateway, host: str = "shop.test", **kw: object) -> connect:
    h, p = g.addr()
    return connect(f"ws://{host}/chat?room=1", host=h, port=p, proxy=None, **kw)  # type: ignore[arg-type]


async def test_frames_both_ways(gw: tuple[RunningGateway, Backend]) -> None:
    g, _ = gw
    async with ws(g, subprotocols=["chat.v2", "chat.v1"]) as conn:
        assert conn.subprotocol == "chat.v2"  # the backend's choice, relayed
        await conn.send("hello")
        assert await conn.recv() == "b1:hello"
        await conn.send(b"\x00\x01binary")
        assert await conn.recv() == b"b1:\x00\x01binary"
        big = "x" * 1_000_000
        await conn.send(big)
        assert await conn.recv() == "b1:" + big
        for i in range(50):
            await conn.send(str(i))
        assert [await conn.recv() for _ in range(50)] == [f"b1:{i}" for i in range(50)]


async def test_upstream_sees_clean_headers(gw: tuple[RunningGateway, Backend]) -> None:
    g, _ = gw
    async with ws(g, additional_headers={"x-forwarded-for": "6.6.6.6", "x-app": "1"}) as conn:
        await conn.send("headers")
        seen = json.loads(await conn.recv())
    assert seen["host"] == "shop.test"
    assert seen["x-forwarded-for"] == "127.0.0.1"  # the untrusted one was replaced
    assert seen["x-app"] == "1"
    assert seen["x-fedgate-hops"] == "1"
    assert seen["upgrade"].lower() == "websocket"


async def test_close_code_travels(gw: tuple[RunningGateway, Backend]) -> None:
    g, _ = gw
    async with ws(g) as conn:
        await conn.send("close:4001")
        with pytest.raises(ConnectionClosed):
            await conn.recv()
        assert conn.close_code == 4001


async def test_client_close_reaches_upstream(gw: tuple[RunningGateway, Backend]) -> None:
    g, _ = gw
    conn: ClientConnection
    async with ws(g) as conn:
        await conn.send("x")
        await conn.recv()
    assert conn.close_code == 1000


async def test_unknown_host_is_refused(gw: tuple[RunningGateway, Backend]) -> None:
    g, _ = gw
    with pytest.raises(InvalidStatus) as err:
        async with ws(g, host="evil.test"):
            pass
    assert err.value.response.status_code == 403


async def test_connect_failure_moves_to_another_endpoint(
    gw: tuple[RunningGateway, Backend],
) -> None:
    g, _ = gw
    for _ in range(6):
        async with ws(g, host="retry.test") as conn:
            await conn.send("ping")
            assert await asyncio.wait_for(conn.recv(), 5) == "b1:ping"


async def test_websocket_tries_go_through_breakers_and_passive_stats(
    gw: tuple[RunningGateway, Backend],
) -> None:
    g, b1 = gw
    for _ in range(6):
        async with ws(g, host="retry.test") as conn:
            await conn.send("ping")
            assert await asyncio.wait_for(conn.recv(), 5) == "b1:ping"
    plane = g.gateway.plane
    assert ("retry", "c1") in plane.breakers.states()
    assert plane.passive.snapshot()[("retry", "c1")][2] >= 6  # every try recorded
    assert g.balancer.active(b1.address) == 0  # started and finished in pairs


async def test_websocket_never_tries_the_same_remote_gateway_twice() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # a remote gateway that fails every handshake

    async with HostileUpstream(hang_up) as remote:
        v = view_of(
            [service("shop", "shop.test", clusters=("c1", "c2"),
                     retries=Retries(attempts=2, budget_percent=100))],
            clusters=[cluster("c1"), cluster("c2", east_west=f"http://{remote.address}")],
            endpoints={("shop", "c2"): ["127.0.0.9:1"]},
        )  # fmt: skip
        async with running_gateway(v) as g:
            with pytest.raises(InvalidStatus):
                async with ws(g):
                    pass
    assert remote.connections == 1
