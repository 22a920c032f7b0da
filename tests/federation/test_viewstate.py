"""The incremental view (federation.viewstate): equal to a full build, cost follows change."""

from __future__ import annotations

import random
from types import MappingProxyType

from federation import codec
from federation.etcd import KV
from federation.keys import KeyLayout
from federation.model import ANY, Endpoint, GatewayRecord, HealthState, Observation, RoutingView
from federation.view import build_view, same_content
from federation.viewstate import ViewState
from tests.federation.test_view import cluster, service

LAYOUT = KeyLayout("/fedgate/")
CLUSTERS = ("a", "b", "c")
SERVICES = ("s1", "s2", "s3")
GATEWAYS = (("a", "ga"), ("a", "ga2"), ("b", "gb"), ("c", "gc"))  # ga, ga2: leaders of a


class Store:
    """A fake etcd keyspace that records each step's delta."""

    def __init__(self) -> None:
        self.kvs: dict[str, KV] = {}
        self.revision = 1
        self.floor = 0
        self.delta: dict[str, KV | None] = {}

    def put(self, key: str, value: bytes | object) -> None:
        data = value if isinstance(value, bytes) else codec.encode(value)
        self.revision += 1
        old = self.kvs.get(key)
        kv = KV(key, data, self.revision, old.create_revision if old else self.revision, 0)
        self.kvs[key] = kv
        self.delta[key] = kv

    def delete(self, key: str) -> None:
        if key in self.kvs:
            self.revision += 1
            del self.kvs[key]
            self.delta[key] = None
            parsed = LAYOUT.parse(key)
            if parsed is not None and parsed.is_config:
                self.floor = self.revision

    def take(self) -> dict[str, KV | None]:
        delta, self.delta = self.delta, {}
        return delta


def random_step(rng: random.Random, s: Store) -> None:
    roll = rng.random()
    if roll < 0.15:
        name = rng.choice(CLUSTERS)
        if rng.random() < 0.2:
            s.delete(LAYOUT.cluster(name))
        elif rng.random() < 0.1:
            s.put(LAYOUT.cluster(name), b"{broken")
        else:
            s.put(LAYOUT.cluster(name), cluster(name, tier=rng.randint(0, 2)))
    elif roll < 0.3:
        name = rng.choice(SERVICES)
        where = tuple(rng.sample(CLUSTERS, rng.randint(1, 3)))
        if rng.random() < 0.15:
            s.delete(LAYOUT.service(name))
        elif rng.random() < 0.1:
            s.put(LAYOUT.service(name), service(name, ("nowhere",)))
        else:
            static = {where[0]: (f"10.9.0.{rng.randint(1, 3)}:80",)} if rng.random() < 0.5 else {}
            s.put(LAYOUT.service(name), service(name, where, endpoints=MappingProxyType(static)))
    elif roll < 0.45:
        cl, gw = rng.choice(GATEWAYS)
        if rng.random() < 0.3:
            s.delete(LAYOUT.gateway(cl, gw))
        else:
            s.put(
                LAYOUT.gateway(cl, gw),
                GatewayRecord(id=gw, cluster=cl, applied_revision=rng.randint(0, 9)),
            )
    elif roll < 0.7:
        svc, cl = rng.choice(SERVICES), rng.choice(CLUSTERS)
        src = rng.choice(("ga", "gb"))
        key = LAYOUT.endpoints(svc, cl, src)
        if rng.random() < 0.2:
            s.delete(key)
        else:
            eps = [
                Endpoint(f"10.0.0.{i}:80", cl, svc, source=src, terminating=rng.random() < 0.2)
                for i in range(rng.randint(0, 3))
            ]
            s.put(key, eps)
    elif roll < 0.95:
        cl, gw = rng.choice(GATEWAYS)  # the leader, then another one of its cluster
        name = rng.choice((*SERVICES, ANY))
        key = LAYOUT.health_summary(cl, name)
        if rng.random() < 0.15:
            s.delete(key)
        elif rng.random() < 0.05:
            s.put(key, b"[1,")
        elif rng.random() < 0.05:  # a report: never decoded by the view
            s.put(LAYOUT.health_report(cl, gw), b"[1,")
        elif name != ANY:  # the cluster's summary of one of its services
            state = rng.choice(list(HealthState))
            s.put(key, [Observation(gw, cl, name, cl, state, rng.randint(0, 2), 2,
                                    at=float(s.revision))])  # fmt: skip
        else:
            obs = [
                Observation(
                    observer=gw,
                    observer_cluster=cl,
                    service=svc,
                    cluster=target,
                    state=rng.choice(list(HealthState)),
                    healthy=rng.randint(0, 2),
                    total=2,
                    at=float(s.revision),
                )
                for svc in (*SERVICES, ANY)  # ANY: cluster-wide exceptions
                for target in CLUSTERS
                if target != cl and rng.random() < 0.4
            ]
            if rng.random() < 0.6:  # the marker: it pings every other cluster
                obs.append(Observation(gw, cl, ANY, ANY, HealthState.HEALTHY, 2, 2, at=1.0))
            s.put(key, obs)
    else:
        s.put(f"{LAYOUT.prefix}unknown/{rng.randint(0, 2)}", b"x")


