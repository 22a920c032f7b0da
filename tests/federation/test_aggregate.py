"""federation.aggregate: observations of live observers -> ServiceHealth per (service, cluster)."""

from __future__ import annotations

import dataclasses

from federation.aggregate import DEGRADED_ERROR_RATE, aggregate, assess, score
from federation.model import (
    ANY,
    Cluster,
    Endpoint,
    GatewayRecord,
    HealthState,
    Observation,
    Route,
    Service,
    ServiceHealth,
)

CLUSTERS = {
    "a": Cluster(name="a", region="r1", cloud="aws", environment="prod"),
    "b": Cluster(name="b", region="r2", cloud="gcp", environment="prod"),
    "c": Cluster(name="c", region="r3", cloud="onprem", environment="prod", tier=1),
}
SVC = Service(name="web", routes=(Route(host="x.test"),), port=80, clusters=("a", "b", "c"))
GATEWAYS = {f"gw-{c}": GatewayRecord(id=f"gw-{c}", cluster=c) for c in CLUSTERS}


def eps(cluster: str, n: int = 3) -> tuple[Endpoint, ...]:
    return tuple(
        Endpoint(address=f"10.0.0.{i}:80", cluster=cluster, service="web") for i in range(n)
    )


ENDPOINTS = {("web", c): eps(c) for c in CLUSTERS}


def obs(
    observer_cluster: str,
    cluster: str,
    state: HealthState = HealthState.HEALTHY,
    *,
    observer: str | None = None,
    healthy: int = 3,
    total: int = 3,
    error_rate: float = 0.0,
    latency_ms: float = 0.0,
    at: float = 100.0,
) -> Observation:
    return Observation(
        observer=observer or f"gw-{observer_cluster}",
        observer_cluster=observer_cluster,
        service="web",
        cluster=cluster,
        state=state,
        healthy=healthy,
        total=total,
        error_rate=error_rate,
        latency_ms=latency_ms,
        at=at,
    )


def run(
    observations: list[Observation],
    *,
    gateways: dict[str, GatewayRecord] | None = None,
    previous: dict[tuple[str, str], ServiceHealth] | None = None,
    now: float = 1000.0,
) -> dict[tuple[str, str], ServiceHealth]:
    return dict(
        aggregate(
            services={"web": SVC},
            clusters=CLUSTERS,
            endpoints=ENDPOINTS,
            gateways=GATEWAYS if gateways is None else gateways,
            observations=observations,
            previous=previous or {},
            now=now,
        )
    )


def everyone_sees_all_healthy() -> list[Observation]:
    return [obs(o, c) for o in CLUSTERS for c in CLUSTERS]


def test_every_service_cluster_pair_is_assessed() -> None:
    result = run(everyone_sees_all_healthy())
    assert set(result) == {("web", "a"), ("web", "b"), ("web", "c")}
    for h in result.values():
        assert h.state is HealthState.HEALTHY
        assert h.score == 1.0
        assert (h.healthy_endpoints, h.total_endpoints, h.observers) == (3, 3, 3)
        assert h.since == 1000.0


def test_no_observation_is_unknown_with_a_lower_score() -> None:
    h = run([])[("web", "a")]
    assert h.state is HealthState.UNKNOWN
    assert 0.0 < h.score < 1.0
    assert (h.healthy_endpoints, h.total_endpoints) == (3, 3)


def test_no_endpoints_at_all_is_unhealthy() -> None:
    h = assess("web", "a", endpoints=(), observations=())
    assert h.state is HealthState.UNHEALTHY and h.score == 0.0


def test_one_lying_observer_cannot_take_a_cluster_out() -> None:
    liar = obs("b", "a", HealthState.UNHEALTHY, observer="liar", healthy=0, total=3)
    gateways = {**GATEWAYS, "liar": GatewayRecord(id="liar", cluster="b")}
    h = run([*everyone_sees_all_healthy(), liar], gateways=gateways)[("web", "a")]
    assert h.state is HealthState.DEGRADED  # a minority vote: noted, not fatal
    assert h.down_votes == 1 and h.observers == 4
    assert h.score > 0.5


def test_lying_own_cluster_observer_cannot_hide_endpoints() -> None:
    liar = obs("a", "a", HealthState.UNHEALTHY, observer="liar", healthy=0, total=3)
    gateways = {**GATEWAYS, "liar": GatewayRecord(id="liar", cluster="a")}
    h = run([*everyone_sees_all_healthy(), liar], gateways=gateways)[("web", "a")]
    assert h.state is HealthState.DEGRADED
    assert h.healthy_endpoints == 3


