"""Host and path matching over a routing view (gateway.routing)."""

from __future__ import annotations

import random
from types import MappingProxyType

from federation.model import (
    Route,
    RouteConditions,
    Service,
    Sticky,
    ValueMatch,
    ValueMatchKind,
    WeightedBackend,
)
from gateway.routing import RouteMatch, RouteTable, split_host
from tests.gateway.harness import view_of


def svc(name: str, *routes: tuple[str, str]) -> Service:
    return Service(
        name=name,
        routes=tuple(Route(host=h, path_prefix=p) for h, p in routes),
        port=80,
        clusters=("c1",),
    )


TABLE = RouteTable.build(
    view_of(
        [
            svc("root", ("shop.test", "/")),
            svc("api", ("shop.test", "/api")),
            svc("api-v2", ("shop.test", "/api/v2/")),
            svc("wild", ("*.shop.test", "/")),
            svc("deep-wild", ("*.eu.shop.test", "/")),
            svc("wild-admin", ("*.shop.test", "/admin")),
        ]
    )
)


def name_of(host: str, path: str) -> str | None:
    m = TABLE.match(host, path)
    return m.service.name if m else None


def test_exact_host_longest_prefix() -> None:
    assert name_of("shop.test", "/") == "root"
    assert name_of("shop.test", "/checkout") == "root"
    assert name_of("shop.test", "/api") == "api"
    assert name_of("shop.test", "/api/users") == "api"
    assert name_of("shop.test", "/api/v2/users") == "api-v2"
    assert name_of("shop.test", "/api/v2") == "api-v2"  # "/api/v2/" also matches "/api/v2"


def test_prefix_matches_on_segment_boundaries() -> None:
    assert name_of("shop.test", "/apix") == "root"
    assert name_of("shop.test", "/api/v21") == "api"


def test_wildcard_hosts() -> None:
    assert name_of("a.shop.test", "/") == "wild"
    assert name_of("a.b.shop.test", "/") == "wild"  # one or more labels
    assert name_of("x.eu.shop.test", "/") == "deep-wild"  # the longest suffix wins
    assert name_of("a.shop.test", "/admin/x") == "wild-admin"
    assert name_of(".shop.test", "/") is None  # the label in front must not be empty


def test_exact_beats_wildcard_and_unknown_hosts_miss() -> None:
    assert name_of("shop.test", "/admin") == "root"  # exact host, even with a longer wildcard
    assert name_of("evil.test", "/") is None
    assert name_of("shop.test.evil", "/") is None


def test_exact_host_without_a_matching_prefix_falls_back_to_wildcards() -> None:
    t = RouteTable.build(view_of([svc("a", ("x.test", "/only")), svc("w", ("*.test", "/"))]))
    m = t.match("x.test", "/other")
    assert m is not None and m.service.name == "w"


def test_conflicting_routes_are_deterministic() -> None:
    t = RouteTable.build(view_of([svc("b", ("x.test", "/")), svc("a", ("x.test", "/"))]))
    m = t.match("x.test", "/")
    assert m is not None and m.service.name == "a"
    assert len(t) == 1


def test_hosts_in_routes_are_case_insensitive() -> None:
    t = RouteTable.build(view_of([svc("a", ("Shop.Test.", "/"))]))
    assert t.match("shop.test", "/") is not None


def test_split_host() -> None:
    assert split_host(b"Shop.Test:8080") == "shop.test"
    assert split_host(b"shop.test.") == "shop.test"
    assert split_host(b"[::1]:80") == "[::1]"
    assert split_host(b"shop.test:80x") is None
    assert split_host(b"user@shop.test") is None
    assert split_host(b"") is None
    assert split_host(b"a b") is None
    assert split_host(b"caf\xe9") is None


# ---------------------------------------------------------------- conditions and splits


def cond_svc(name: str, *routes: Route) -> Service:
    return Service(name=name, routes=routes, port=80, clusters=("c1",))


def hv(name: str, kind: ValueMatchKind = "exact", value: str = "") -> ValueMatch:
    return ValueMatch(name=name, kind=kind, value=value)


COND = RouteTable.build(
    view_of(
        [
            cond_svc("any", Route("api.test", "/")),
            cond_svc(
                "get", Route("api.test", "/", match=RouteConditions(methods=frozenset({"GET"})))
            ),
            cond_svc(
                "two-headers",
                Route(
                    "api.test",
                    "/",
                    match=RouteConditions(headers=(hv("x-a"), hv("x-b", "present"))),
                ),
            ),
            cond_svc(
                "one-header",
                Route("api.test", "/", match=RouteConditions(headers=(hv("x-a", "exact", "1"),))),
            ),
            cond_svc(
                "prefix",
                Route(
                    "api.test", "/p", match=RouteConditions(headers=(hv("x-u", "prefix", "beta-"),))
                ),
            ),
            cond_svc(
                "absent",
                Route("api.test", "/q", match=RouteConditions(headers=(hv("x-u", "absent"),))),
            ),
            cond_svc(
                "query",
                Route("api.test", "/q", match=RouteConditions(query=(hv("v", "exact", "2 x"),))),
            ),
        ]
    )
)


