"""WebSocket proxying through a real gateway to a real WebSocket backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import uvloop
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from federation.model import Retries
from gateway.telemetry import Telemetry
from tests.gateway.harness import RunningGateway, cluster, running_gateway, service, view_of
from tests.gateway.rawhttp import HostileUpstream
from tests.support.backend import Backend
from tests.support.ports import free_port
from tests.support.wait import async_wait_for


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
    await async_wait_for(  # started and finished in pairs, once each WebSocket is closed
        lambda: g.balancer.active(b1.address) == 0, timeout=5.0, what="in-flight back to 0"
    )


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


async def test_an_open_websocket_stays_in_flight_until_it_closes(
    gw: tuple[RunningGateway, Backend],
) -> None:
    """Least-request balancing sees a WebSocket as busy for its whole life, not only
    during the handshake."""
    g, b1 = gw
    async with ws(g) as one, ws(g) as two:
        for conn in (one, two):
            await conn.send("ping")
            assert await asyncio.wait_for(conn.recv(), 5) == "b1:ping"
        assert g.balancer.active(b1.address) == 2
    await async_wait_for(
        lambda: g.balancer.active(b1.address) == 0, timeout=5.0, what="in-flight back to 0"
    )
    async with ws(g) as conn:  # a close by the upstream ends it too
        await conn.send("close:4001")
        with pytest.raises(ConnectionClosed):
            await conn.recv()
    await async_wait_for(
        lambda: g.balancer.active(b1.address) == 0, timeout=5.0, what="in-flight back to 0"
    )


async def test_one_client_span_per_websocket_try() -> None:
    """A WebSocket's tries get the CLIENT spans HTTP tries get: a failed connect, then
    the handshake (101), both children of the request's SERVER span."""
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(
        gateway_id="gw", cluster="c1", metrics=False, access_log=False, span_exporter=exporter
    )

    def finished(kind: SpanKind) -> list[ReadableSpan]:
        telemetry.flush()
        return [s for s in exporter.get_finished_spans() if s.kind is kind]

    async with Backend("b1", host="127.0.0.2") as b1:
        dead = f"127.0.0.4:{free_port('127.0.0.4')}"
        v = view_of(
            [service("retry", "retry.test", retries=Retries(attempts=2, budget_percent=100))],
            endpoints={("retry", "c1"): [dead, b1.address]},
        )
        async with running_gateway(v, telemetry=telemetry) as g:
            for n in range(1, 7):  # until a handshake met the dead endpoint first
                async with ws(g, host="retry.test") as conn:
                    await conn.send("ping")
                    assert await asyncio.wait_for(conn.recv(), 5) == "b1:ping"
                await async_wait_for(
                    lambda n=n: len(finished(SpanKind.SERVER)) == n,  # type: ignore[misc]
                    timeout=5.0,
                    what="the request's span",
                )
                if any("error.type" in (c.attributes or {}) for c in finished(SpanKind.CLIENT)):
                    break
    servers = finished(SpanKind.SERVER)
    clients = finished(SpanKind.CLIENT)
    telemetry.close()
    tries: dict[int, list[ReadableSpan]] = {}
    for c in clients:
        assert c.parent is not None
        tries.setdefault(c.parent.span_id, []).append(c)
    assert sorted(tries) == sorted(s.context.span_id for s in servers)  # each has its tries
    two = max(tries.values(), key=len)
    assert len(two) == 2, [c.attributes for c in clients]
    failed, handshake = sorted(two, key=lambda s: s.start_time or 0)
    assert failed.attributes is not None and handshake.attributes is not None
    assert failed.attributes["error.type"] == "connect-failure"
    assert failed.attributes["server.address"] == "127.0.0.4"
    assert handshake.attributes["http.response.status_code"] == 101
    assert handshake.attributes["fedgate.upstream_cluster"] == "c1"
    assert handshake.attributes["server.port"] == b1.port
