"""The watch under the failures etcd's robustness tests and Jepsen found in clients.

- a 3-member cluster: SIGKILL the leader while writes continue; every watcher
  converges to the same view as a linearizable read;
- etcd stopped for 10 s or more: the view is kept (marked stale), then converges;
- a watcher cut off, 500 changes, compaction, reconnect: a full reload, equal to etcd;
- 1,000 two-key transactions in a burst: no watcher ever shows half of one;
- a start from the snapshot with etcd down, then catch-up without a restart;
- a frozen member (SIGSTOP: connection open, no answers) is detected and left.

(The SIGKILLed gateway that vanishes within TTL + 2 s is in test_liveness.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType

import pytest

from federation import codec
from federation.etcd import EtcdClient, EtcdUnavailable, Put
from federation.keys import KeyLayout
from federation.model import RoutingView, Service
from federation.snapshot import load_snapshot
from federation.view import load_view, same_content
from federation.watch import ViewWatcher
from tests.federation.test_view import cluster, service
from tests.federation.test_watch import Running, assert_equals_etcd, seed
from tests.support.etcd import EtcdCluster
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.slow

LAYOUT = KeyLayout("/fedgate/")


@contextlib.asynccontextmanager
async def watchers(endpoint_lists: list[list[str]], **kw: object) -> AsyncIterator[list[Running]]:
    runs = []
    for endpoints in endpoint_lists:
        client = EtcdClient(endpoints, timeout=2.0)
        views: list[RoutingView] = []
        watcher = ViewWatcher(client, LAYOUT, on_view=views.append, **kw)  # type: ignore[arg-type]
        run = Running(watcher, client, views)
        run.start()
        runs.append(run)
    try:
        yield runs
    finally:
        for run in runs:
            await run.stop()
            await run.client.close()


async def put_retrying(client: EtcdClient, ops: list[Put], *, deadline: float = 20.0) -> int:
    """A writer that keeps going through an election: retry while etcd is unavailable."""
    end = time.monotonic() + deadline
    while True:
        try:
            ok, revision = await client.txn([], ops)
            assert ok
            return revision
        except EtcdUnavailable:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.05)  # pacing: back off before the next try


def rotations(endpoints: list[str]) -> list[list[str]]:
    """Each watcher starts on a different member."""
    return [endpoints[i:] + endpoints[:i] for i in range(len(endpoints))]


async def test_leader_sigkill_while_writing_every_watcher_converges(etcd3: EtcdCluster) -> None:
    async with EtcdClient(etcd3.endpoints, timeout=3.0) as client:
        await seed(client)
        async with watchers(rotations(etcd3.endpoints) * 2) as runs:
            killed = asyncio.Event()

            async def writer() -> int:
                rev = 0
                for i in range(150):
                    if i == 50:
                        etcd3.kill(etcd3.leader())  # the leader dies mid-stream
                        killed.set()
                    ops = [
                        Put(
                            LAYOUT.cluster(f"w{i % 10}"),
                            codec.encode(cluster(f"w{i % 10}", tier=i)),
                        )
                    ]
                    rev = await put_retrying(client, ops)
                return rev

            last = await asyncio.wait_for(writer(), 60)
            assert killed.is_set()
            truth = await load_view(client, LAYOUT)  # linearizable read
            assert truth.revision >= last
            for run in runs:
                view = await run.reaches(truth.revision, timeout=20)
                assert view.revision == truth.revision
                assert same_content(view, truth)
                assert not view.stale
            # the watchers that were on the dead leader reconnected elsewhere
            assert any(run.watcher.stats.reconnects >= 1 for run in runs)


async def test_etcd_down_10s_view_kept_then_converges(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        rev = await seed(client)
        async with watchers([etcd.endpoints]) as (run,):
            good = await run.reaches(rev)
            etcd.stop()
            down_at = time.monotonic()
            # the view keeps serving the whole time; it is marked stale once a reconnect failed
            await async_wait_for(lambda: run.watcher.view.stale, timeout=10, what="stale")
            while time.monotonic() - down_at < 10.0:
                view = run.watcher.view
                assert same_content(view, good) and view.revision == good.revision
                await asyncio.sleep(0.2)  # pacing: sampling the view during the outage
            assert run.watcher.stats.failures >= 2
            etcd.restart()
            rev = await client.put(LAYOUT.cluster("after"), codec.encode(cluster("after")))
            view = await run.reaches(rev, timeout=15)
            assert "after" in view.clusters and not view.stale
            await assert_equals_etcd(client, run)
            # it resumed the watch: no reload was needed
            assert run.watcher.stats.full_reloads == 1


async def test_cut_off_500_changes_compaction_full_reload(etcd3: EtcdCluster) -> None:
    """A watcher on one member; that member stops; 500 changes and a compaction on the
    others; the member returns: the watcher's resume is refused, it reloads everything."""
    async with EtcdClient(etcd3.endpoints, timeout=3.0) as client:
        rev = await seed(client)
        lonely = etcd3.members[2]
        others = [m.client_url for m in etcd3.members[:2]]
        async with watchers([[lonely.client_url]]) as (run,):
            await run.reaches(rev)
            await async_wait_for(lambda: run.watcher.stats.watching, what="watching")
            etcd3.stop_member(lonely)
            async with EtcdClient(others, timeout=3.0) as writer:
                for i in range(500):
                    key = LAYOUT.cluster(f"n{i % 50}")
                    if i % 25 == 24:
                        rev = await writer.delete(key)
                    else:
                        rev = await writer.put(key, codec.encode(cluster(f"n{i % 50}", tier=i)))
                await writer.compact(rev)
            assert run.watcher.view.revision < rev  # it saw none of it
            etcd3.restart_member(lonely)
            truth = await load_view(client, LAYOUT)
            view = await run.reaches(truth.revision, timeout=20)
            assert same_content(view, truth) and view.revision == truth.revision
            stats = run.watcher.stats
            assert stats.compactions >= 1 and stats.full_reloads >= 2