def test_majority_of_live_observers_takes_a_cluster_out() -> None:
    down = [obs("b", "a", HealthState.UNHEALTHY), obs("c", "a", HealthState.UNHEALTHY)]
    h = run([obs("a", "a"), *down])[("web", "a")]
    assert h.state is HealthState.UNHEALTHY
    assert h.down_votes == 2 and h.score == 0.0


def test_half_is_not_a_majority() -> None:
    h = run([obs("a", "a"), obs("b", "a", HealthState.UNHEALTHY)])[("web", "a")]
    assert h.state is HealthState.DEGRADED


def test_observations_of_dead_observers_are_ignored() -> None:
    down = [obs("b", "a", HealthState.UNHEALTHY), obs("c", "a", HealthState.UNHEALTHY)]
    alive = {"gw-a": GATEWAYS["gw-a"]}  # b and c lost their leases
    h = run([obs("a", "a"), *down], gateways=alive)[("web", "a")]
    assert h.state is HealthState.HEALTHY and h.observers == 1


def test_own_cluster_is_authoritative_for_endpoint_counts() -> None:
    # the remote observers only see the gateway answering; the own gateway sees no endpoint
    h = run([obs("a", "a", HealthState.UNHEALTHY, healthy=0), obs("b", "a"), obs("c", "a")])[
        ("web", "a")
    ]
    assert h.state is HealthState.UNHEALTHY
    assert (h.healthy_endpoints, h.total_endpoints) == (0, 3)


def test_some_endpoints_down_is_degraded_with_a_lower_score() -> None:
    h = run([obs("a", "a", HealthState.DEGRADED, healthy=1), obs("b", "a")])[("web", "a")]
    assert h.state is HealthState.DEGRADED
    assert h.healthy_endpoints == 1
    assert abs(h.score - 1 / 3) < 0.01


def test_error_rate_above_threshold_is_degraded() -> None:
    rate = DEGRADED_ERROR_RATE * 2
    observations = [obs(o, "a", error_rate=rate, latency_ms=5.0) for o in CLUSTERS]
    h = run(observations)[("web", "a")]
    assert h.state is HealthState.DEGRADED
    assert h.error_rate == rate and h.latency_ms == 5.0


def test_error_rate_and_latency_use_the_median_of_observers_with_traffic() -> None:
    observations = [
        obs("a", "a", error_rate=0.01, latency_ms=10.0),
        obs("b", "a", error_rate=0.9, latency_ms=900.0),  # an outlier
        obs("c", "a", error_rate=0.02, latency_ms=12.0),
    ]
    h = run(observations)[("web", "a")]
    assert h.error_rate == 0.02 and h.latency_ms == 12.0
    assert h.state is HealthState.HEALTHY


def test_score_orders_by_share_errors_and_latency() -> None:
    full = score(HealthState.HEALTHY, healthy=3, total=3, error_rate=0.0, latency_ms=0.0)
    slow = score(HealthState.HEALTHY, healthy=3, total=3, error_rate=0.0, latency_ms=250.0)
    erring = score(HealthState.DEGRADED, healthy=3, total=3, error_rate=0.2, latency_ms=0.0)
    partial = score(HealthState.DEGRADED, healthy=1, total=3, error_rate=0.0, latency_ms=0.0)
    assert full == 1.0
    assert slow == 0.5
    assert erring < full and partial < full
    assert score(HealthState.UNHEALTHY, healthy=3, total=3, error_rate=0, latency_ms=0) == 0.0


def test_since_is_kept_while_the_state_is_unchanged() -> None:
    first = run(everyone_sees_all_healthy(), now=1000.0)
    second = run(everyone_sees_all_healthy(), previous=first, now=1005.0)
    assert second[("web", "a")].since == 1000.0
    down = [o for o in everyone_sees_all_healthy() if o.cluster != "a"] + [
        obs(o, "a", HealthState.UNHEALTHY, healthy=0) for o in CLUSTERS
    ]
    third = run(down, previous=second, now=1010.0)
    assert third[("web", "a")].state is HealthState.UNHEALTHY
    assert third[("web", "a")].since == 1010.0
    assert third[("web", "b")].since == 1000.0