def cond_name(
    path: str,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
) -> str | None:
    m = COND.match("api.test", path, method, headers or [], query)
    return m.service.name if m else None


def test_conditions_precedence_method_then_headers_then_query() -> None:
    assert cond_name("/", "GET") == "get"  # a method condition ranks first
    assert cond_name("/", "POST") == "any"
    assert cond_name("/", "POST", [(b"x-a", b"1")]) == "one-header"
    assert cond_name("/", "POST", [(b"x-a", b""), (b"x-b", b"")]) == "two-headers"  # exact ""
    assert cond_name("/", "POST", [(b"x-a", b"0"), (b"x-a", b"1")]) == "one-header"  # any value


def test_conditions_fall_back_to_shorter_prefixes() -> None:
    assert cond_name("/p/x", "PUT", [(b"x-u", b"beta-7")]) == "prefix"
    assert cond_name("/p/x", "PUT", [(b"x-u", b"alpha")]) == "any"
    assert cond_name("/q", "PUT") == "absent"
    assert cond_name("/q", "PUT", [(b"x-u", b"1")]) == "any"
    assert cond_name("/q", "PUT", [(b"x-u", b"1")], b"a=1&v=2+x") == "query"  # decoded
    assert cond_name("/q", "PUT", [(b"x-u", b"1")], b"v=2%20x") == "query"
    assert cond_name("/q", "PUT", [(b"x-u", b"1")], b"v=3") == "any"


def test_same_route_with_other_conditions_is_not_a_duplicate() -> None:
    assert len(COND) == 7


def test_explain_lists_the_routes_considered_and_why() -> None:
    match, rows = COND.explain("api.test", "/q", "PUT", [(b"x-u", b"1")], b"v=3")
    assert match is not None and match.service.name == "any"
    assert [(r["service"], r["matched"]) for r in rows] == [
        ("absent", False),  # a header condition ranks before a query condition
        ("query", False),
        ("get", False),  # then the shorter prefix "/": method first, then headers
        ("two-headers", False),
        ("one-header", False),
        ("any", True),
    ]
    assert rows[0]["reason"] == "needs x-u absent"
    assert rows[1]["reason"] == "needs v = '2 x'"
    assert rows[2]["reason"] == "method PUT not accepted"
    assert rows[1]["conditions"] == "query v = '2 x'"
    assert rows[5]["reason"] == "longest prefix, no conditions"
    assert COND.explain("nope.test", "/")[0] is None


def test_weighted_split_follows_weights_and_sticky_hash() -> None:
    front = cond_svc(
        "front",
        Route(
            "s.test",
            "/",
            backends=(
                WeightedBackend("v1", 3),
                WeightedBackend("v2", 1),
                WeightedBackend("gone", 5),
            ),
        ),
        Route(
            "k.test",
            "/",
            backends=(WeightedBackend("v1", 1), WeightedBackend("v2", 1)),
            sticky=Sticky(header="x-user"),
        ),
        Route(
            "c.test",
            "/",
            backends=(WeightedBackend("v1", 1), WeightedBackend("v2", 1)),
            sticky=Sticky(cookie="sid"),
        ),
        Route("z.test", "/", backends=(WeightedBackend("v1", 0), WeightedBackend("v2", 1))),
    )
    t = RouteTable.build(
        view_of([front, cond_svc("v1", Route("v1.test")), cond_svc("v2", Route("v2.test"))])
    )
    m = t.match("s.test", "/")
    assert m is not None and not m.plain
    assert [s.name for s in m.backends] == ["v1", "v2"]  # a service the view lacks is left out
    random.seed(7)
    picks = [m.pick([]).name for _ in range(4000)]
    assert 2800 < picks.count("v1") < 3200  # 3:1
    k = t.match("k.test", "/")
    assert k is not None
    by_user = {u: k.pick([(b"x-user", u)]).name for u in (b"a", b"b", b"c", b"d", b"e", b"f")}
    assert all(k.pick([(b"x-user", u)]).name == n for u, n in by_user.items() for _ in range(5))
    assert set(by_user.values()) == {"v1", "v2"}
    c = t.match("c.test", "/")
    assert c is not None
    cookie = [(b"cookie", b"theme=dark; sid=abc")]
    assert len({c.pick(cookie).name for _ in range(20)}) == 1
    z = t.match("z.test", "/")
    assert z is not None and {z.pick([]).name for _ in range(50)} == {"v2"}
    # forwarded by another gateway: its pick is followed, only among the route's backends
    assert k.pick([(b"x-fedgate-backend", b"v2"), (b"x-user", b"a")], forwarded=True).name == "v2"
    assert m.pick([(b"x-fedgate-backend", b"front")], forwarded=True).name in ("v1", "v2")


