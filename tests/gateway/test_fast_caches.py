"""What the request path remembers to go faster never changes an answer (issue #12's
throughput work): a known upstream answer head is taken without a second parse only for a
whole answer in one read; the fast path's upstream head, made once per repeated request
head on a connection, follows every request that differs."""

from __future__ import annotations

import asyncio
import json

import pytest
import uvloop

from gateway import known_heads
from gateway.telemetry import Telemetry
from tests.gateway.harness import running_gateway, service, view_of
from tests.gateway.rawhttp import HostileUpstream, RawClient, get
from tests.support.backend import Backend

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nx-test: known\r\n\r\n"


@pytest.fixture
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


async def _answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Every answer has the same head: whole in one write, except for ``/split`` (the head
    and 2 bytes, then the rest) and HEAD requests (the head alone)."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"HEAD "):
            writer.write(HEAD)
        elif head.startswith(b"GET /split "):
            writer.write(HEAD + b"he")
            await writer.drain()
            await asyncio.sleep(0.05)  # pacing: the behaviour under test (the rest in a later read)
            writer.write(b"llo")
        else:
            writer.write(HEAD + b"hello")
        await writer.drain()


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "asgi"])
async def test_a_known_answer_head_is_taken_only_for_a_whole_answer(fast_path: bool) -> None:
    async with HostileUpstream(_answers) as up:
        v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [up.address]})
        async with running_gateway(v, fast_path=fast_path) as gw:
            async with await RawClient.connect(gw.addr()) as c:
                got = []
                for req in (
                    get("/one"),  # parsed, its head remembered
                    get("/two"),  # the same head: taken as known
                    get("/split"),  # the same head, the body over two reads: parsed
                    get("/three"),
                    b"HEAD /h HTTP/1.1\r\nHost: shop.test\r\n\r\n",  # never taken as known
                ):
                    await c.send(req)
                    if req.startswith(b"HEAD"):
                        async with asyncio.timeout(5):
                            head = await c.reader.readuntil(b"\r\n\r\n")
                        got.append((int(head.split()[1]), b"content-length: 5" in head, b""))
                        continue
                    status, headers, body = await c.response()
                    got.append((status, headers.get(b"x-test") == b"known", body))
            assert (gw.gateway.plane.fast_served >= 3) == fast_path
    assert got == [
        (200, True, b"hello"),
        (200, True, b"hello"),
        (200, True, b"hello"),
        (200, True, b"hello"),
        (200, True, b""),
    ]
    assert up.connections == 1  # one upstream connection served them all, in order
    assert HEAD in known_heads._HEADS


async def test_the_fast_paths_upstream_head_follows_every_request() -> None:
    async with Backend("b1", host="127.0.0.2") as b1:
        v = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
        tel = Telemetry(gateway_id="gw", cluster="c1", metrics=False, access_log=False)
        async with running_gateway(v, fast_path=True, telemetry=tel) as gw:
            async with await RawClient.connect(gw.addr()) as c:
                seen = []
                for req in (
                    get("/warm"),  # leaves an idle upstream connection: the rest is fast
                    get("/a", extra="X-Test: 1\r\n"),
                    get("/a", extra="X-Test: 1\r\n"),  # the same head again
                    get("/a", extra="X-Test: 2\r\n"),
                    get("/b?q=1", extra="X-Test: 2\r\n"),
                ):
                    await c.send(req)
                    status, _, body = await c.response()
                    assert status == 200
                    info = json.loads(body)
                    headers = dict(info["headers"])
                    seen.append((info["path"], info["query"], headers.get("x-test"),
                                 headers.get("traceparent")))  # fmt: skip
            assert gw.gateway.plane.fast_served >= 4
    assert [s[:3] for s in seen] == [
        ("/warm", "", None),
        ("/a", "", "1"),
        ("/a", "", "1"),
        ("/a", "", "2"),
        ("/b", "q=1", "2"),
    ]
    parents = [s[3] for s in seen]
    assert all(parents) and len(set(parents)) == len(parents)  # a span of its own each


async def test_a_repeated_request_follows_a_new_route_table() -> None:
    async with Backend("b1", host="127.0.0.2") as b1, Backend("b2", host="127.0.0.3") as b2:
        before = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b1.address]})
        after = view_of(  # shop.test moves to shop2; shop stays, on another host
            [service("shop", "other.test"), service("shop2", "shop.test")],
            endpoints={("shop", "c1"): [b1.address], ("shop2", "c1"): [b2.address]},
        )
        async with running_gateway(before, fast_path=True) as gw:
            async with await RawClient.connect(gw.addr()) as c:
                names = []
                for i in range(6):
                    if i == 3:
                        gw.holder.swap(after)  # the same request head, another route table
                    await c.send(get("/same"))
                    status, headers, _ = await c.response()
                    assert status == 200
                    names.append(headers[b"x-backend"])
            assert gw.gateway.plane.fast_served >= 2
    assert names == [b"b1", b"b1", b"b1", b"b2", b"b2", b"b2"]


def test_a_known_head_is_found_only_with_exactly_its_body() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-test: find\r\n\r\n"
    known_heads.remember(head + b"abc", 200, ((b"content-length", b"3"),), 3)
    for _ in range(2):  # the second time the same bytes are compared with the last found
        found = known_heads.find(head + b"abc")
        assert found is not None and found[1] == len(head) and found[0].status == 200
    assert known_heads.find(head + b"xyz") is not None  # another body of that length
    assert known_heads.find(head + b"abcd") is None  # a byte past the answer
    assert known_heads.find(head + b"ab") is None  # a byte missing
    assert known_heads.find(head.replace(b"find", b"fine") + b"abc") is None  # another head
    assert known_heads.find(head + b"abc") is not None
