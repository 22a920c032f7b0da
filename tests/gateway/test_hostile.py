"""Regression tests for issue #12, each as a hostile client or upstream would do it, on raw
sockets: pipelining, fast-path fallback, client-caused failures, deadlines both ways,
upstream head limits, the connection cap, a blackholed endpoint with default settings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import uvloop

from federation.model import Retries, Timeouts
from gateway.server import Gateway
from gateway.upstream_pool import UpstreamPool
from tests.gateway.harness import running_gateway, service, settings_for, view_of
from tests.gateway.rawhttp import HostileUpstream, RawClient, get
from tests.support.backend import Backend, RawUpstream
from tests.support.wait import async_wait_for

GENEROUS = Retries(attempts=1, budget_percent=100)


@pytest.fixture
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


@pytest.fixture
async def b1() -> AsyncIterator[Backend]:
    async with Backend("b1", host="127.0.0.2") as b:
        yield b


def _breaker(gw: Gateway, svc: str = "shop", cluster: str = "c1") -> object:
    return gw.plane.breakers._breakers.get((svc, cluster))


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "asgi"])
async def test_pipelined_gets_are_answered_in_order(b1: Backend, fast_path: bool) -> None:
    v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
    async with running_gateway(v, fast_path=fast_path) as gw:
        async with await RawClient.connect(gw.addr()) as c:
            await c.send(get("/warm"))  # leaves an idle upstream connection: the next is fast
            assert (await c.response())[0] == 200
            await c.send(get("/one") + get("/two"))
            first = await c.response()
            second = await c.response()
        assert (gw.gateway.plane.fast_served >= 1) == fast_path
    assert (first[0], second[0]) == (200, 200)
    assert b'"/one"' in first[2] and b'"/two"' in second[2]


async def test_fast_path_fallback_goes_on_with_the_same_exchange() -> None:
    async with Backend("b1", host="127.0.0.2") as b1, Backend("b2", host="127.0.0.3") as b2:
        v = view_of(
            [service("shop", "shop.test", retries=GENEROUS)],
            endpoints={("shop", "c1"): [b1.address, b2.address]},
        )
        async with running_gateway(v, fast_path=True) as gw:
            plane = gw.gateway.plane
            async with await RawClient.connect(gw.addr()) as c:
                for _ in range(40):  # until both endpoints have an idle pooled connection
                    await c.send(get())
                    assert (await c.response())[0] == 200
                    if plane.pool.idle_count() >= 2 and plane.fast_served >= 3:
                        break
                b1.app.force_status = b2.app.force_status = 503
                before = b1.requests + b2.requests
                requests_before, _ = plane.budget.usage("shop")
                fast_before = plane.fast_served
                await c.send(get())
                status, _, _ = await c.response()
            assert plane.fast_served == fast_before + 1  # it started on the fast path
            tries = b1.requests + b2.requests - before
            requests_after, _ = plane.budget.usage("shop")
    assert status == 503
    assert tries == 2  # attempts + 1, not attempts + 2
    assert requests_after - requests_before == 1  # the budget counted one request


async def test_clients_hanging_up_mid_body_do_not_open_the_breaker(b1: Backend) -> None:
    v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
    async with running_gateway(v) as gw:
        for i in range(6):
            seen = b1.requests
            c = await RawClient.connect(gw.addr())
            await c.send(
                b"POST /upload HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 100000\r\n\r\nabc"
            )
            await async_wait_for(lambda s=seen: b1.requests > s, timeout=5, what=f"upload {i}")
            c.writer.transport.abort()  # hang up after 3 bytes
            await async_wait_for(
                lambda: getattr(_breaker(gw.gateway), "pending", 1) == 0, timeout=5,
                what="the try released",
            )  # fmt: skip
        assert gw.gateway.plane.breakers.states()[("shop", "c1")] == "closed"
        async with await RawClient.connect(gw.addr()) as c:
            await c.send(get())
            assert (await c.response())[0] == 200
        assert not gw.balancer.is_ejected(b1.address)


async def test_a_slow_client_body_is_not_the_upstreams_failure(b1: Backend) -> None:
    v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
    s = settings_for(limits={"headerTimeout": 0.3})
    async with running_gateway(v, settings=s) as gw:
        for _ in range(5):  # as many as the breaker's consecutive failures
            async with await RawClient.connect(gw.addr()) as c:
                await c.send(
                    b"POST /upload HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 100000\r\n\r\nabc"
                )
                status, _, _ = await c.response()  # and then nothing: the body times out
            assert status == 408
        assert gw.gateway.plane.breakers.states()[("shop", "c1")] == "closed"
        stats = gw.gateway.plane.passive.snapshot()
        assert stats.get(("shop", "c1"), (0.0, 0.0, 0))[0] == 0.0  # no upstream error recorded
        async with await RawClient.connect(gw.addr()) as c:
            await c.send(get())
            assert (await c.response())[0] == 200


async def test_an_upstream_that_never_reads_the_body_is_cut_at_the_request_deadline() -> None:
    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)  # pacing: accepts, never reads (the body piles up)

    async with HostileUpstream(never_read) as up:
        v = view_of(
            [service("shop", "shop.test", timeouts=Timeouts(request=1.0))],
            endpoints={("shop", "c1"): [up.address]},
        )
        async with running_gateway(v) as gw, await RawClient.connect(gw.addr()) as c:
            size = 50 * 1024 * 1024
            await c.send(
                b"POST /up HTTP/1.1\r\nHost: shop.test\r\nContent-Length: %d\r\n\r\n" % size
            )

            async def pump() -> None:
                chunk = b"x" * (1 << 20)
                for _ in range(50):
                    await c.send(chunk)

            writer = asyncio.ensure_future(pump())
            t0 = time.monotonic()
            try:
                status, _, _ = await c.response(timeout=8)
            finally:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
            elapsed = time.monotonic() - t0
    assert status == 504
    assert elapsed < 5


async def test_a_client_that_stops_reading_does_not_pin_the_upstream() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%b\r\n" % (65536, b"y" * 65536)
        for _ in range(100000):  # bounded: ~6.5 GB, never reached (the gateway cuts it)
            writer.write(chunk)
            await writer.drain()

    async with HostileUpstream(endless) as up:
        v = view_of(
            [service("shop", "shop.test", timeouts=Timeouts(request=1.0))],
            endpoints={("shop", "c1"): [up.address]},
        )
        async with running_gateway(v) as gw:
            c = await RawClient.connect(gw.addr())
            c.writer.transport.set_write_buffer_limits(0)
            await c.send(get("/download"))
            await c.reader.readuntil(b"\r\n\r\n")
            c.writer.transport.pause_reading()  # the client stops reading
            try:
                await async_wait_for(lambda: up.closed >= 1, timeout=10,
                                     what="upstream connection closed")  # fmt: skip
            finally:
                c.writer.transport.abort()


async def test_a_trickled_body_is_cut_at_the_request_deadline(b1: Backend) -> None:
    v = view_of(
        [service("shop", "shop.test", timeouts=Timeouts(request=1.0))],
        endpoints={("shop", "c1"): [b1.address]},
    )
    async with running_gateway(v) as gw, await RawClient.connect(gw.addr()) as c:
        await c.send(b"POST /t HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 40\r\n\r\n")

        async def trickle() -> None:
            for _ in range(40):  # one byte per 0.2 s: each piece well within the idle limit
                await c.send(b"z")
                await asyncio.sleep(0.2)  # pacing of a slow client (the behaviour under test)

        writer = asyncio.ensure_future(trickle())
        t0 = time.monotonic()
        try:
            status, _, _ = await c.response(timeout=9)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
    assert status == 408
    assert time.monotonic() - t0 < 4


async def test_upstream_response_head_limits() -> None:
    many = b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-h%d: v\r\n" % i for i in range(300))
    many += b"content-length: 2\r\n\r\nok"

    async def endless_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nx-big: ")
        for _ in range(2000):  # bounded: 128 MB, never reached (the gateway cuts it)
            writer.write(b"a" * 65536)
            await writer.drain()

    async with RawUpstream(many, host="127.0.0.6") as r1, HostileUpstream(endless_header) as r2:
        v = view_of(
            [service("many", "many.test"), service("big", "big.test")],
            endpoints={("many", "c1"): [r1.address], ("big", "c1"): [r2.address]},
        )
        async with running_gateway(v) as gw:
            async with await RawClient.connect(gw.addr()) as c:
                await c.send(get(host="many.test"))
                status_many, _, _ = await c.response()
            async with await RawClient.connect(gw.addr()) as c:
                await c.send(get(host="big.test"))
                status_big, _, _ = await c.response()
            await async_wait_for(lambda: r2.closed >= 1, timeout=5, what="upstream cut")
    assert status_many == 502
    assert status_big == 502


async def test_the_connection_cap_sheds_idle_connections_first(b1: Backend) -> None:
    v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
    async with running_gateway(v, max_connections=4) as gw:
        idle = [await RawClient.connect(gw.addr()) for _ in range(4)]
        try:
            for c in idle:
                await c.send(get())
                assert (await c.response())[0] == 200
            async with await RawClient.connect(gw.addr()) as new:
                await new.send(get())
                assert (await new.response())[0] == 200  # not 503: an idle one made room
            assert await idle[0].closed(timeout=5)  # the longest idle was shed
        finally:
            for c in idle:
                c.writer.transport.abort()


async def test_the_connection_cap_refuses_when_every_connection_is_busy(b1: Backend) -> None:
    v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
    async with running_gateway(v, max_connections=2) as gw:
        busy = [await RawClient.connect(gw.addr()) for _ in range(2)]
        try:
            for c in busy:
                await c.send(get("/?sleep=1.5"))
            await async_wait_for(lambda: b1.requests >= 2, timeout=5, what="both in flight")
            async with await RawClient.connect(gw.addr()) as new:
                await new.send(get())
                assert (await new.response())[0] == 503
            for c in busy:
                assert (await c.response())[0] == 200  # the busy ones were not touched
        finally:
            for c in busy:
                c.writer.transport.abort()


async def test_a_blackholed_endpoint_fails_no_get_with_default_settings() -> None:
    async with Backend("b1", host="127.0.0.2") as b1, Backend("b2", host="127.0.0.3") as b2:
        v = view_of(
            [service("shop", "shop.test")],  # default retries, timeouts, budget
            endpoints={("shop", "c1"): [b1.address, b2.address]},
        )
        async with running_gateway(v) as gw, await RawClient.connect(gw.addr()) as c:
            for _ in range(80):  # both endpoints get a latency history (>= 20 answers each)
                await c.send(get())
                assert (await c.response())[0] == 200
            b2.app.force_delay = 30.0  # stops answering (a blackhole)
            statuses = []
            slowest = 0.0
            for _ in range(20):
                t0 = time.monotonic()
                await c.send(get())
                statuses.append((await c.response(timeout=10))[0])
                slowest = max(slowest, time.monotonic() - t0)
    assert statuses == [200] * 20
    assert slowest < 1.5  # the adaptive per-try timeout, not the 2 s default


async def test_a_stalled_event_loop_is_not_an_upstream_timeout(b1: Backend) -> None:
    """A process that did not run for a while (CPU starvation, a pause) must not fail the
    tries in flight: their answers may be waiting in the sockets (the adaptive per-try
    timeout is a few hundred ms, so a stall that long would fail every try at once)."""
    pool = UpstreamPool()
    host, port = b1.address.split(":")
    conn, _ = await pool.acquire(host, int(port), connect_timeout=2.0)
    try:
        conn.write(b"GET /?sleep=0.2 HTTP/1.1\r\nhost: shop.test\r\n\r\n")
        conn.set_timeout(0.4)
        await asyncio.sleep(0.1)  # a few deadline sweeps run
        time.sleep(0.6)  # noqa: ASYNC251  # pacing: the whole loop stalls (under test)
        await conn.read_head()
        assert conn.status == 200
    finally:
        pool.discard(conn)
        pool.close()