def test_route_timeout_is_folded_into_the_service() -> None:
    svc = cond_svc("t", Route("t.test", "/slow"), Route("t.test", "/fast", timeout=0.25))
    t = RouteTable.build(view_of([svc]))
    fast, slow = t.match("t.test", "/fast/x"), t.match("t.test", "/slow")
    assert fast is not None and slow is not None
    assert fast.service.timeouts.request == 0.25
    assert fast.service.retries.per_try_timeout == 0.25
    assert slow.service is svc and slow.plain


def test_many_prefixes_on_one_host_and_deep_wildcards() -> None:
    services = [cond_svc(f"s{i}", Route("big.test", f"/p{i}/")) for i in range(500)]
    services.append(cond_svc("w", Route("*.a.b.test", "/"), Route("*.b.test", "/x")))
    t = RouteTable.build(view_of(services))
    assert (t.match("big.test", "/p377/y") or FAIL).service.name == "s377"
    assert t.match("big.test", "/p377x") is None
    assert (t.match("q.r.a.b.test", "/x") or FAIL).service.name == "w"
    assert (t.match("q.b.test", "/x/1") or FAIL).route.host == "*.b.test"
    assert t.match("q.b.test", "/") is None
    assert t.match("a.b.test", "/") is None  # "*.a.b.test" needs a label in front


FAIL = RouteMatch(service=cond_svc("fail", Route("fail")), route=Route("fail"))


def test_many_routes_told_apart_by_one_header_value() -> None:
    tenants = [
        cond_svc(
            f"t{i}",
            Route(
                "mt.test", "/", match=RouteConditions(headers=(hv("x-tenant", "exact", f"t{i}"),))
            ),
        )
        for i in range(8)
    ]
    both = cond_svc(
        "both",
        Route(
            "mt.test",
            "/",
            match=RouteConditions(headers=(hv("x-tenant", "exact", "t2"), hv("x-b", "present"))),
        ),
    )
    t = RouteTable.build(view_of([*tenants, both, cond_svc("rest", Route("mt.test", "/"))]))

    def name(*hdrs: tuple[bytes, bytes]) -> str | None:
        m = t.match("mt.test", "/x", "GET", list(hdrs))
        return m.service.name if m else None

    assert name((b"x-tenant", b"t3")) == "t3"
    assert name((b"x-tenant", b"t5"), (b"x-tenant", b"t1")) == "t1"  # the first in order
    assert name((b"x-tenant", b"t9")) == "rest"
    assert name() == "rest"
    assert name((b"x-tenant", b"t2"), (b"x-b", b"")) == "both"  # two conditions rank first
    _, rows = t.explain("mt.test", "/x", "GET", [(b"x-tenant", b"t4")])
    assert [r["service"] for r in rows] == ["both", "t0", "t1", "t2", "t3", "t4"]


def test_a_path_that_is_not_absolute_matches_no_route() -> None:
    assert name_of("shop.test", "*") is None  # OPTIONS * (asterisk form)
    assert name_of("a.shop.test", "") is None


def test_a_view_with_the_same_services_keeps_its_table() -> None:
    from dataclasses import replace as copy

    view = view_of([svc("a", ("x.test", "/")), svc("b", ("y.test", "/"))])
    table = RouteTable.build(view)
    health_only = copy(view, revision=2, services=MappingProxyType(dict(view.services)))
    assert RouteTable.build(health_only, previous=table) is table
    changed = copy(
        view, services=MappingProxyType({**view.services, "b": svc("b", ("z.test", "/"))})
    )
    rebuilt = RouteTable.build(changed, previous=table)
    assert rebuilt is not table and rebuilt.match("z.test", "/") is not None
    fewer = copy(view, services=MappingProxyType({"a": view.services["a"]}))
    assert RouteTable.build(fewer, previous=table).match("y.test", "/") is None


def test_a_health_write_in_etcd_does_not_rebuild_the_route_table() -> None:
    from federation.model import HealthState, Observation
    from federation.view import DecodeCache
    from tests.federation.test_view import LAYOUT, base_facts

    facts, cache = base_facts(), DecodeCache()
    first = facts.view(cache=cache)
    table = RouteTable.build(first)
    obs = Observation("gw-a", "a", "shop", "a", HealthState.HEALTHY)
    facts.put(LAYOUT.health_summary("a", "shop"), [obs])
    health = facts.view(previous=first, cache=cache)
    assert RouteTable.build(health, previous=table) is table
    shop = health.services["shop"]
    facts.put(LAYOUT.service("shop"), copy_service(shop, routes=(Route("new.test", "/"),)))
    changed = facts.view(previous=health, cache=cache)
    assert RouteTable.build(changed, previous=table).match("new.test", "/") is not None


def copy_service(s: Service, **changes: object) -> Service:
    from dataclasses import replace as copy

    return copy(s, **changes)  # type: ignore[arg-type]
