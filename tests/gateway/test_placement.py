"""gateway.placement: local first, tiers, weights, ordered, panic, failback, ejection, explain."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from itertools import pairwise
from types import MappingProxyType

import pytest

from federation.model import (
    Cluster,
    Endpoint,
    Failover,
    GatewayRecord,
    HealthState,
    Route,
    RoutingView,
    Service,
    ServiceHealth,
)
from gateway.placement import Placement

H, D, U, K = HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY, HealthState.UNKNOWN

CLUSTERS = {
    "aws": Cluster(name="aws", region="eu", cloud="aws", environment="prod", tier=0),
    "gcp": Cluster(name="gcp", region="eu", cloud="gcp", environment="prod", tier=0),
    "onprem": Cluster(name="onprem", region="fra", cloud="onprem", environment="prod", tier=1),
}


class Clock:
    def __init__(self, t: float = 10_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def service(**kw: object) -> Service:
    base = Service(
        name="web", routes=(Route(host="x.test"),), port=80, clusters=("aws", "gcp", "onprem")
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def view(
    health: dict[str, tuple[HealthState, float, int]] | None = None,
    *,
    endpoints: dict[str, int] | None = None,
    gateways: tuple[str, ...] = ("aws", "gcp", "onprem"),
    since: dict[str, float] | None = None,
    svc: Service | None = None,
) -> RoutingView:
    """health: cluster -> (state, score, healthy endpoints); endpoints: cluster -> count."""
    svc = svc or service()
    endpoints = endpoints or {c: 3 for c in CLUSTERS}
    eps = {
        ("web", c): tuple(
            Endpoint(address=f"10.{i}.0.1:80", cluster=c, service="web") for i in range(n)
        )
        for c, n in endpoints.items()
    }
    hmap = {}
    for c, (state, score, healthy) in (health or {}).items():
        hmap[("web", c)] = ServiceHealth(
            service="web",
            cluster=c,
            state=state,
            score=score,
            healthy_endpoints=healthy,
            total_endpoints=endpoints.get(c, 0),
            since=(since or {}).get(c, 0.0),
        )
    return RoutingView(
        revision=1,
        clusters=MappingProxyType(CLUSTERS),
        services=MappingProxyType({"web": svc}),
        endpoints=MappingProxyType(eps),
        gateways=MappingProxyType(
            {f"gw-{c}": GatewayRecord(id=f"gw-{c}", cluster=c) for c in gateways}
        ),
        health=MappingProxyType(hmap),
        source="etcd",
    )


ALL_HEALTHY = {"aws": (H, 1.0, 3), "gcp": (H, 1.0, 3), "onprem": (H, 1.0, 3)}


def firsts(p: Placement, v: RoutingView, svc: Service, n: int = 2000) -> Counter[str]:
    return Counter(p.plan(v, svc)[0] for _ in range(n))


def test_own_cluster_first_when_healthy() -> None:
    p = Placement("aws", clock=Clock(), rng=random.Random(1))
    v, svc = view(ALL_HEALTHY), service()
    assert firsts(p, v, svc, 200) == Counter({"aws": 200})
    plan = p.plan(v, svc)
    assert plan[0] == "aws" and set(plan) == {"aws", "gcp", "onprem"}
    assert plan[-1] == "onprem"  # tier 1 last among retries


def test_own_cluster_degraded_but_usable_still_first() -> None:
    p = Placement("aws", clock=Clock(), rng=random.Random(1))
    v = view({**ALL_HEALTHY, "aws": (D, 0.3, 1)})
    assert firsts(p, v, service(), 100) == Counter({"aws": 100})


def test_unhealthy_own_cluster_goes_to_the_same_tier_then_the_next() -> None:
    p = Placement("aws", clock=Clock(), rng=random.Random(1))
    v = view({**ALL_HEALTHY, "aws": (U, 0.0, 0)})
    assert p.plan(v, service()) == ("gcp", "onprem", "aws")  # the sick one only as last resort
    v = view({"aws": (U, 0.0, 0), "gcp": (U, 0.0, 0), "onprem": (H, 1.0, 3)})
    assert p.plan(v, service())[0] == "onprem"


def test_remote_choice_is_weighted_by_capacity_and_score() -> None:
    p = Placement("onprem", clock=Clock(), rng=random.Random(7))
    v = view({"aws": (H, 1.0, 3), "gcp": (D, 0.5, 2), "onprem": (U, 0.0, 0)})
    counts = firsts(p, v, service(), 4000)
    # weights 3*1.0 : 2*0.5 = 3 : 1
    assert set(counts) == {"aws", "gcp"}
    assert 0.70 < counts["aws"] / 4000 < 0.80


def test_lowest_tier_wins_even_when_a_higher_tier_scores_better() -> None:
    p = Placement("onprem", clock=Clock(), rng=random.Random(3))
    v = view({"aws": (D, 0.2, 1), "gcp": (U, 0.0, 0), "onprem": (U, 0.0, 0)})
    assert firsts(p, v, service(), 300) == Counter({"aws": 300})


def test_unknown_is_usable_with_a_lower_score() -> None:
    p = Placement("onprem", clock=Clock(), rng=random.Random(3))
    v = view({"aws": (H, 1.0, 3), "onprem": (U, 0.0, 0)})  # gcp: no health at all
    counts = firsts(p, v, service(), 3000)
    assert counts["aws"] > counts["gcp"] > 0


def test_clusters_without_a_live_gateway_are_excluded() -> None:
    p = Placement("aws", clock=Clock(), rng=random.Random(1))
    v = view({**ALL_HEALTHY, "aws": (U, 0.0, 0)}, gateways=("aws", "onprem"))
    plan = p.plan(v, service())
    assert "gcp" not in plan
    assert plan == ("onprem", "aws")
    rows = {r["cluster"]: r for r in p.explain(v, service())}
    assert "no live gateway" in str(rows["gcp"]["reason"])


def test_a_cluster_whose_gateway_certificates_expired_leaves_east_west_routing() -> None:
    clock = Clock()
    p = Placement("aws", clock=clock, rng=random.Random(1))
    v = view({**ALL_HEALTHY, "aws": (U, 0.0, 0)})
    gateways = dict(v.gateways)
    gateways["gw-gcp"] = replace(gateways["gw-gcp"], cert_not_after=clock.t + 30)
    v = replace(v, gateways=MappingProxyType(gateways))
    assert p.plan(v, service())[0] == "gcp"  # still valid: gcp serves
    clock.t += 31  # the same view: the cached plan must not outlive the certificate
    plan = p.plan(v, service())
    assert "gcp" not in plan and plan[0] == "onprem"
    rows = {r["cluster"]: r for r in p.explain(v, service())}
    assert "certificate" in str(rows["gcp"]["reason"])


def test_ordered_policy_is_honoured() -> None:
    svc = service(failover=Failover(policy="ordered", order=("onprem", "gcp", "aws")))
    p = Placement("aws", clock=Clock(), rng=random.Random(1))
    v = view(ALL_HEALTHY, svc=svc)
    assert p.plan(v, svc) == ("onprem", "gcp", "aws")
    v = view({**ALL_HEALTHY, "onprem": (U, 0.0, 0)}, svc=svc)
    assert p.plan(v, svc) == ("gcp", "aws", "onprem")


def test_panic_spreads_over_every_candidate_rather_than_failing_closed() -> None:
    p = Placement("aws", clock=Clock(), rng=random.Random(5))
    v = view({c: (U, 0.0, 0) for c in CLUSTERS})
    counts = firsts(p, v, service(), 3000)
    assert set(counts) == {"aws", "gcp", "onprem"}
    assert min(counts.values()) > 500
    rows = p.explain(v, service())
    assert all("panic" in str(r["reason"]) for r in rows)


def test_exclude_removes_tried_clusters() -> None:
    p = Placement("aws", clock=Clock(), rng=random.Random(1))
    v, svc = view(ALL_HEALTHY), service()
    assert p.plan(v, svc, exclude={"aws"})[0] == "gcp"
    assert p.plan(v, svc, exclude={"aws", "gcp"}) == ("onprem",)
    assert p.plan(v, svc, exclude={"aws", "gcp", "onprem"}) == ()


def test_local_failures_eject_at_once_then_probe_again() -> None:
    clock = Clock()
    p = Placement("aws", clock=clock, rng=random.Random(1), consecutive_failures=3, eject_for=2.0)
    v, svc = view(ALL_HEALTHY), service()
    for _ in range(2):
        p.local_failure("web", "aws")
    assert p.plan(v, svc)[0] == "aws"  # two failures: not yet
    p.local_failure("web", "aws")
    assert p.plan(v, svc)[0] == "gcp"  # ejected at once, locally
    rows = {r["cluster"]: r for r in p.explain(v, svc)}
    assert "ejected locally" in str(rows["aws"]["reason"])
    clock.t += 2.1
    # back on probation: it gets a little traffic again (ramping), one failure re-ejects
    assert firsts(p, v, svc, 500)["aws"] > 0
    p.local_failure("web", "aws")
    assert firsts(p, v, svc, 200)["aws"] == 0
    clock.t += 4.1  # the second ejection lasts twice as long
    assert firsts(p, v, svc, 500)["aws"] > 0
    p.local_success("web", "aws")
    p.local_failure("web", "aws")  # forgiven: one failure no longer ejects
    assert firsts(p, v, svc, 500)["aws"] > 0


def test_success_resets_the_consecutive_count() -> None:
    p = Placement("aws", clock=Clock(), rng=random.Random(1), consecutive_failures=3)
    v, svc = view(ALL_HEALTHY), service()
    for _ in range(10):
        p.local_failure("web", "aws")
        p.local_failure("web", "aws")
        p.local_success("web", "aws")
    assert p.plan(v, svc)[0] == "aws"


def test_local_probes_take_effect_before_the_shared_view() -> None:
    p = Placement("aws", clock=Clock(), rng=random.Random(1))
    v, svc = view(ALL_HEALTHY), service()
    p.local_endpoints("web", healthy=0, total=3)
    assert p.plan(v, svc)[0] == "gcp"
    rows = {r["cluster"]: r for r in p.explain(v, svc)}
    assert "local probes: 0/3" in str(rows["aws"]["reason"])
    p.local_endpoints("web", healthy=3, total=3)
    assert firsts(p, v, svc, 300)["gcp"] > 0  # ramping back, not all at once


def test_failback_ramps_linearly_without_flapping() -> None:
    clock = Clock()
    p = Placement("onprem", clock=clock, rng=random.Random(11))
    svc = service(failover=Failover(failback_window=10.0))
    up = view({"aws": (H, 1.0, 3), "gcp": (H, 1.0, 3), "onprem": (U, 0.0, 0)})
    down = view({"aws": (U, 0.0, 0), "gcp": (H, 1.0, 3), "onprem": (U, 0.0, 0)})
    assert 0.35 < firsts(p, up, svc)["aws"] / 2000 < 0.65
    clock.t += 1
    assert firsts(p, down, svc)["aws"] == 0
    clock.t += 5
    shares = []
    recovered = view(
        {"aws": (H, 1.0, 3), "gcp": (H, 1.0, 3), "onprem": (U, 0.0, 0)},
        since={"aws": clock.t},
    )
    assert firsts(p, recovered, svc, 2000)["aws"] / 2000 < 0.05  # floor until a try works
    p.local_success("web", "aws")  # the first try there succeeded: the ramp starts
    for _ in range(11):
        shares.append(firsts(p, recovered, svc, 2000)["aws"] / 2000)
        clock.t += 1.0
    assert shares[0] < 0.05  # ~0 right after recovery
    assert 0.35 < shares[-1] < 0.65  # full share (half of the tier) after the window
    # monotone up to sampling noise: no oscillation
    assert all(b >= a - 0.04 for a, b in pairwise(shares))
    assert 0.15 < shares[5] < 0.40


def test_a_cluster_that_flaps_ramps_back_more_slowly() -> None:
    clock = Clock()
    p = Placement("onprem", clock=clock, rng=random.Random(2))
    svc = service(failover=Failover(failback_window=10.0))
    up = view({"aws": (H, 1.0, 3), "gcp": (H, 1.0, 3), "onprem": (U, 0.0, 0)})
    down = view({"aws": (U, 0.0, 0), "gcp": (H, 1.0, 3), "onprem": (U, 0.0, 0)})
    p.plan(up, svc)
    for _ in range(3):  # down and up three times within a minute
        clock.t += 1
        p.plan(down, svc)
        clock.t += 1
        p.plan(view({"aws": (H, 1.0, 3), "gcp": (H, 1.0, 3), "onprem": (U, 0.0, 0)}), svc)
    clock.t += 10.0  # one plain window later the ramp is still under way
    share = firsts(p, up, svc, 2000)["aws"] / 2000
    assert share < 0.3


def test_startup_does_not_ramp() -> None:
    clock = Clock()
    p = Placement("aws", clock=clock, rng=random.Random(1))
    v = view(ALL_HEALTHY, since={c: clock.t for c in CLUSTERS})
    assert firsts(p, v, service(), 100) == Counter({"aws": 100})


def test_a_cluster_first_seen_usable_late_does_not_ramp() -> None:
    """A gateway's first plan may come while its view is still filling in (a remote
    cluster without a live gateway yet, its health not yet known). That absence is no
    recovery and no flap. Before: the cluster stayed at the floor until a try succeeded
    there, then ramped over the failback window, and the absence lengthened every later
    ramp (the e2e failover drill waited over 15 s for traffic on gcp under a CPU hog)."""
    clock = Clock()
    p = Placement("onprem", clock=clock, rng=random.Random(5))
    svc = service(failover=Failover(failback_window=10.0))
    healthy = {"aws": (H, 1.0, 3), "gcp": (H, 1.0, 3), "onprem": (U, 0.0, 0)}
    for _ in range(3):  # no live gateway in aws yet
        assert firsts(p, view(healthy, gateways=("gcp", "onprem")), svc)["aws"] == 0
        clock.t += 1
    assert 0.35 < firsts(p, view(healthy), svc)["aws"] / 2000 < 0.65  # full share at once
    # once seen usable, a real down and up ramps back over one plain window
    clock.t += 1
    p.plan(view({**healthy, "aws": (U, 0.0, 0)}), svc)
    clock.t += 1
    back = view(healthy)
    assert firsts(p, back, svc)["aws"] / 2000 < 0.05
    p.local_success("web", "aws")
    clock.t += 10.1
    assert 0.35 < firsts(p, back, svc)["aws"] / 2000 < 0.65


def test_own_cluster_recovery_ramps_back_from_remote() -> None:
    clock = Clock()
    p = Placement("aws", clock=clock, rng=random.Random(4))
    svc = service(failover=Failover(failback_window=4.0))
    assert p.plan(view(ALL_HEALTHY), svc)[0] == "aws"
    v_down = view({**ALL_HEALTHY, "aws": (U, 0.0, 0)})
    assert p.plan(v_down, svc)[0] == "gcp"
    clock.t += 1
    v_up = view(ALL_HEALTHY)
    p.plan(v_up, svc)
    p.local_success("web", "aws")
    early = firsts(p, v_up, svc, 1000)["aws"] / 1000
    clock.t += 2
    mid = firsts(p, v_up, svc, 1000)["aws"] / 1000
    clock.t += 2.5
    late = firsts(p, v_up, svc, 1000)["aws"] / 1000
    assert early < 0.1 < mid < 0.8 < late == 1.0


def test_plan_is_cached_per_view_and_service() -> None:
    p = Placement("aws", clock=Clock(), rng=random.Random(1))
    v, svc = view(ALL_HEALTHY), service()
    p.plan(v, svc)
    cached = p._plans["web"]
    p.plan(v, svc)
    assert p._plans["web"] is cached
    p.plan(view(ALL_HEALTHY), svc)  # a new view object: recomputed
    assert p._plans["web"] is not cached


def test_explain_lists_every_candidate_with_reasons() -> None:
    p = Placement("aws", clock=Clock(), rng=random.Random(1))
    v = view({"aws": (U, 0.0, 0), "gcp": (H, 0.9, 3), "onprem": (H, 1.0, 3)})
    rows = p.explain(v, service())
    assert [r["cluster"] for r in rows] == ["aws", "gcp", "onprem"]
    by = {r["cluster"]: r for r in rows}
    assert by["gcp"]["chosen"] is True
    assert by["aws"]["chosen"] is False and by["onprem"]["chosen"] is False
    assert by["gcp"]["share"] == 1.0 and by["gcp"]["tier"] == 0
    assert by["aws"]["state"] == "unhealthy" and "no healthy endpoint" in str(by["aws"]["reason"])
    assert "preferred" in str(by["onprem"]["reason"])
    for r in rows:
        assert set(r) >= {"cluster", "tier", "state", "score", "chosen", "reason"}


def test_own_cluster_without_endpoints_is_no_candidate() -> None:
    p = Placement("aws", clock=Clock(), rng=random.Random(1))
    v = view(ALL_HEALTHY, endpoints={"aws": 0, "gcp": 3, "onprem": 3})
    assert "aws" not in p.plan(v, service())


def test_manifest_view_trusts_the_east_west_url() -> None:
    clusters = {
        "aws": CLUSTERS["aws"],
        "gcp": replace(CLUSTERS["gcp"], east_west="http://127.0.0.2:1"),
        "onprem": CLUSTERS["onprem"],
    }
    v = replace(view(), clusters=MappingProxyType(clusters), source="manifest", health={})
    p = Placement("aws", clock=Clock(), rng=random.Random(1))
    assert p.plan(v, service()) == ("aws", "gcp")


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_threshold_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="consecutive_failures"):
        Placement("aws", consecutive_failures=bad)


def test_ramp_starts_when_usable_here_not_at_the_federations_since() -> None:
    clock = Clock()
    p = Placement("onprem", clock=clock, rng=random.Random(8))
    svc = service(failover=Failover(failback_window=4.0))
    health = {"aws": (H, 1.0, 3), "gcp": (H, 1.0, 3), "onprem": (U, 0.0, 0)}
    p.plan(view(health), svc)
    # gcp's gateway is gone for a while; the federation already calls it healthy again
    p.plan(view(health, gateways=("aws", "onprem")), svc)
    clock.t += 5.0
    back = view(health, since={"gcp": clock.t - 4.5})  # healthy "since" long ago
    p.plan(back, svc)
    p.local_success("web", "gcp")
    share = firsts(p, back, svc, 2000)["gcp"] / 2000
    assert share < 0.1  # ramps from ~0 now, not already at full share
    clock.t += 4.1
    assert 0.4 < firsts(p, back, svc, 2000)["gcp"] / 2000 < 0.6


def test_a_recovered_cluster_stays_at_the_floor_until_a_try_succeeds() -> None:
    clock = Clock()
    p = Placement("onprem", clock=clock, rng=random.Random(9))
    svc = service(failover=Failover(failback_window=2.0))
    up = view({"aws": (H, 1.0, 3), "gcp": (H, 1.0, 3), "onprem": (U, 0.0, 0)})
    p.plan(up, svc)
    p.plan(view({"aws": (U, 0.0, 0), "gcp": (H, 1.0, 3), "onprem": (U, 0.0, 0)}), svc)
    back = view({"aws": (H, 1.0, 3), "gcp": (H, 1.0, 3), "onprem": (U, 0.0, 0)})
    p.plan(back, svc)
    clock.t += 10.0  # long past the window, but e.g. its circuit breaker is still open
    assert firsts(p, back, svc, 2000)["aws"] / 2000 < 0.05
    rows = {r["cluster"]: r for r in p.explain(back, svc)}
    assert "ramping back" in str(rows["aws"]["reason"])
    p.local_failure("web", "aws")  # failures do not start the ramp
    assert firsts(p, back, svc, 2000)["aws"] / 2000 < 0.05
    p.local_success("web", "aws")
    clock.t += 1.0
    assert 0.15 < firsts(p, back, svc, 2000)["aws"] / 2000 < 0.35
    clock.t += 1.1
    assert 0.4 < firsts(p, back, svc, 2000)["aws"] / 2000 < 0.6


def test_a_just_started_gateway_keeps_its_own_cluster_while_others_vote_it_down() -> None:
    """A gateway's first plans come before its own probes report. Another cluster that
    pinged it before it listened (or while it was restarting) votes it unreachable, and
    with no summary of its own cluster yet that one vote is a majority: the federation
    sees the cluster unhealthy. Before: the gateway took that for its own cluster's
    health, sent its first requests to the tier-1 cluster, then ramped its own cluster
    back from 2 % over the failback window (tests/e2e/test_bad_input.py, under load)."""
    clock = Clock()
    p = Placement("aws", clock=clock, rng=random.Random(3))
    svc = service(clusters=("aws", "onprem"), failover=Failover(failback_window=5.0))
    voted_down = view({"aws": (U, 0.0, 3), "onprem": (H, 1.0, 3)}, svc=svc)
    assert firsts(p, voted_down, svc, 200) == Counter({"aws": 200})
    rows = {r["cluster"]: r for r in p.explain(voted_down, svc)}
    assert rows["aws"]["state"] == "unknown" and rows["aws"]["chosen"]
    assert "own cluster" in str(rows["aws"]["reason"])
    assert "probes have not reported yet" in str(rows["aws"]["reason"])  # and says why
    # its probes report: the whole share at once, nothing recovered, no ramp
    clock.t += 0.5
    p.local_endpoints("web", healthy=3, total=3)
    assert firsts(p, voted_down, svc, 200) == Counter({"aws": 200})
    rows = {r["cluster"]: r for r in p.explain(voted_down, svc)}
    assert "its own probes decide here" in str(rows["aws"]["reason"])
    # every other gateway still follows the federation's verdict (the quorum)
    other = Placement("onprem", clock=clock, rng=random.Random(3))
    assert firsts(other, voted_down, svc, 200) == Counter({"onprem": 200})
    # and the own cluster's own evidence still counts before the probes: its summary
    # (another gateway of the cluster) sees no healthy endpoint
    fresh = Placement("aws", clock=clock, rng=random.Random(3))
    dead = view({"aws": (U, 0.0, 0), "onprem": (H, 1.0, 3)}, svc=svc)
    assert fresh.plan(dead, svc)[0] == "onprem"


def test_own_cluster_unknown_and_remote_healthy_stays_local() -> None:
    p = Placement("aws", clock=Clock(), rng=random.Random(2))
    svc = service(clusters=("aws", "onprem"))
    v = view({"aws": (K, 0.5, 3), "onprem": (H, 1.0, 3)}, svc=svc)
    assert firsts(p, v, svc, 200) == Counter({"aws": 200})
    v = view({"onprem": (H, 1.0, 3)}, svc=svc)  # no summary of its own cluster at all
    assert firsts(p, v, svc, 200) == Counter({"aws": 200})
