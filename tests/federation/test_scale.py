"""100 clusters against a real etcd, simulated peers: convergence, and cost follows change.

400 services of 5 routes in 20 clusters each, 2 gateways per cluster (200 gateway
records; per cluster the follower's report and the leader's summary, one key per own
service, as the real writers write them). One watcher
(what every gateway runs) must converge to etcd, and a health write must not rebuild
the route table (counted: config rebuilds, and the identity of ``view.services``).
"""

from __future__ import annotations

import time

from federation import codec
from federation.devstack.shape import (
    Shape,
    chunks,
    config_puts,
    gateway_value,
    health_value,
    summary_puts,
)
from federation.etcd import EtcdClient, Put
from federation.model import HealthState
from tests.federation.test_watch import LAYOUT, assert_equals_etcd, running_watcher
from tests.support.etcd import EtcdCluster

SHAPE = Shape(clusters=100, services=400, routes=5, per_service=20, gateways=2)


async def populate(client: EtcdClient) -> int:
    rev = 0
    for batch in chunks(config_puts(SHAPE, LAYOUT)):
        ok, rev = await client.txn([], batch)
        assert ok
    runs_in = SHAPE.services_in()
    peers: list[Put] = []
    for cluster in SHAPE.cluster_names():
        leader, *followers = SHAPE.gateway_ids(cluster)
        for gw in (leader, *followers):
            peers.append(Put(LAYOUT.gateway(cluster, gw), gateway_value(cluster, gw)))
        for gw in followers:
            value = health_value(cluster, gw, runs_in[cluster], at=1.0)
            peers.append(Put(LAYOUT.health_report(cluster, gw), value))
        peers += summary_puts(LAYOUT, cluster, leader, runs_in[cluster], at=1.0)
    for batch in chunks(iter(peers)):
        ok, rev = await client.txn([], batch)
        assert ok
    return rev


async def test_100_clusters_converge_and_health_writes_never_rebuild_routes(
    etcd: EtcdCluster,
) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        rev = await populate(client)
        async with running_watcher(etcd.endpoints) as run:
            started = time.monotonic()
            view = await run.reaches(rev, timeout=30)
            cold = time.monotonic() - started
            assert len(view.clusters) == 100 and len(view.services) == 400
            assert len(view.gateways) == 200
            await assert_equals_etcd(client, run)
            stats = run.watcher.stats
            rebuilds = stats.config_rebuilds
            services = view.services
            updates = stats.update_attempt

            # a burst of health writes in 25 clusters: the followers' reports (no view
            # work at all) and, in one cluster, its leader's summary of two services
            runs_in = SHAPE.services_in()
            target = SHAPE.cluster_names()[3]
            down = frozenset(runs_in[target][:2])
            decoded = run.watcher.state.stats.decoded
            for cluster in SHAPE.cluster_names()[:25]:
                _, follower = SHAPE.gateway_ids(cluster)
                d = down if cluster == target else frozenset()
                rev = await client.put(
                    LAYOUT.health_report(cluster, follower),
                    health_value(cluster, follower, runs_in[cluster], at=2.0, down=d),
                )
            puts = summary_puts(LAYOUT, target, SHAPE.gateway_ids(target)[0], runs_in[target],
                                at=2.0, down=down, only=down)  # fmt: skip
            _, rev = await client.txn([], puts)
            view = await run.reaches(rev, timeout=30)
            assert stats.config_rebuilds == rebuilds and view.services is services
            assert stats.update_attempt - updates <= 26  # coalesced: at most one per write
            assert run.watcher.state.stats.decoded - decoded == 2  # the two summary keys
            for name in down:
                assert view.health_of(name, target).state is HealthState.UNHEALTHY  # type: ignore[union-attr]
            # the pairs assessed follow what the writes touched, not the 8,000 that exist
            assert stats.health_pairs < 8000 + 25 * 2 * 80

            # a gateway record update (applied revision): no rebuild, no health work
            pairs = stats.health_pairs
            gw = SHAPE.gateway_ids(target)[0]
            rev = await client.put(
                LAYOUT.gateway(target, gw), gateway_value(target, gw, applied=rev)
            )
            view = await run.reaches(rev)
            assert view.services is services and stats.health_pairs == pairs

            # a service change: one config rebuild, only its pairs re-assessed
            changed = SHAPE.service(7, generation=1)
            rev = await client.put(LAYOUT.service(changed.name), codec.encode(changed))
            view = await run.reaches(rev)
            assert (
                view.services is not services and view.services[changed.name].port == changed.port
            )
            assert stats.config_rebuilds == rebuilds + 1
            assert stats.health_pairs - pairs <= 20
            await assert_equals_etcd(client, run)
            assert cold < 30