def test_newest_observation_per_observer_wins() -> None:
    old = obs("b", "a", HealthState.UNHEALTHY, at=1.0)
    new = obs("b", "a", HealthState.HEALTHY, at=2.0)
    h = run([new, old, obs("c", "a", HealthState.UNHEALTHY)])[("web", "a")]
    assert h.observers == 2 and h.down_votes == 1


def test_unknown_cluster_names_are_skipped() -> None:
    svc = Service(name="web", routes=(Route(host="x.test"),), port=80, clusters=("a", "zz"))
    result = aggregate(
        services={"web": svc},
        clusters=CLUSTERS,
        endpoints=ENDPOINTS,
        gateways=GATEWAYS,
        observations=(),
        previous={},
        now=1.0,
    )
    assert set(result) == {("web", "a")}


# ------------------------------------------- cluster-wide opinions: exceptions and markers


def marker(observer_cluster: str, observer: str | None = None) -> Observation:
    """'I ping every other cluster; those I list no exception for are reachable.'"""
    o = obs(observer_cluster, ANY, observer=observer)
    return dataclasses.replace(o, service=ANY)


def unreachable(observer_cluster: str, cluster: str, observer: str | None = None) -> Observation:
    o = obs(observer_cluster, cluster, HealthState.UNHEALTHY, observer=observer, healthy=0)
    return dataclasses.replace(o, service=ANY, total=1)


FIVE = {f"gw-{c}": GatewayRecord(id=f"gw-{c}", cluster=c) for c in ("a", "b", "c", "d", "e")}


def run5(observations: list[Observation]) -> dict[tuple[str, str], ServiceHealth]:
    clusters = {c: Cluster(name=c, region=c, cloud="aws", environment="prod") for c in "abcde"}
    svc = Service(name="web", routes=(Route(host="x.test"),), port=80, clusters=tuple("abcde"))
    return dict(
        aggregate(
            services={"web": svc},
            clusters=clusters,
            endpoints={("web", c): eps(c) for c in clusters},
            gateways=FIVE,
            observations=observations,
            previous={},
            now=1.0,
        )
    )


def own_and_markers() -> list[Observation]:
    return [obs(c, c) for c in "abcde"] + [marker(c) for c in "abcde"]


def test_markers_are_silent_healthy_votes() -> None:
    h = run5(own_and_markers())
    for c in "abcde":
        assert h[("web", c)].state is HealthState.HEALTHY
        assert h[("web", c)].observers == 5  # its own gateway + the 4 others' markers


def test_one_lying_cluster_wide_exception_cannot_take_a_cluster_out() -> None:
    h = run5([*own_and_markers(), unreachable("b", "a")])[("web", "a")]
    assert h.state is HealthState.DEGRADED and h.down_votes == 1 and h.observers == 5


def test_a_majority_of_cluster_wide_exceptions_takes_a_cluster_out() -> None:
    down = [unreachable(c, "a") for c in "bcd"]  # 3 of the 4 other clusters
    h = run5([*own_and_markers(), *down])
    assert h[("web", "a")].state is HealthState.UNHEALTHY
    assert all(h[("web", c)].state is HealthState.HEALTHY for c in "bcde")


def test_a_partitioned_cluster_is_judged_by_the_others() -> None:
    """Cluster a is cut off: it reaches nobody, nobody reaches it. Its own gateway still
    sees its endpoints healthy; the others take it out; its votes take nobody out."""
    cut = [unreachable("a", c) for c in "bcde"] + [unreachable(c, "a") for c in "bcde"]
    h = run5([*own_and_markers(), *cut])
    assert h[("web", "a")].state is HealthState.UNHEALTHY
    for c in "bcde":
        assert h[("web", c)].state is HealthState.DEGRADED  # one down vote of five
        assert h[("web", c)].down_votes == 1


def test_unknown_exception_is_no_opinion_and_dead_markers_do_not_vote() -> None:
    none = dataclasses.replace(unreachable("b", "a"), state=HealthState.UNKNOWN)
    h = run5([*own_and_markers(), none])[("web", "a")]
    assert h.observers == 4 and h.state is HealthState.HEALTHY
    alive = [o for o in own_and_markers() if o.observer_cluster in "ab"]
    h = run5([*alive, marker("c", observer="dead")])[("web", "a")]
    assert h.observers == 2  # a's own gateway and b's marker; "dead" holds no lease
