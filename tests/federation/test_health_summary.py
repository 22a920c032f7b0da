"""A cluster's summary from its gateways' local views, and the federation over summaries.

The quorum guarantees of docs/failover.md, with one summary per cluster: a lying gateway
is outvoted inside its cluster; a lying cluster (or a lying leader) is one vote among the
clusters; a partitioned cluster is judged by the others.
"""

from __future__ import annotations

from types import MappingProxyType

from federation.aggregate import aggregate
from federation.health_summary import combine, compact, summary_name
from federation.model import ANY, Endpoint, GatewayRecord, HealthState, Observation
from tests.federation.test_view import cluster, service

UP, DOWN, UNSURE = HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.UNKNOWN


def own(gw: str, c: str, svc: str, state: HealthState, healthy: int, total: int) -> Observation:
    return Observation(gw, c, svc, c, state, healthy, total, at=1.0)


def unreachable(gw: str, c: str, other: str) -> Observation:
    return Observation(gw, c, ANY, other, DOWN, 0, 1, at=1.0)


def marker(gw: str, c: str, pinged: int) -> Observation:
    return Observation(gw, c, ANY, ANY, UP, pinged, pinged, at=1.0)


def test_a_lying_gateway_cannot_hide_its_clusters_endpoints() -> None:
    views = {
        "a1": [own("a1", "a", "shop", UP, 2, 2)],
        "liar": [own("liar", "a", "shop", DOWN, 0, 2)],
    }
    (line,) = combine("a", "a1", views, now=5.0)["shop"]
    assert (line.healthy, line.total) == (2, 2)  # the gateway that sees most
    assert line.state is HealthState.DEGRADED  # a minority of a's gateways says down
    assert (line.observer, line.observer_cluster, line.at) == ("a1", "a", 5.0)


def test_a_majority_of_the_clusters_gateways_decides() -> None:
    three = {g: [own(g, "a", "shop", DOWN, 1, 2)] for g in ("a1", "a2")}
    three["a3"] = [own("a3", "a", "shop", UP, 2, 2)]
    assert combine("a", "a1", three, now=1.0)["shop"][0].state is DOWN  # 2 of 3
    nobody = {g: [own(g, "a", "shop", DOWN, 0, 2)] for g in ("a1", "a2")}
    assert combine("a", "a1", nobody, now=1.0)["shop"][0].state is DOWN  # none healthy


def test_remote_clusters_unreachable_only_by_a_majority_of_the_gateways() -> None:
    views = {
        "a1": [unreachable("a1", "a", "b"), marker("a1", "a", 2)],
        "a2": [marker("a2", "a", 2)],
        "a3": [unreachable("a3", "a", "b"), unreachable("a3", "a", "c"), marker("a3", "a", 2)],
    }
    wide = combine("a", "a1", views, now=1.0)[ANY]
    exceptions = {o.cluster: o.state for o in wide if o.service == ANY and o.cluster != ANY}
    assert exceptions == {"b": DOWN}  # b: 2 of 3; c: 1 of 3, reachable for cluster a
    (mark,) = [o for o in wide if o.cluster == ANY]
    assert (mark.healthy, mark.total) == (1, 2)
    assert all(summary_name(o) == ANY for o in wide)


def test_a_report_leaves_out_what_is_fully_healthy() -> None:
    view = [own("a2", "a", "shop", UP, 2, 2), own("a2", "a", "cart", UP, 1, 2),
            own("a2", "a", "new", UNSURE, 0, 1), marker("a2", "a", 3)]  # fmt: skip
    report = compact(view)
    assert {o.service for o in report} == {"cart", "new", ANY}
    leader = [own("a1", "a", "shop", UP, 1, 2), own("a1", "a", "cart", UP, 1, 2),
              own("a1", "a", "new", UP, 1, 1)]  # fmt: skip
    summary = combine("a", "a1", {"a1": leader, "a2": report}, now=1.0)
    assert (summary["shop"][0].healthy, summary["shop"][0].total) == (2, 2)  # a2: all up
    assert summary["cart"][0].state is HealthState.DEGRADED
    assert summary["new"][0].healthy == 1  # a2 had not probed it yet: no opinion
    alone = combine("a", "a2", {"a2": [own("a2", "a", "x", UNSURE, 0, 1)]}, now=1.0)
    assert "x" not in alone  # nobody has an opinion: no line (not "no healthy endpoint")


def federation_of(
    summaries: dict[str, list[Observation]],
) -> dict[tuple[str, str], HealthState]:
    names = sorted(summaries)
    health = aggregate(
        services=MappingProxyType({"shop": service("shop", tuple(names))}),
        clusters=MappingProxyType({n: cluster(n) for n in names}),
        endpoints=MappingProxyType(
            {("shop", n): (Endpoint(f"10.0.0.{i}:80", n, "shop"),) for i, n in enumerate(names)}
        ),
        gateways=MappingProxyType({f"{n}1": GatewayRecord(f"{n}1", n) for n in names}),
        observations=[o for obs in summaries.values() for o in obs],
        previous=MappingProxyType({}),
        now=1.0,
    )
    return {key: h.state for key, h in health.items()}


def summary_of(c: str, others: list[str], cut: frozenset[str] = frozenset()) -> list[Observation]:
    views = {
        f"{c}1": [
            own(f"{c}1", c, "shop", UP, 1, 1),
            *(unreachable(f"{c}1", c, o) for o in others if o in cut),
            marker(f"{c}1", c, len(others)),
        ]
    }
    return [o for obs in combine(c, f"{c}1", views, now=1.0).values() for o in obs]


def test_a_partitioned_cluster_is_judged_by_the_others() -> None:
    names = ["a", "b", "c", "d", "p"]
    summaries = {
        n: summary_of(n, [o for o in names if o != n], frozenset("p" if n != "p" else names))
        for n in names
    }
    states = federation_of(summaries)
    assert states[("shop", "p")] is DOWN  # every other cluster's summary: unreachable
    assert all(states[("shop", n)] is not DOWN for n in "abcd")  # p's view: one vote each


def test_one_lying_cluster_summary_cannot_take_another_cluster_out() -> None:
    names = ["a", "b", "c", "d"]
    summaries = {n: summary_of(n, [o for o in names if o != n]) for n in names}
    summaries["a"] = summary_of("a", ["b", "c", "d"], frozenset("b"))  # a's leader lies about b
    states = federation_of(summaries)
    assert states[("shop", "b")] is HealthState.DEGRADED  # one vote of three
