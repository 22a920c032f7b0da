"""A read that repeats the last request byte for byte is taken as parsed then
(``GatewayProtocol._replay``), and a repeated request's end (metrics, access log) is made
from parts kept for it (``gateway/fixedend.py``): neither ever changes an answer, a log
line or a counter. Each test runs on the fast path and the ASGI path."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvloop

from gateway.protocol import _LIVE, GatewayProtocol
from gateway.telemetry import Telemetry
from tests.gateway.harness import running_gateway, service, view_of
from tests.gateway.rawhttp import RawClient, get
from tests.support.backend import Backend
from tests.support.wait import async_wait_for

SAME = get("/same")


@pytest.fixture
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


@pytest.fixture
async def b1() -> AsyncIterator[Backend]:
    async with Backend("b1", host="127.0.0.2") as b:
        yield b


def _in_head() -> list[GatewayProtocol]:
    return [p for conns in _LIVE.values() for p in conns if p._in_head]


async def _path_of(c: RawClient) -> tuple[int, dict[str, Any]]:
    status, _, body = await c.response()
    return status, json.loads(body)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "asgi"])
async def test_the_same_bytes_inside_a_request_head_are_part_of_it(
    b1: Backend, fast_path: bool
) -> None:
    """The bytes of the known request, read while a head is half received, continue that
    head (here: the value of its last header); they are not a request of their own."""
    v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
    async with running_gateway(v, fast_path=fast_path) as gw:
        async with await RawClient.connect(gw.addr()) as c:
            for _ in range(3):  # the first leaves an idle upstream connection; then known
                await c.send(SAME)
                status, info = await _path_of(c)
                assert (status, info["path"]) == (200, "/same")
            await c.send(b"GET /other HTTP/1.1\r\nX-Pad: 1")
            await async_wait_for(_in_head, timeout=5, what="the half head read")
            await c.send(SAME)
            status, info = await _path_of(c)
            assert status == 200 and info["path"] == "/other"
            assert dict(info["headers"])["x-pad"] == "1GET /same HTTP/1.1"
            await c.send(SAME)  # and the connection goes on
            status, info = await _path_of(c)
            assert (status, info["path"]) == (200, "/same")
        assert (gw.gateway.plane.fast_served >= 3) == fast_path


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "asgi"])
async def test_the_same_bytes_as_a_body_are_a_body(b1: Backend, fast_path: bool) -> None:
    v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
    head = f"POST /post HTTP/1.1\r\nHost: shop.test\r\nContent-Length: {len(SAME)}\r\n\r\n"
    async with (
        running_gateway(v, fast_path=fast_path) as gw,
        await RawClient.connect(gw.addr()) as c,
    ):
        for _ in range(2):
            await c.send(SAME)
            assert (await _path_of(c))[1]["path"] == "/same"
        await c.send(head.encode() + SAME)
        status, info = await _path_of(c)
        assert (status, info["path"], info["body"]) == (200, "/post", SAME.decode())
        # two requests in one read, twice: each answered, in order
        await c.send(SAME + get("/two"))
        await c.send(SAME + get("/two"))
        paths = [(await _path_of(c))[1]["path"] for _ in range(4)]
        assert paths == ["/same", "/two", "/same", "/two"]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "asgi"])
async def test_a_repeated_requests_log_lines_and_counters_are_those_of_any_request(
    b1: Backend, fast_path: bool
) -> None:
    stream = io.StringIO()
    tel = Telemetry(gateway_id="gw", cluster="c1", tracing=False, log_stream=stream)
    v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
    req = get("/same?q=1", extra="User-Agent: replay/1\r\nX-Request-Id: r-1\r\n")
    async with running_gateway(v, fast_path=fast_path, telemetry=tel) as gw:
        async with await RawClient.connect(gw.addr()) as c:
            sizes = []
            for path in ("/warm", "/same?q=1", "/same?q=1", "/same?q=1", "/same?q=1&status=503"):
                await c.send(req if path == "/same?q=1" else get(path))
                status, _, body = await c.response()
                sizes.append((status, len(body)))
        tel._log.flush()
        served = gw.gateway.plane.fast_served
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(x["status"], x["bytes_out"]) for x in lines] == sizes
    varying = ("timestamp", "duration_ms", "upstream_ms", "bytes_out", "status")
    fixed = [{k: v for k, v in x.items() if k not in varying} for x in lines[1:4]]
    assert fixed[0] == fixed[1] == fixed[2]
    assert fixed[0] == {
        "level": "info", "event": "access", "gateway": "gw", "cluster": "c1", "method": "GET",
        "host": "shop.test", "path": "/same", "service": "shop", "upstream_cluster": "c1",
        "upstream": b1.address, "client": "127.0.0.1", "retries": 0, "forwarded": False,
        "bytes_in": 0, "user_agent": "replay/1", "protocol": "HTTP/1.1", "request_id": "r-1",
    }  # fmt: skip
    assert all(x["timestamp"].endswith("Z") and x["upstream_ms"] is not None for x in lines)
    assert (served >= 3) == fast_path
    counts = tel._requests.counts
    assert counts[("shop", "c1", 200)][0] == 4
    assert counts[("shop", "c1", 200)][3] == sum(n for s, n in sizes if s == 200)
    assert counts[("shop", "c1", 503)][0] == 1
    hist = tel._requests.hists[("shop", "c1")]
    assert sum(hist[:-1]) == 5


async def test_an_asgi_app_gets_a_scope_of_its_own_from_a_replay(b1: Backend) -> None:
    """The replays share the known request's scope (headers a tuple); the ASGI path, which
    may change a scope, gets a copy (headers a list, its own state)."""
    v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
    async with running_gateway(v, fast_path=False) as gw, await RawClient.connect(gw.addr()) as c:
        for _ in range(3):
            await c.send(SAME)
            assert (await _path_of(c))[1]["path"] == "/same"
        (conn,) = [p for conns in _LIVE.values() for p in conns if p._known is not None]
        known = conn._known
        assert known is not None and isinstance(known.scope["headers"], tuple)
        assert conn.scope is not known.scope and isinstance(conn.scope["headers"], list)
        assert conn.scope["state"] is not known.scope["state"]


async def test_a_large_request_is_answered_and_not_kept(b1: Backend) -> None:
    v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
    big = get("/big", extra=f"X-Big: {'b' * 5000}\r\n")
    async with running_gateway(v, fast_path=True) as gw, await RawClient.connect(gw.addr()) as c:
        for _ in range(3):
            await c.send(big)
            status, info = await _path_of(c)
            assert (status, len(dict(info["headers"])["x-big"])) == (200, 5000)
        kept = [p._known for conns in _LIVE.values() for p in conns]
        assert kept == [None]  # more than 4 KiB: parsed every time, nothing kept


async def test_a_client_that_stops_varying_is_replayed_again(b1: Backend) -> None:
    """Requests that never repeat are kept less often (every 64th); once the client
    repeats itself, its requests are replayed again."""
    v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
    async with running_gateway(v, fast_path=True) as gw, await RawClient.connect(gw.addr()) as c:
        for i in range(12):
            await c.send(get(f"/vary/{i}"))
            assert (await _path_of(c))[1]["path"] == f"/vary/{i}"
        (conn,) = [p for conns in _LIVE.values() for p in conns]
        assert conn._unrepeated == 12
        for _ in range(60):
            await c.send(SAME)
            assert (await _path_of(c))[1]["path"] == "/same"
        assert conn._unrepeated == 0  # kept at the 64th, replayed from the 65th
