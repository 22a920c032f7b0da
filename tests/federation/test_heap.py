"""The view's memory: kept out of the collector's walks, runtime bytes not kept twice."""

from __future__ import annotations

import gc

from federation import codec
from federation.etcd import EtcdClient
from federation.model import HealthState, Observation
from federation.viewstate import ViewState
from tests.federation.test_view import LAYOUT, base_facts
from tests.federation.test_watch import running_watcher, seed
from tests.support.etcd import EtcdCluster


async def test_a_cold_load_is_frozen_out_of_later_collections(etcd: EtcdCluster) -> None:
    """Before: a full collection walked the whole view (200-500 ms at 1,000 clusters, the
    event loop blocked); after the first list the view is in the permanent generation."""
    gc.unfreeze()
    try:
        async with EtcdClient(etcd.endpoints) as client:
            rev = await seed(client)
            async with running_watcher(etcd.endpoints) as run:
                view = await run.reaches(rev)
                assert gc.get_freeze_count() > 0 and gc.isenabled()
                shop = view.services["shop"]
                assert not any(o is shop for o in gc.get_objects())  # what collections walk
                assert run.watcher.stats.list_ms > 0 and run.watcher.stats.build_ms > 0
    finally:
        gc.unfreeze()


def test_health_bytes_are_dropped_once_decoded_and_a_replay_is_recognised() -> None:
    f = base_facts()
    obs = [Observation("gw-a", "a", "shop", "a", HealthState.HEALTHY, healthy=1, total=1)]
    f.put(LAYOUT.health_summary("a", "shop"), obs)
    state = ViewState(LAYOUT)
    view = state.apply(dict(f.kvs), revision=f.revision, now=1.0)
    key = LAYOUT.health_summary("a", "shop")
    assert state.kvs[key].value == b"" and view.observations == tuple(obs)
    assert state.kvs[LAYOUT.service("shop")].value  # config values are kept (apply diffs)
    decoded = state.stats.decoded
    again = state.apply({key: f.kvs[key]}, revision=f.revision, now=1.0)  # a replay
    assert state.stats.decoded == decoded and again.observations == view.observations
    changed = [Observation("gw-a", "a", "shop", "a", HealthState.UNHEALTHY, total=1)]
    f.put(key, changed)
    # same mod revision, other bytes (another etcd): decoded again, not taken for a replay
    moved = f.kvs[key]
    forged = type(moved)(key, codec.encode(changed), state.kvs[key].mod_revision, 0, 0)
    after = state.apply({key: forged}, revision=f.revision, now=1.0)
    assert after.observations == tuple(changed)
