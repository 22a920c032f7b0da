"""HTTP/2 downstream with real clients: h2c with prior knowledge (httpx, h2load), ALPN
``h2`` on the TLS listener, HTTP/1.1 on the same listeners, and a drain."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.tls import build_contexts, load_material
from tests.gateway.harness import RunningGateway, running_gateway, service, settings_for, view_of
from tests.gateway.test_tls import leaf, make_ca
from tests.h2.grpc_support import EchoServer, channel, unary
from tests.support.backend import Backend

pytestmark = pytest.mark.timeout(60)
H = {"host": "shop.test"}


@pytest.fixture
async def gw() -> AsyncIterator[RunningGateway]:
    async with Backend("b1", host="127.0.0.2") as b:
        view = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b.address]})
        async with running_gateway(view) as g:
            yield g


async def test_h2c_prior_knowledge_and_http1_on_one_listener(gw: RunningGateway) -> None:
    async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as c:
        got = await asyncio.gather(*(c.get(gw.url() + f"/m{i}?a=1", headers=H) for i in range(20)))
        posted = await c.post(gw.url() + "/p", headers=H, content=b"x" * 100_000)
        cookies = await c.get(gw.url() + "/c", headers={**H, "cookie": "a=1"})
    async with httpx.AsyncClient(timeout=10) as c:
        old = await c.get(gw.url() + "/h1", headers=H)
    assert {(r.http_version, r.status_code) for r in got} == {("HTTP/2", 200)}
    seen = got[0].json()
    assert seen["query"] == "a=1"
    assert dict(seen["headers"])["host"] == "shop.test"  # :authority -> Host upstream
    assert posted.json()["body_length"] == 100_000
    assert dict(cookies.json()["headers"])["cookie"] == "a=1"
    assert (old.http_version, old.status_code) == ("HTTP/1.1", 200)


async def test_alpn_h2_on_the_tls_listener() -> None:
    ca = make_ca()
    tls = build_contexts(public=True, east_west=False)
    assert tls.public_server is not None
    load_material(tls.public_server, leaf(ca, dns=("shop.test", "localhost")))
    client_ctx = ssl.create_default_context(cadata=ca.pem)
    client_ctx.check_hostname = False
    settings = settings_for(listen={"public": "127.0.0.1:0", "publicTls": "127.0.0.1:0",
                                    "admin": "127.0.0.1:0"})  # fmt: skip
    async with Backend("b1", host="127.0.0.2") as b:
        view = view_of([service("shop", "shop.test")], endpoints={("shop", "c1"): [b.address]})
        async with running_gateway(view, settings=settings, tls=tls) as g:
            h, p = g.addr("public_tls")
            async with httpx.AsyncClient(http2=True, verify=client_ctx, timeout=10) as c:
                r2 = await c.get(f"https://{h}:{p}/x", headers=H)
            async with httpx.AsyncClient(http2=False, verify=client_ctx, timeout=10) as c:
                r1 = await c.get(f"https://{h}:{p}/x", headers=H)
    assert (r2.http_version, r2.status_code) == ("HTTP/2", 200)
    assert dict(r2.json()["headers"])["x-forwarded-proto"] == "https"
    assert (r1.http_version, r1.status_code) == ("HTTP/1.1", 200)


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) missing")
async def test_h2load_multiplexed_load(gw: RunningGateway) -> None:
    h, p = gw.addr()
    proc = await asyncio.create_subprocess_exec(
        "h2load", "-n", "2000", "-c", "4", "-m", "16", "-H", ":authority: shop.test",
        f"http://{h}:{p}/load",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=50)
    text = out.decode()
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed",
                  text)  # fmt: skip
    assert m is not None, text
    assert m.groups() == ("2000", "2000", "2000", "0"), text
    assert re.search(r"status codes: 2000 2xx", text) is not None, text


async def test_drain_finishes_streams_in_flight() -> None:
    """GOAWAY on drain: a call in flight completes (grpcio honours GOAWAY's last stream
    id; httpx/httpcore fails every stream on any GOAWAY, so it cannot show this)."""
    with EchoServer("b1") as b:
        view = view_of([service("echo", "echo.test", protocol="grpc")],
                       endpoints={("echo", "c1"): [b.address]})  # fmt: skip
        async with running_gateway(view) as g:
            h, p = g.addr()
            ch = channel(f"{h}:{p}")
            call = asyncio.ensure_future(
                asyncio.to_thread(lambda: unary(ch, "Slow")(b"0.5", timeout=10))
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while b.calls == 0:
                assert loop.time() < deadline, "the call never reached the backend"
                await asyncio.sleep(0.01)  # poll until the call is in flight
            await g.gateway.drain(5.0)
            reply = await call
            ch.close()
    assert reply == b"b1:slow"


async def test_protocol_h2_upstream_from_http1_and_http2_clients() -> None:
    """A ``protocol: h2`` service whose endpoint speaks HTTP/2 only with prior knowledge
    (here a second gateway's listener), reached by an HTTP/1.1 and an HTTP/2 client;
    several requests share one upstream connection."""
    async with Backend("b1", host="127.0.0.2") as b:
        inner_view = view_of([service("shop", "shop.test")],
                             endpoints={("shop", "c1"): [b.address]})  # fmt: skip
        async with running_gateway(inner_view) as inner:
            h, p = inner.addr()
            view = view_of([service("shop", "shop.test", protocol="h2")],
                           endpoints={("shop", "c1"): [f"{h}:{p}"]})  # fmt: skip
            async with running_gateway(view) as outer:
                async with httpx.AsyncClient(timeout=10) as c:
                    one = [await c.get(outer.url() + "/a", headers=H) for _ in range(3)]
                    up = await c.post(outer.url() + "/u", headers=H, content=b"y" * 200_000)
                async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as c:
                    two = await asyncio.gather(
                        *(c.get(outer.url() + f"/b{i}", headers=H) for i in range(10))
                    )
                conns = outer.gateway.plane.h2_pool.connections(h, p)
    assert [r.status_code for r in one] == [200] * 3
    assert up.json()["body_length"] == 200_000
    assert {(r.http_version, r.status_code) for r in two} == {("HTTP/2", 200)}
    assert dict(two[0].json()["headers"])["x-fedgate-hops"] == "2"
    assert conns == 1  # multiplexed


async def test_fast_path_declines_an_h2_service_sharing_an_endpoint() -> None:
    """An ``http`` and an ``h2`` service on one endpoint (a gateway listener speaks both):
    a plain GET to the h2 one never takes the fast path's idle HTTP/1.1 connection, it
    goes through the H2 transport (before the fix it was served over HTTP/1.1)."""
    async with Backend("b1", host="127.0.0.2") as b:
        inner_view = view_of([service("web", "web.test"), service("shop", "shop.test")],
                             endpoints={("web", "c1"): [b.address],
                                        ("shop", "c1"): [b.address]})  # fmt: skip
        async with running_gateway(inner_view) as inner:
            h, p = inner.addr()
            ep = {("web", "c1"): [f"{h}:{p}"], ("shop", "c1"): [f"{h}:{p}"]}
            view = view_of(
                [service("web", "web.test"), service("shop", "shop.test", protocol="h2")],
                endpoints=ep,
            )
            async with running_gateway(view, fast_path=True) as outer:
                plane = outer.gateway.plane
                async with httpx.AsyncClient(timeout=10) as c:
                    web = [await c.get(outer.url() + "/w", headers={"host": "web.test"})
                           for _ in range(3)]  # fmt: skip
                    served = plane.fast_served
                    shop = [await c.get(outer.url() + "/s", headers=H) for _ in range(3)]
                conns = plane.h2_pool.connections(h, p)
    assert [r.status_code for r in web + shop] == [200] * 6
    assert served >= 1  # the http service did take the fast path
    assert plane.fast_served == served  # the h2 one never did
    assert conns == 1


def test_under_uvloop() -> None:
    """The hand-over of a connection (``transport.set_protocol``) on uvloop's transports,
    as ``fedgate serve`` runs: ALPN h2 over TLS, h2c, and a gRPC call."""
    import uvloop

    async def scenario() -> tuple[set[tuple[str, int]], str, bytes]:
        ca = make_ca()
        tls = build_contexts(public=True, east_west=False)
        assert tls.public_server is not None
        load_material(tls.public_server, leaf(ca, dns=("shop.test",)))
        client_ctx = ssl.create_default_context(cadata=ca.pem)
        client_ctx.check_hostname = False
        settings = settings_for(listen={"public": "127.0.0.1:0", "publicTls": "127.0.0.1:0",
                                        "admin": "127.0.0.1:0"})  # fmt: skip
        async with Backend("b1", host="127.0.0.2") as b:
            with EchoServer("e1") as e:
                view = view_of(
                    [service("shop", "shop.test"),
                     service("echo", "echo.test", protocol="grpc")],
                    endpoints={("shop", "c1"): [b.address], ("echo", "c1"): [e.address]},
                )  # fmt: skip
                async with running_gateway(view, settings=settings, tls=tls) as g:
                    h, p = g.addr("public_tls")
                    async with httpx.AsyncClient(http2=True, verify=client_ctx, timeout=10) as c:
                        rs = await asyncio.gather(
                            *(c.get(f"https://{h}:{p}/x", headers=H) for _ in range(10))
                        )
                    h, p = g.addr()
                    async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as c:
                        plain = await c.get(f"http://{h}:{p}/x", headers=H)
                    ch = channel(f"{h}:{p}")
                    reply = await asyncio.to_thread(lambda: unary(ch)(b"uv", timeout=10))
                    ch.close()
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        return {(r.http_version, r.status_code) for r in rs}, plain.http_version, reply

    tls_versions, plain_version, reply = uvloop.run(scenario())
    assert tls_versions == {("HTTP/2", 200)}
    assert plain_version == "HTTP/2"
    assert reply == b"e1:uv"