async def test_a_frozen_member_is_detected_and_left(etcd3: EtcdCluster) -> None:
    """SIGSTOP the member a watcher streams from: the connection stays open but nothing
    comes back. The unanswered progress request gives it away; the watcher moves on."""
    async with EtcdClient(etcd3.endpoints, timeout=3.0) as client:
        rev = await seed(client)
        frozen = etcd3.members[0]
        others = [m.client_url for m in etcd3.members[1:]]
        async with watchers([etcd3.endpoints], progress_interval=0.3) as (run,):
            await run.reaches(rev)
            await async_wait_for(lambda: run.watcher.stats.watching, what="watching")
            assert frozen.proc is not None
            os.kill(frozen.proc.pid, signal.SIGSTOP)
            try:
                async with EtcdClient(others, timeout=3.0) as writer:
                    for i in range(20):
                        ops = [Put(LAYOUT.cluster(f"f{i}"), codec.encode(cluster(f"f{i}")))]
                        rev = await put_retrying(writer, ops)
                    view = await run.reaches(rev, timeout=30)
                    assert "f19" in view.clusters
                    truth = await load_view(writer, LAYOUT)
                    view = await run.reaches(truth.revision, timeout=10)
                    assert same_content(view, truth)
                assert run.watcher.stats.reconnects >= 1
            finally:
                os.kill(frozen.proc.pid, signal.SIGCONT)


async def test_burst_of_1000_two_key_transactions_never_half_applied(etcd: EtcdCluster) -> None:
    """Each transaction writes two services with the same generation: every view any
    watcher ever exposes shows both at the same generation."""

    def pair(name: str, generation: int) -> Put:
        svc = dataclasses.replace(service(name, ("a",)), max_body_bytes=generation)
        return Put(LAYOUT.service(name), codec.encode(svc))

    async with EtcdClient(etcd.endpoints) as client:
        await seed(client)
        await client.txn([], [pair("left", 0), pair("right", 0)])
        async with watchers([etcd.endpoints] * 3) as runs:
            torn: list[tuple[int, int | None, int | None]] = []

            def check(view: RoutingView) -> None:
                left: Service | None = view.services.get("left")
                right: Service | None = view.services.get("right")
                if (left and left.max_body_bytes) != (right and right.max_body_bytes):
                    torn.append(
                        (
                            view.revision,
                            left.max_body_bytes if left else None,
                            right.max_body_bytes if right else None,
                        )
                    )

            for run in runs:
                run.watcher._on_view = lambda v, r=run: (r.views.append(v), check(v))  # type: ignore[method-assign]

            async def burst(start: int) -> int:
                rev = 0
                for gen in range(start, 1000, 4):
                    ok, rev = await client.txn([], [pair("left", gen + 1), pair("right", gen + 1)])
                    assert ok
                return rev

            await asyncio.gather(*(burst(s) for s in range(4)))
            truth = await load_view(client, LAYOUT)
            for run in runs:
                view = await run.reaches(truth.revision, timeout=30)
                assert same_content(view, truth)
            assert torn == []
            assert all(len(run.views) > 1 for run in runs)


async def test_start_from_snapshot_with_etcd_down_then_catch_up(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    snapshot = str(tmp_path / "view.json")
    async with EtcdClient(etcd.endpoints) as client:
        rev = await seed(client)
        # a first gateway run writes the snapshot
        async with watchers([etcd.endpoints], snapshot_path=snapshot) as (run,):
            first = await run.reaches(rev)
        assert load_snapshot(snapshot) is not None
    etcd.stop()
    async with watchers([etcd.endpoints], snapshot_path=snapshot) as (run,):
        view = await run.watcher.wait_ready(timeout=15)
        assert view.source == "snapshot" and view.stale
        # the snapshot keeps the routing facts, not the runtime health (docs/etcd.md)
        routing = dataclasses.replace(first, observations=(), health=MappingProxyType({}))
        assert same_content(view, routing) and view.revision == first.revision
        assert run.watcher.stats.snapshot_loaded
        etcd.restart()
        async with EtcdClient(etcd.endpoints) as client:
            rev = await client.put(LAYOUT.cluster("late"), codec.encode(cluster("late")))
            view = await run.reaches(rev, timeout=15)
            assert view.source == "etcd" and not view.stale and "late" in view.clusters
            await assert_equals_etcd(client, run)
