"""Host and path matching over a routing view (gateway.routing)."""

from __future__ import annotations

from federation.model import Route, Service
from gateway.routing import RouteTable, split_host
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
