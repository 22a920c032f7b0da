"""HTTP/2 abuse against a real gateway: each protection with a raw client that sends
what a well-behaved library never would. After each, the gateway still serves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.gateway.harness import RunningGateway, running_gateway, service, settings_for, view_of
from tests.h2.rawh2 import ENHANCE_YOUR_CALM, RawH2
from tests.support.backend import Backend

pytestmark = pytest.mark.timeout(60)
AUTHORITY = "shop.test"


@pytest.fixture
async def gw() -> AsyncIterator[tuple[RunningGateway, Backend]]:
    async with Backend("b1", host="127.0.0.2") as b:
        view = view_of([service("shop", AUTHORITY)], endpoints={("shop", "c1"): [b.address]})
        settings = settings_for(limits={"headerTimeout": 1.0, "maxHeaderBytes": 8192})
        async with running_gateway(view, settings=settings) as g:
            yield g, b


async def still_serves(g: RunningGateway) -> None:
    async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as c:
        r = await c.get(g.url() + "/after", headers={"host": AUTHORITY})
    assert (r.http_version, r.status_code) == ("HTTP/2", 200)


async def test_rapid_reset_closes_the_connection(gw: tuple[RunningGateway, Backend]) -> None:
    """CVE-2023-44487: streams opened and reset at once, far past the budget (200 per
    10 s): GOAWAY ENHANCE_YOUR_CALM; the work started upstream stays bounded."""
    g, backend = gw
    raw = await RawH2.connect(*g.addr())
    block = raw.request_block(AUTHORITY, "/slow?sleep=0.5")
    sid = 1
    for _ in range(10):  # 1000 streams in 10 writes
        batch = []
        for _ in range(100):
            batch += [raw.headers(sid, block), raw.rst(sid)]
            sid += 2
        raw.send(b"".join(batch))
    out = await raw.outcome(timeout=10)
    raw.close()
    assert out.goaway == ENHANCE_YOUR_CALM and out.closed
    assert backend.requests <= 260  # the budget, not the 1000 streams the client asked for
    await still_serves(g)


async def test_continuation_flood_is_refused(gw: tuple[RunningGateway, Backend]) -> None:
    """A header block that never ends: h2 stops at 64 CONTINUATION frames."""
    g, backend = gw
    raw = await RawH2.connect(*g.addr())
    block = raw.request_block(AUTHORITY)
    frames = [raw.headers(1, block, end_headers=False)]
    frames += [raw.continuation(1, raw.encoder.encode([("x-a", "b")])) for _ in range(200)]
    raw.send(b"".join(frames))
    out = await raw.outcome(timeout=10)
    raw.close()
    assert out.goaway is not None and out.closed
    assert backend.requests == 0
    await still_serves(g)


async def test_slow_continuation_trickle_times_out(gw: tuple[RunningGateway, Backend]) -> None:
    """A header block sent a frame at a time, slowly: closed at the header deadline (1 s)."""
    g, _ = gw
    raw = await RawH2.connect(*g.addr())
    raw.send(raw.headers(1, raw.request_block(AUTHORITY), end_headers=False))
    out = await raw.outcome(timeout=5)  # nothing more is sent
    raw.close()
    assert out.goaway == ENHANCE_YOUR_CALM and out.closed


async def test_settings_flood(gw: tuple[RunningGateway, Backend]) -> None:
    g, _ = gw
    raw = await RawH2.connect(*g.addr())
    raw.send(b"".join(raw.settings() for _ in range(500)))
    out = await raw.outcome(timeout=10)
    raw.close()
    assert out.goaway == ENHANCE_YOUR_CALM and out.closed
    assert out.frames.count("SettingsFrame") <= 110  # acks stopped at the budget
    await still_serves(g)


async def test_ping_flood(gw: tuple[RunningGateway, Backend]) -> None:
    g, _ = gw
    raw = await RawH2.connect(*g.addr())
    raw.send(b"".join(raw.ping(i) for i in range(500)))
    out = await raw.outcome(timeout=10)
    raw.close()
    assert out.goaway == ENHANCE_YOUR_CALM and out.closed
    assert out.frames.count("PingFrame") <= 110
    await still_serves(g)


async def test_hpack_bomb_stops_at_the_header_list_limit(
    gw: tuple[RunningGateway, Backend],
) -> None:
    """One 4 KiB header put in the dynamic table, then referenced 200 times: ~800 KiB
    decoded from a few hundred bytes. Decoding stops at maxHeaderBytes (8 KiB)."""
    g, backend = gw
    raw = await RawH2.connect(*g.addr())
    big = ("x-bomb", "b" * 4000)
    pseudo = [(":method", "GET"), (":scheme", "http"), (":authority", AUTHORITY), (":path", "/")]
    raw.send(raw.headers(1, raw.encoder.encode([*pseudo, big])))  # 4 KiB: under the limit
    # the entry is now in both dynamic tables; index it 200 times (one byte each)
    again = raw.encoder.encode(pseudo + [big] * 200)
    assert len(again) < 1024
    raw.send(raw.headers(3, again))
    out = await raw.outcome(timeout=10)
    raw.close()
    assert out.goaway is not None and out.closed
    assert backend.requests <= 1  # only the first, small request went upstream
    await still_serves(g)


async def test_too_many_concurrent_streams(gw: tuple[RunningGateway, Backend]) -> None:
    """More open streams than SETTINGS_MAX_CONCURRENT_STREAMS (128): refused."""
    g, backend = gw
    raw = await RawH2.connect(*g.addr())
    block = raw.request_block(AUTHORITY, "/slow?sleep=1")
    raw.send(b"".join(raw.headers(1 + 2 * i, block) for i in range(300)))
    out = await raw.outcome(timeout=10)
    raw.close()
    assert out.goaway is not None and out.closed
    assert backend.requests <= 128
    await still_serves(g)


async def test_flow_control_both_ways(gw: tuple[RawH2 | RunningGateway, Backend]) -> None:
    """A 3 MiB upload and a 3 MiB download over one HTTP/2 connection, both far larger
    than a stream window (64 KiB for the client, 256 KiB for the gateway)."""
    g, _ = gw
    assert isinstance(g, RunningGateway)
    payload = bytes(range(256)) * (3 * 4096)
    async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as c:
        up = await c.post(g.url() + "/up", headers={"host": AUTHORITY}, content=payload)
        down = await c.get(g.url() + "/down?size=3145728", headers={"host": AUTHORITY})
    assert up.status_code == 200 and up.json()["body_length"] == len(payload)
    assert down.status_code == 200 and len(down.content) == 3145728


async def test_client_resets_do_not_open_the_breaker(gw: tuple[RunningGateway, Backend]) -> None:
    """Streams the client cancels (under the reset budget) are not upstream failures: a
    client must not be able to open the breaker for everyone (regression: the stream's
    task was cancelled, and the cancellation counted against the breaker)."""
    g, backend = gw
    raw = await RawH2.connect(*g.addr())
    block = raw.request_block(AUTHORITY, "/slow?sleep=0.3")
    raw.send(b"".join(raw.headers(1 + 2 * i, block) for i in range(20)))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while backend.requests < 20:
        assert loop.time() < deadline, "the requests never reached the backend"
        await asyncio.sleep(0.01)  # poll until all 20 are upstream
    raw.send(b"".join(raw.rst(1 + 2 * i) for i in range(20)))
    await raw.outcome(timeout=1.0)
    raw.close()
    await still_serves(g)


async def test_client_resets_on_an_h2_service_are_not_upstream_failures() -> None:
    """A ``protocol: h2`` service: streams the client resets while their tries wait for
    the upstream's head end as the client's doing (499), never recorded against the
    upstream (regression: the body pump reset the upstream stream and the try counted
    as an upstream failure in the breaker and passive health)."""
    async with Backend("b1", host="127.0.0.2") as backend:
        inner_view = view_of([service("shop", AUTHORITY)],
                             endpoints={("shop", "c1"): [backend.address]})  # fmt: skip
        async with running_gateway(inner_view) as inner:
            h, p = inner.addr()
            view = view_of([service("shop", AUTHORITY, protocol="h2")],
                           endpoints={("shop", "c1"): [f"{h}:{p}"]})  # fmt: skip
            async with running_gateway(view) as g:
                raw = await RawH2.connect(*g.addr())
                block = raw.request_block(AUTHORITY, "/slow?sleep=0.5")
                raw.send(b"".join(raw.headers(1 + 2 * i, block) for i in range(10)))
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while backend.requests < 10:
                    assert loop.time() < deadline, "the requests never reached the backend"
                    await asyncio.sleep(0.01)  # poll until all 10 are upstream
                raw.send(b"".join(raw.rst(1 + 2 * i) for i in range(10)))
                while g.balancer.active(f"{h}:{p}"):
                    assert loop.time() < deadline, "the tries never ended"
                    await asyncio.sleep(0.01)  # poll until every try is over
                raw.close()
                passive = g.gateway.plane.passive.snapshot()
                await still_serves(g)
    assert ("shop", "c1") not in passive  # nothing recorded: not the upstream's fault


async def test_empty_data_frame_flood(gw: tuple[RunningGateway, Backend]) -> None:
    """CVE-2019-9518: DATA frames without payload use no window; never queued, and a
    flood of them ends the connection."""
    from hyperframe.frame import DataFrame

    g, _ = gw
    raw = await RawH2.connect(*g.addr())
    head = raw.headers(1, raw.request_block(AUTHORITY, "/slow?sleep=2"), end_stream=False)
    raw.send(head + b"".join(DataFrame(1, data=b"").serialize() for _ in range(1000)))
    out = await raw.outcome(timeout=10)
    raw.close()
    assert out.goaway == ENHANCE_YOUR_CALM and out.closed
    await still_serves(g)
