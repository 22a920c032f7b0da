"""The watcher's list phase (real etcd): each page decoded while the next is read.

The first view is built from items decoded page by page as they arrive; what it
rejects, and how a compaction in the middle of the list is met, must be what a
one-shot read and build of the same prefix gives.
"""

from __future__ import annotations

import gc

from federation import codec
from federation.etcd import EtcdClient, Put
from federation.model import Endpoint
from federation.view import load_view, same_content
from tests.federation.test_view import cluster, service
from tests.federation.test_watch import LAYOUT, assert_equals_etcd, running_watcher
from tests.support.etcd import EtcdCluster
from tests.support.wait import async_wait_for

PAGE = 4  # keys per listed page: the bad values below sit in middle pages


async def _seed(client: EtcdClient) -> int:
    ops = [Put(LAYOUT.federation(), codec.encode({"name": "acme"}))]
    ops += [Put(LAYOUT.cluster(f"c{i:02d}"), codec.encode(cluster(f"c{i:02d}"))) for i in range(12)]
    ops += [
        Put(LAYOUT.service(f"s{i:02d}"), codec.encode(service(f"s{i:02d}", ("c00", "c01"))))
        for i in range(8)
    ]
    ok, revision = await client.txn([], ops)
    assert ok
    return revision


def _spy_pages(client: EtcdClient, on_page: object = None) -> list[int]:
    """Record the revision each listed page asks for (0 = the first page of a list)."""
    seen: list[int] = []
    original = client.get_range_page

    async def spy(key: bytes, end: bytes, *, revision: int = 0, limit: int = 0):  # type: ignore[no-untyped-def]
        seen.append(revision)
        if callable(on_page):
            await on_page(seen)
        return await original(key, end, revision=revision, limit=limit)

    client.get_range_page = spy  # type: ignore[method-assign]
    return seen


async def test_bad_values_in_middle_pages_are_rejected_as_a_one_shot_build(
    etcd: EtcdCluster,
) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        await _seed(client)
        ok, rev = await client.txn(
            [],
            [
                Put(LAYOUT.cluster("c05"), b"\xff not json"),  # the value itself
                Put(LAYOUT.service("s03"), codec.encode(service("s03", ("c00", "nowhere")))),
                Put(  # an endpoint of another service than its key says
                    LAYOUT.endpoints("s01", "c01", "static"),
                    codec.encode([Endpoint("10.0.0.1:80", "c01", "s02", source="static")]),
                ),
                Put(
                    LAYOUT.endpoints("s01", "c00", "static"),
                    codec.encode([Endpoint("10.0.0.2:80", "c00", "s01", source="static")]),
                ),
            ],
        )
        assert ok
        truth = await load_view(client, LAYOUT)  # one read, one build, no decoding ahead
        async with running_watcher(etcd.endpoints, list_page=PAGE) as run:
            view = await run.reaches(rev)
            assert same_content(view, truth) and view.rejected == truth.rejected
            assert {r.key for r in view.rejected} == {
                LAYOUT.cluster("c05"),
                LAYOUT.service("s03"),
                LAYOUT.endpoints("s01", "c01", "static"),
            }
            assert "c05" not in view.clusters and "s03" not in view.services
            assert [e.address for e in view.endpoints_of("s01", "c00")] == ["10.0.0.2:80"]
            assert run.watcher.stats.full_reloads == 1
            assert run.watcher.stats.update_rejected == 1

            # a reload (after a compaction) that finds a bad value where the last view
            # had a good one: rejected, the previous value kept, as on any update
            good = await run.reaches(rev)
            rev = await client.put(LAYOUT.cluster("c05"), codec.encode(cluster("c05")))
            good = await run.reaches(rev)
            assert "c05" in good.clusters
            await run.stop()
            await client.put(LAYOUT.cluster("c08"), codec.encode(cluster("c08", tier=1)))
            rev = await client.put(LAYOUT.cluster("c07"), b"[1, 2]")
            await client.compact(rev)  # the watch would resume below it: a reload
            seen = _spy_pages(run.client)
            run.start()
            view = await run.reaches(rev)
            assert len(seen) > 3 and set(seen[1:]) == {rev}  # paged, at one revision
            assert view.clusters["c07"] == good.clusters["c07"]
            assert [r.key for r in view.rejected if r.key.startswith(LAYOUT.cluster(""))] == [
                LAYOUT.cluster("c07")
            ]
            stats = run.watcher.stats
            assert stats.compactions == 1 and stats.full_reloads == 2


async def test_a_compaction_during_the_list_gives_a_clean_reload(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        await _seed(client)
        compacted: list[int] = []

        async def compact_once(seen: list[int]) -> None:
            # the second page of the first list: a write, then a compaction past the
            # list's revision, so the pages still to read are gone
            if len(seen) == 2 and not compacted:
                await client.put(LAYOUT.cluster("late"), codec.encode(cluster("late")))
                rev = await client.put(LAYOUT.cluster("c02"), b"\xff not json")
                await client.compact(rev)
                compacted.append(rev)

        async with running_watcher(etcd.endpoints, list_page=PAGE) as run:
            seen = _spy_pages(run.client, compact_once)
            await async_wait_for(lambda: compacted, timeout=10.0, what="a compaction mid-list")
            view = await assert_equals_etcd(client, run)
            assert view.revision == compacted[0]
            assert "late" in view.clusters and "c02" not in view.clusters
            assert [r.key for r in view.rejected] == [LAYOUT.cluster("c02")]
            stats = run.watcher.stats
            assert stats.compactions == 1 and stats.full_reloads == 1
            assert stats.update_attempt == 1  # no view was built from the cut-off list
            assert seen.count(0) == 2  # the list started over, at a new revision


async def test_no_collection_walks_the_listed_items_before_the_first_view(
    etcd: EtcdCluster,
) -> None:
    """The list, its decoding and the build run with the collector paused until the
    build's objects are frozen: before, the list ran with it on (collections walking
    the listed items), and the first allocations after the build's pause collected the
    young generation holding the whole new view (150-240 ms at 1,000 clusters)."""
    async with EtcdClient(etcd.endpoints) as client:
        await _seed(client)
        for start in range(0, 1200, 100):  # enough listed objects to reach a collection
            ok, _ = await client.txn(
                [],
                [
                    Put(LAYOUT.cluster(f"x{i:04d}"), codec.encode(cluster(f"x{i:04d}")))
                    for i in range(start, start + 100)
                ],
            )
            assert ok
        collections: list[int] = []
        listing = [False]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start" and listing[0] and not run.views:
                collections.append(info["generation"])

        async def first_page(seen: list[int]) -> None:
            listing[0] = True

        gc.callbacks.append(on_gc)
        try:
            async with running_watcher(etcd.endpoints, list_page=100) as run:
                _spy_pages(run.client, first_page)
                view = await assert_equals_etcd(client, run)
                assert len(view.clusters) == 1212
        finally:
            gc.callbacks.remove(on_gc)
        assert listing[0] and collections == []