def test_incremental_equals_a_full_build_over_random_changes() -> None:
    for seed in range(8):
        rng = random.Random(seed)
        store = Store()
        state = ViewState(LAYOUT)
        view = RoutingView()
        for _ in range(100):
            for _ in range(rng.randint(1, 4)):  # a few changes per update, like one response
                random_step(rng, store)
            delta = store.take()
            view = state.apply(delta, revision=store.revision, now=1.0, config_floor=store.floor)
            truth = build_view(
                store.kvs,
                layout=LAYOUT,
                revision=store.revision,
                previous=view,
                now=1.0,
                config_floor=store.floor,
            )
            assert same_content(view, truth), f"seed {seed} revision {store.revision}"
            assert view.config_revision == truth.config_revision


def test_a_health_or_endpoint_write_keeps_the_config_objects() -> None:
    store = Store()
    store.put(LAYOUT.federation(), {"name": "acme"})
    for name in CLUSTERS:
        store.put(LAYOUT.cluster(name), cluster(name))
    store.put(LAYOUT.service("s1"), service("s1", CLUSTERS))
    store.put(LAYOUT.gateway("a", "ga"), GatewayRecord(id="ga", cluster="a"))
    state = ViewState(LAYOUT)
    first = state.apply(store.take(), revision=store.revision, now=1.0)
    assert state.stats.config_rebuilds == 1
    obs = Observation("ga", "a", "s1", "b", HealthState.UNHEALTHY, 0, 1, at=2.0)
    store.put(LAYOUT.health_summary("a", ANY), [obs])
    second = state.apply(store.take(), revision=store.revision, now=2.0)
    assert second.services is first.services and second.clusters is first.clusters
    assert second.endpoints is first.endpoints and second.gateways is first.gateways
    assert second.health is not first.health and state.stats.config_rebuilds == 1
    assert state.stats.health_pairs == 3 + 1  # the first build, then only the pair observed
    store.put(LAYOUT.endpoints("s1", "c", "ga"), [Endpoint("10.0.0.1:80", "c", "s1", source="ga")])
    third = state.apply(store.take(), revision=store.revision, now=3.0)
    assert third.services is first.services and third.endpoints is not second.endpoints
    assert state.stats.config_rebuilds == 1 and state.stats.health_pairs == 5
    # a gateway record update that keeps it live re-assesses nothing
    store.put(LAYOUT.gateway("a", "ga"), GatewayRecord(id="ga", cluster="a", applied_revision=9))
    fourth = state.apply(store.take(), revision=store.revision, now=4.0)
    assert fourth.health is third.health and state.stats.health_pairs == 5
    assert fourth.gateways["ga"].applied_revision == 9
    # a service change rebuilds config and re-assesses that service's pairs only
    store.put(LAYOUT.service("s1"), service("s1", ("a", "b")))
    state.apply(store.take(), revision=store.revision, now=5.0)
    assert (
        state.stats.config_rebuilds == 2 and state.stats.health_pairs == 5 + 2
    )  # (s1, c) left: dropped, not assessed
