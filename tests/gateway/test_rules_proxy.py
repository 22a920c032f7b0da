"""Routing rules through a real gateway and real backends: redirects, rewrites, header
rules, match conditions, weighted splits (also across two gateways), route timeouts."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from federation.model import (
    HeaderRules,
    Redirect,
    Route,
    RouteConditions,
    Service,
    Sticky,
    ValueMatch,
    WeightedBackend,
)
from tests.gateway.harness import cluster, running_gateway, service, settings_for, view_of
from tests.support.backend import Backend
from tests.support.ports import free_port


@pytest.fixture
async def two() -> AsyncIterator[tuple[Backend, Backend]]:
    async with Backend("b1", host="127.0.0.2") as b1, Backend("b2", host="127.0.0.3") as b2:
        yield b1, b2


def with_routes(s: Service, *routes: Route) -> Service:
    return replace(s, routes=routes)


async def test_redirect_answers_without_a_backend(two: tuple[Backend, Backend]) -> None:
    b1, _ = two
    shop = with_routes(
        service("shop", "shop.test"),
        Route(host="shop.test", path_prefix="/"),
        Route(
            host="shop.test",
            path_prefix="/old",
            redirect=Redirect(scheme="https", path_prefix="/new", status=301),
        ),
        Route(host="www.shop.test", redirect=Redirect(host="shop.test", port=8443)),
    )
    v = view_of([shop], endpoints={("shop", "c1"): [b1.address]})
    async with running_gateway(v) as gw, httpx.AsyncClient(base_url=gw.url(), timeout=10) as c:
        r = await c.get("/old/x?q=1", headers={"host": "shop.test:8080"})
        www = await c.get("/a/b", headers={"host": "www.shop.test"})
        other = await c.get("/oldies", headers={"host": "shop.test"})
    assert r.status_code == 301
    assert r.headers["location"] == "https://shop.test/new/x?q=1"
    assert www.status_code == 302
    assert www.headers["location"] == "http://shop.test:8443/a/b"
    assert other.status_code == 200  # "/old" matches on a segment boundary only
    assert b1.requests == 1


async def test_rewrite_and_header_rules_reach_the_backend(two: tuple[Backend, Backend]) -> None:
    b1, _ = two
    api = Route(
        host="shop.test",
        path_prefix="/api/",
        rewrite_path_prefix="/v2",
        rewrite_host="api.internal",
        request_headers=HeaderRules(
            add=(("x-from", "gateway"),), set=(("x-env", "prod"),), remove=("x-internal",)
        ),
        response_headers=HeaderRules(set=(("cache-control", "no-store"),), remove=("x-backend",)),
    )
    strip = Route(host="shop.test", path_prefix="/strip", rewrite_path_prefix="/")
    shop = with_routes(service("shop", "shop.test"), api, strip)
    v = view_of([shop], endpoints={("shop", "c1"): [b1.address]})
    async with running_gateway(v) as gw, httpx.AsyncClient(base_url=gw.url(), timeout=10) as c:
        hdrs = {"host": "shop.test", "x-internal": "secret", "x-env": "dev", "x-from": "client"}
        r = await c.get("/api/users?page=2", headers=hdrs)
        s1 = await c.get("/strip/a/b", headers={"host": "shop.test"})
        s2 = await c.get("/strip", headers={"host": "shop.test"})
        enc = await c.get("/%61pi/x", headers={"host": "shop.test"})  # "/api/x" encoded
    assert r.status_code == 200
    seen = r.json()
    assert (seen["path"], seen["query"]) == ("/v2/users", "page=2")
    got = seen["headers"]
    assert dict(got)["host"] == "api.internal"
    assert dict(got)["x-forwarded-host"] == "shop.test"  # the client's host stays visible
    assert "x-internal" not in dict(got)
    assert [v for n, v in got if n == "x-env"] == ["prod"]
    assert [v for n, v in got if n == "x-from"] == ["client", "gateway"]
    assert r.headers["cache-control"] == "no-store"
    assert "x-backend" not in r.headers
    assert s1.json()["path"] == "/a/b" and s2.json()["path"] == "/"
    assert enc.json()["path"] == "/v2/x"


async def test_match_conditions_choose_the_service(two: tuple[Backend, Backend]) -> None:
    b1, b2 = two
    shop = service("shop", "shop.test")
    canary = with_routes(
        service("canary", "shop.test"),
        Route(
            host="shop.test",
            match=RouteConditions(headers=(ValueMatch("x-canary", "exact", "1"),)),
        ),
        Route(host="shop.test", match=RouteConditions(methods=frozenset({"POST"}))),
        Route(
            host="shop.test",
            path_prefix="/beta",
            match=RouteConditions(query=(ValueMatch("v", "present"),)),
        ),
    )
    v = view_of(
        [shop, canary],
        endpoints={("shop", "c1"): [b1.address], ("canary", "c1"): [b2.address]},
    )
    async with running_gateway(v) as gw, httpx.AsyncClient(base_url=gw.url(), timeout=10) as c:
        h = {"host": "shop.test"}
        plain = await c.get("/", headers=h)
        flagged = await c.get("/", headers={**h, "x-canary": "1"})
        other_flag = await c.get("/", headers={**h, "x-canary": "2"})
        post = await c.post("/", headers=h, content=b"x")
        beta_q = await c.get("/beta/x?v=", headers=h)
        beta = await c.get("/beta/x", headers=h)
    assert plain.json()["name"] == "b1"
    assert flagged.json()["name"] == "b2"
    assert other_flag.json()["name"] == "b1"
    assert post.json()["name"] == "b2"
    assert beta_q.json()["name"] == "b2"
    assert beta.json()["name"] == "b1"  # no condition holds at /beta: the shorter prefix


async def test_weighted_split_and_sticky_cookie(two: tuple[Backend, Backend]) -> None:
    b1, b2 = two
    split = (WeightedBackend("shop-v1", 1), WeightedBackend("shop-v2", 1))
    front = with_routes(
        service("shop-v1", "shop.test"),
        Route(host="shop.test", backends=split),
        Route(host="sticky.test", backends=split, sticky=Sticky(cookie="session")),
    )
    v2 = service("shop-v2", "v2.shop.test")
    v = view_of(
        [front, v2],
        endpoints={("shop-v1", "c1"): [b1.address], ("shop-v2", "c1"): [b2.address]},
    )
    async with running_gateway(v) as gw, httpx.AsyncClient(base_url=gw.url(), timeout=10) as c:
        names = [
            (await c.get("/", headers={"host": "shop.test"})).json()["name"] for _ in range(60)
        ]
        sticky = {
            (
                await c.get("/", headers={"host": "sticky.test", "cookie": "a=1; session=u42"})
            ).json()["name"]
            for _ in range(15)
        }
    assert names.count("b1") > 5 and names.count("b2") > 5  # 1:1; failing odds ~1e-11
    assert len(sticky) == 1


async def test_split_is_decided_once_across_two_gateways(two: tuple[Backend, Backend]) -> None:
    """c1 picks shop-v2 (its view splits 100 % there); c2's view would send nearly
    everything to shop-v1, but it follows the pick carried from c1. A client cannot
    choose the backend on the public listener."""
    b1, b2 = two
    ew1, ew2 = free_port("127.0.0.5"), free_port("127.0.0.6")
    clusters = [
        cluster("c1", east_west=f"http://127.0.0.5:{ew1}"),
        cluster("c2", east_west=f"http://127.0.0.6:{ew2}"),
    ]
    v1_svc = service("shop-v1", "v1.shop.test", clusters=("c2",))
    v2_svc = service("shop-v2", "v2.shop.test", clusters=("c2",))
    eps = {("shop-v1", "c2"): [b1.address], ("shop-v2", "c2"): [b2.address]}

    def view(weights: tuple[int, int]) -> object:
        front = with_routes(
            service("front", "front.test", clusters=("c1", "c2")),
            Route(
                host="shop.test",
                backends=(
                    WeightedBackend("shop-v1", weights[0]),
                    WeightedBackend("shop-v2", weights[1]),
                ),
            ),
        )
        return view_of([front, v1_svc, v2_svc], clusters, endpoints=eps)

    def settings(name: str, host: str, ew: int) -> object:
        base = settings_for(name, host=host)
        return base.model_copy(
            update={"listen": base.listen.model_copy(
                update={"public": f"{host}:0", "east_west": f"{host}:{ew}"})}
        )  # fmt: skip

    async with (
        running_gateway(view((0, 1)), settings=settings("c1", "127.0.0.5", ew1)) as g1,  # type: ignore[arg-type]
        running_gateway(view((1000, 1)), settings=settings("c2", "127.0.0.6", ew2)) as g2,  # type: ignore[arg-type]
    ):
        async with httpx.AsyncClient(base_url=g1.url(), timeout=10) as c:
            via_c1 = [(await c.get("/", headers={"host": "shop.test"})).json() for _ in range(10)]
        async with httpx.AsyncClient(base_url=g2.url(), timeout=10) as c:
            forged = [
                (
                    await c.get("/", headers={"host": "shop.test", "x-fedgate-backend": "shop-v2"})
                ).json()["name"]
                for _ in range(10)
            ]
    assert [r["name"] for r in via_c1] == ["b2"] * 10
    assert all("x-fedgate-backend" not in dict(r["headers"]) for r in via_c1)
    assert forged.count("b1") >= 8  # the header from a client is not believed


async def test_rules_apply_once_across_two_gateways(two: tuple[Backend, Backend]) -> None:
    """c1 has no endpoint and forwards to c2: the path is rewritten once (by c2, which
    meets the endpoint), the response header is added once (by c1, which the client
    talks to)."""
    b1, _ = two
    ew1, ew2 = free_port("127.0.0.5"), free_port("127.0.0.6")
    clusters = [
        cluster("c1", east_west=f"http://127.0.0.5:{ew1}"),
        cluster("c2", east_west=f"http://127.0.0.6:{ew2}"),
    ]
    shop = with_routes(
        service("shop", "shop.test", clusters=("c1", "c2")),
        Route(
            "shop.test",
            "/api",
            rewrite_path_prefix="/api/v2",
            request_headers=HeaderRules(add=(("x-hop-rule", "1"),)),
            response_headers=HeaderRules(add=(("x-resp-rule", "1"),)),
        ),
    )
    v = view_of([shop], clusters, endpoints={("shop", "c2"): [b1.address]})

    def settings(name: str, host: str, ew: int) -> Any:
        base = settings_for(name, host=host)
        return base.model_copy(
            update={"listen": base.listen.model_copy(
                update={"public": f"{host}:0", "east_west": f"{host}:{ew}"})}
        )  # fmt: skip

    async with (
        running_gateway(v, settings=settings("c1", "127.0.0.5", ew1)) as g1,
        running_gateway(v, settings=settings("c2", "127.0.0.6", ew2)),
        httpx.AsyncClient(base_url=g1.url(), timeout=10) as c,
    ):
        r = await c.get("/api/x", headers={"host": "shop.test"})
    assert r.status_code == 200
    seen = r.json()
    assert seen["path"] == "/api/v2/x"
    assert [v for n, v in seen["headers"] if n == "x-hop-rule"] == ["1"]
    assert r.headers.get_list("x-resp-rule") == ["1"]


async def test_route_timeout_replaces_the_service_timeout(two: tuple[Backend, Backend]) -> None:
    b1, _ = two
    shop = with_routes(
        service("shop", "shop.test"),
        Route(host="shop.test", path_prefix="/fast", timeout=0.3),
        Route(host="shop.test", path_prefix="/"),
    )
    v = view_of([shop], endpoints={("shop", "c1"): [b1.address]})
    async with running_gateway(v) as gw, httpx.AsyncClient(base_url=gw.url(), timeout=10) as c:
        t0 = time.monotonic()
        fast = await c.get("/fast?sleep=1.5", headers={"host": "shop.test"})
        took = time.monotonic() - t0
        slow = await c.get("/slow?sleep=0.5", headers={"host": "shop.test"})
    assert fast.status_code == 504
    assert took < 1.4
    assert slow.status_code == 200


async def test_websocket_routes_follow_conditions_and_rewrites(
    two: tuple[Backend, Backend],
) -> None:
    b1, b2 = two
    shop = with_routes(
        service("shop", "shop.test"),
        Route("shop.test", "/", rewrite_host="chat.internal",
              request_headers=HeaderRules(add=(("x-ws-rule", "1"),))),
        Route("shop.test", "/old", redirect=Redirect(scheme="https")),
    )  # fmt: skip
    beta = with_routes(
        service("beta", "shop.test"),
        Route("shop.test", "/", match=RouteConditions(headers=(ValueMatch("x-beta", "present"),))),
    )
    v = view_of(
        [shop, beta], endpoints={("shop", "c1"): [b1.address], ("beta", "c1"): [b2.address]}
    )
    async with running_gateway(v) as gw:
        h, p = gw.addr()
        async with connect("ws://shop.test/chat", host=h, port=p, proxy=None) as conn:
            await conn.send("headers")
            seen = json.loads(await conn.recv())
            await conn.send("hi")
            plain = await conn.recv()
        async with connect(
            "ws://shop.test/chat", host=h, port=p, proxy=None,
            additional_headers={"x-beta": "1"},
        ) as conn:  # fmt: skip
            await conn.send("hi")
            flagged = await conn.recv()
        with pytest.raises(InvalidStatus):
            async with connect("ws://shop.test/old/x", host=h, port=p, proxy=None):
                pass
    assert seen["host"] == "chat.internal" and seen["x-ws-rule"] == "1"
    assert (plain, flagged) == ("b1:hi", "b2:hi")


async def test_routes_with_rules_never_take_the_fast_path(two: tuple[Backend, Backend]) -> None:
    """With the callback fast path on, a route with rules (or a split) is served the ASGI
    way every time, so its rules apply to every request; a plain route beside it is
    served by callbacks."""
    b1, _ = two
    shop = with_routes(
        service("shop", "shop.test"),
        Route(host="shop.test", path_prefix="/"),
        Route(
            host="shop.test",
            path_prefix="/r",
            rewrite_path_prefix="/v2",
            response_headers=HeaderRules(add=(("x-resp-rule", "1"),)),
        ),
    )
    v = view_of([shop], endpoints={("shop", "c1"): [b1.address]})
    h = {"host": "shop.test"}
    async with (
        running_gateway(v, fast_path=True) as gw,
        httpx.AsyncClient(base_url=gw.url(), timeout=5) as c,
    ):
        plane = gw.gateway.plane
        plain = [await c.get("/p", headers=h) for _ in range(10)]
        fast_plain = plane.fast_served
        ruled = [await c.get("/r/x", headers=h) for _ in range(10)]
        fast_ruled = plane.fast_served - fast_plain
    assert fast_plain >= 5  # keep-alive: the plain route goes the callback way
    assert fast_ruled == 0
    assert [r.status_code for r in plain + ruled] == [200] * 20
    assert {r.json()["path"] for r in ruled} == {"/v2/x"}
    assert all(r.headers.get("x-resp-rule") == "1" for r in ruled)


async def test_response_rules_apply_to_the_gateways_own_answers() -> None:
    """A route's response header rules also apply when the gateway answers by itself (no
    endpoint: 503)."""
    shop = with_routes(
        service("shop", "shop.test"),
        Route(host="shop.test", response_headers=HeaderRules(set=(("x-resp-rule", "1"),))),
    )
    v = view_of([shop], endpoints={})
    async with running_gateway(v) as gw, httpx.AsyncClient(base_url=gw.url(), timeout=5) as c:
        r = await c.get("/", headers={"host": "shop.test"})
    assert r.status_code == 503
    assert r.headers["x-resp-rule"] == "1"
