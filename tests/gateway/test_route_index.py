"""The route index updated per changed service answers exactly as one built from
scratch (gateway.route_index), and shares what no change touched."""

from __future__ import annotations

import random
from dataclasses import replace
from types import MappingProxyType

from federation.model import (
    Route,
    RouteConditions,
    RoutingView,
    Service,
    ValueMatch,
    WeightedBackend,
)
from gateway.routing import RouteTable
from tests.gateway.harness import view_of

HOSTS = ["a.test", "b.test", "*.w.test", "*.x.w.test", "c.test"]
PREFIXES = ["/", "/api", "/api/v2/", "/b"]
NAMES = [f"s{i}" for i in range(12)]
REQUESTS = [
    (host, path, method, headers)
    for host in ["a.test", "b.test", "q.w.test", "q.x.w.test", "c.test", "none.test"]
    for path in ["/", "/api/x", "/api/v2/y", "/b", "/bx"]
    for method in ["GET", "POST"]
    for headers in [[], [(b"x-t", b"1")], [(b"x-t", b"2")]]
]


def random_route(rnd: random.Random) -> Route:
    match = None
    roll = rnd.random()
    if roll < 0.25:
        match = RouteConditions(headers=(ValueMatch("x-t", "exact", rnd.choice("12")),))
    elif roll < 0.35:
        match = RouteConditions(methods=frozenset({"POST"}))
    backends: tuple[WeightedBackend, ...] = ()
    if rnd.random() < 0.2:
        backends = tuple(WeightedBackend(n, 1) for n in rnd.sample(NAMES, 2))
    return Route(rnd.choice(HOSTS), rnd.choice(PREFIXES), match=match, backends=backends)


def random_service(rnd: random.Random, name: str) -> Service:
    routes = tuple(random_route(rnd) for _ in range(rnd.randint(1, 3)))
    return Service(name=name, routes=routes, port=80, clusters=("c1",))


def answers(table: RouteTable) -> list[object]:
    out: list[object] = [len(table)]
    for host, path, method, headers in REQUESTS:
        m = table.match(host, path, method, headers)
        out.append(
            None
            if m is None
            else (m.service.name, m.route, tuple(s.name for s in m.backends), m.cumulative)
        )
    return out


def test_updates_answer_like_a_fresh_build() -> None:
    rnd = random.Random(20261129)
    services = {n: random_service(rnd, n) for n in NAMES[:8]}
    view = view_of(list(services.values()))
    table = RouteTable.build(view)
    for step in range(150):
        action = rnd.random()
        name = rnd.choice(NAMES)
        if action < 0.6:
            services[name] = random_service(rnd, name)
        elif action < 0.8:
            services.pop(name, None)
        else:  # several at once
            for other in rnd.sample(NAMES, 3):
                services[other] = random_service(rnd, other)
        view = replace(view, services=MappingProxyType(dict(services)))
        before, old = answers(table), table
        table = RouteTable.build(view, previous=table)
        assert answers(table) == answers(RouteTable.build(view)), f"step {step}"
        assert answers(old) == before, f"step {step}: the previous table changed"


def test_an_update_shares_every_host_no_change_touched() -> None:
    services = [Service(f"s{i}", (Route(f"h{i}.test"),), 80, ("c1",)) for i in range(50)]
    view: RoutingView = view_of(services)
    table = RouteTable.build(view)
    changed = replace(services[7], routes=(Route("h7.test", "/new"),))
    after = RouteTable.build(
        replace(view, services=MappingProxyType({**view.services, "s7": changed})),
        previous=table,
    )
    old, new = table._index, after._index
    assert [h for h in new.exact if new.exact[h] is not old.exact[h]] == ["h7.test"]
    m = after.match("h7.test", "/new/x")
    assert m is not None and m.route.path_prefix == "/new"
    assert after.match("h7.test", "/") is None


def test_a_split_follows_its_backend_service_when_that_changes() -> None:
    front = Service(
        "front",
        (Route("f.test", backends=(WeightedBackend("v1", 1), WeightedBackend("v2", 1))),),
        80,
        ("c1",),
    )
    v1 = Service("v1", (Route("v1.test"),), 80, ("c1",))
    view = view_of([front, v1])
    table = RouteTable.build(view)
    m = table.match("f.test", "/")
    assert m is not None and [s.name for s in m.backends] == ["v1"]  # v2 is not in the view
    v2 = Service("v2", (Route("v2.test"),), 80, ("c1",))
    grown = RouteTable.build(
        replace(view, services=MappingProxyType({**view.services, "v2": v2})), previous=table
    )
    m = grown.match("f.test", "/")
    assert m is not None and [s.name for s in m.backends] == ["v1", "v2"]
    assert m.backends[1] is v2
