"""The apply barrier, watcher side: barrier keys written by hand to a real etcd.

A multi-transaction apply puts ``applying``, writes chunks guarded by it, and its last
transaction writes the last chunk, ``generation`` and deletes ``applying``. No view may
show part of it.
"""

from __future__ import annotations

import json

from federation import codec
from federation.etcd import Delete, EtcdClient, Guard, Put
from federation.model import GatewayRecord, RoutingView
from tests.federation.test_view import cluster, service
from tests.federation.test_watch import LAYOUT, assert_equals_etcd, running_watcher, seed
from tests.support.etcd import EtcdCluster
from tests.support.wait import async_wait_for

NEW = [f"new{i}" for i in range(6)]


def applying(generation: int) -> bytes:
    return json.dumps(
        {"generation": generation, "by": "ops@host 1", "started": 1.0, "operations": 8}
    ).encode()


async def begin(client: EtcdClient, generation: int = 1) -> int:
    ok, rev = await client.txn(
        [Guard(LAYOUT.applying(), "version", "==", 0)],
        [Put(LAYOUT.applying(), applying(generation))],
    )
    assert ok
    return rev


async def chunk(client: EtcdClient, barrier: int, names: list[str]) -> int:
    ops = [Put(LAYOUT.service(n), codec.encode(service(n, ("a", "b")))) for n in names]
    ok, rev = await client.txn([Guard(LAYOUT.applying(), "mod", "==", barrier)], ops)
    assert ok
    return rev


async def finish(client: EtcdClient, barrier: int, names: list[str], generation: int = 1) -> int:
    ops: list[Put | Delete] = [
        Put(LAYOUT.service(n), codec.encode(service(n, ("a", "b")))) for n in names
    ]
    ops.append(
        Put(LAYOUT.generation(), json.dumps({"generation": generation, "applied": 2.0}).encode())
    )
    ops.append(Delete(LAYOUT.applying()))
    ok, rev = await client.txn([Guard(LAYOUT.applying(), "mod", "==", barrier)], ops)
    assert ok
    return rev


def whole(view: RoutingView) -> bool:
    """Either none of the new services or all of them."""
    present = [n in view.services for n in NEW]
    return all(present) or not any(present)


async def test_held_behind_the_barrier_then_applied_as_one_view(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        rev = await seed(client)
        async with running_watcher(etcd.endpoints) as run:
            await run.reaches(rev)
            barrier = await begin(client)
            c1 = await chunk(client, barrier, NEW[:2])
            c2 = await chunk(client, barrier, NEW[2:4])
            # runtime facts are never held
            ep_rev = await client.put(
                LAYOUT.gateway("a", "gw1"), codec.encode(GatewayRecord(id="gw1", cluster="a"))
            )
            view = await run.reaches(ep_rev)
            assert "gw1" in view.gateways
            assert not any(n in view.services for n in NEW)
            stats = run.watcher.stats
            assert stats.barrier == barrier and stats.held == 4 and c1 < c2 < ep_rev
            final = await finish(client, barrier, NEW[4:])
            view = await run.reaches(final)
            assert all(n in view.services for n in NEW)
            assert view.config_revision == final
            assert stats.barrier == 0 and stats.held == 0 and stats.barrier_releases == 1
            assert all(whole(v) for v in run.views)
            await assert_equals_etcd(client, run)


async def test_a_list_that_finds_the_barrier_reads_config_behind_it(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        rev = await seed(client)
        barrier = await begin(client)
        await chunk(client, barrier, NEW[:3])
        # a config change inside the apply: a cluster's tier
        ok, _ = await client.txn(
            [Guard(LAYOUT.applying(), "mod", "==", barrier)],
            [Put(LAYOUT.cluster("b"), codec.encode(cluster("b", tier=7)))],
        )
        assert ok
        async with running_watcher(etcd.endpoints) as run:
            view = await run.watcher.wait_ready(timeout=10)
            assert set(view.services) == {"shop"} and view.clusters["b"].tier == 1
            assert view.config_revision == rev
            assert run.watcher.stats.held == 4
            final = await finish(client, barrier, NEW[3:])
            view = await run.reaches(final)
            assert set(NEW) <= set(view.services) and view.clusters["b"].tier == 7
            assert all(whole(v) for v in run.views)
            await assert_equals_etcd(client, run)


async def test_barrier_behind_a_compacted_revision_keeps_the_last_config(
    etcd: EtcdCluster,
) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        rev = await seed(client)
        async with running_watcher(etcd.endpoints) as run:
            good = await run.reaches(rev)
            await run.stop()  # cut off while the apply runs
            barrier = await begin(client)
            last = await chunk(client, barrier, NEW[:3])
            await client.compact(last)
            run.start()  # its resume revision is compacted: a full list, behind a barrier
            await async_wait_for(
                lambda: run.watcher.stats.barrier_compacted == 1, timeout=10, what="reload"
            )
            view = run.watcher.view
            assert view.services == good.services and run.watcher.stats.held == 3
            final = await finish(client, barrier, NEW[3:])
            view = await run.reaches(final)
            assert set(NEW) <= set(view.services)
            assert all(whole(v) for v in run.views)
            await assert_equals_etcd(client, run)
