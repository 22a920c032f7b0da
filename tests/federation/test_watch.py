"""ViewWatcher against a real etcd: list-then-watch, rejections, resume, compaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from federation import codec
from federation.etcd import EtcdClient, Put
from federation.keys import KeyLayout
from federation.model import Endpoint, GatewayRecord, RoutingView
from federation.view import load_view, same_content
from federation.watch import ViewWatcher
from tests.federation.test_view import cluster, service
from tests.support.etcd import EtcdCluster
from tests.support.wait import async_wait_for

LAYOUT = KeyLayout("/fedgate/")


@dataclass
class Running:
    watcher: ViewWatcher
    client: EtcdClient
    views: list[RoutingView] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.watcher.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def reaches(self, revision: int, timeout: float = 10.0) -> RoutingView:
        try:
            await async_wait_for(
                lambda: self.watcher.view.revision >= revision,
                timeout=timeout,
                what=f"watcher at revision {revision}",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; watcher stats: {self.watcher.stats.as_dict()}") from None
        return self.watcher.view


@contextlib.asynccontextmanager
async def running_watcher(
    endpoints: list[str], *, snapshot_path: str | None = None, **kw: object
) -> AsyncIterator[Running]:
    client = EtcdClient(endpoints, timeout=2.0)
    views: list[RoutingView] = []
    watcher = ViewWatcher(
        client,
        LAYOUT,
        on_view=views.append,
        snapshot_path=snapshot_path,
        **kw,  # type: ignore[arg-type]
    )
    run = Running(watcher, client, views)
    run.start()
    try:
        yield run
    finally:
        await run.stop()
        await client.close()


async def seed(client: EtcdClient) -> int:
    ops = [
        Put(LAYOUT.federation(), codec.encode({"name": "acme"})),
        Put(LAYOUT.cluster("a"), codec.encode(cluster("a"))),
        Put(LAYOUT.cluster("b"), codec.encode(cluster("b", tier=1))),
        Put(LAYOUT.service("shop"), codec.encode(service("shop", ("a", "b")))),
    ]
    ok, revision = await client.txn([], ops)
    assert ok
    return revision


async def assert_equals_etcd(client: EtcdClient, run: Running) -> RoutingView:
    truth = await load_view(client, LAYOUT)
    view = await run.reaches(truth.revision)
    assert view.revision == truth.revision
    assert same_content(view, truth)
    return view


async def test_list_then_watch(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        rev = await seed(client)
        async with running_watcher(etcd.endpoints) as run:
            view = await run.reaches(rev)
            assert set(view.services) == {"shop"} and view.federation == "acme"
            assert run.watcher.stats.full_reloads == 1
            rev = await client.put(
                LAYOUT.endpoints("shop", "a", "kubernetes"),
                codec.encode([Endpoint("10.0.0.1:80", "a", "shop", source="kubernetes")]),
            )
            view = await run.reaches(rev)
            assert [e.address for e in view.endpoints_of("shop", "a")] == ["10.0.0.1:80"]
            rev = await client.put(
                LAYOUT.gateway("a", "gw1"), codec.encode(GatewayRecord(id="gw1", cluster="a"))
            )
            view = await run.reaches(rev)
            assert "gw1" in view.gateways
            # gateway keys change the view's revision, not its config revision
            assert view.config_revision < rev
            rev = await client.delete(LAYOUT.service("shop"))
            view = await run.reaches(rev)
            assert view.services == {} and view.config_revision == rev
            await assert_equals_etcd(client, run)
            stats = run.watcher.stats
            assert stats.full_reloads == 1 and stats.revision == rev
            assert stats.update_attempt == stats.update_success == len(run.views)
            # every view was a new object, handed over once
            assert len({id(v) for v in run.views}) == len(run.views)


async def test_invalid_item_rejected_previous_kept_and_counted(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        rev = await seed(client)
        async with running_watcher(etcd.endpoints) as run:
            good = await run.reaches(rev)
            ok, rev = await client.txn(
                [],
                [
                    Put(LAYOUT.service("shop"), codec.encode(service("shop", ("a", "nowhere")))),
                    Put(LAYOUT.cluster("c"), codec.encode(cluster("c"))),
                ],
            )
            assert ok
            view = await run.reaches(rev)
            assert view.services["shop"] == good.services["shop"]  # previous value serves
            assert "c" in view.clusters  # the rest applied
            assert [r.key for r in view.rejected] == [LAYOUT.service("shop")]
            assert "unknown cluster 'nowhere'" in view.rejected[0].error
            stats = run.watcher.stats
            assert stats.update_rejected == 1 and stats.rejected_items == 1
            assert stats.revision == rev
            rev = await client.put(LAYOUT.service("shop"), b"\xff not json")
            view = await run.reaches(rev)
            assert view.services["shop"] == good.services["shop"]
            assert stats.update_rejected == 2
            # fixed: accepted, and the rejection is gone
            rev = await client.put(
                LAYOUT.service("shop"), codec.encode(service("shop", ("a", "c")))
            )
            view = await run.reaches(rev)
            assert view.services["shop"].clusters == ("a", "c") and view.rejected == ()
            assert stats.update_attempt == stats.update_success + stats.update_rejected


async def test_a_transaction_is_one_view(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        rev = await seed(client)
        async with running_watcher(etcd.endpoints) as run:
            await run.reaches(rev)
            before = len(run.views)
            ops = [Put(LAYOUT.cluster(f"x{i}"), codec.encode(cluster(f"x{i}"))) for i in range(40)]
            ok, rev = await client.txn([], ops)
            assert ok
            view = await run.reaches(rev)
            assert len(run.views) == before + 1
            assert {f"x{i}" for i in range(40)} <= set(view.clusters)


async def test_resume_after_compaction_reloads_everything(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        rev = await seed(client)
        async with running_watcher(etcd.endpoints) as run:
            await run.reaches(rev)
            await run.stop()  # cut off
            for i in range(60):
                rev = await client.put(
                    LAYOUT.cluster(f"c{i % 7}"), codec.encode(cluster(f"c{i % 7}", tier=i))
                )
            await client.delete(LAYOUT.cluster("c0"))
            rev = await client.put(LAYOUT.federation(), codec.encode({"name": "acme2"}))
            await client.compact(rev)
            run.start()  # resumes from its revision: compacted -> full reload
            await assert_equals_etcd(client, run)
            stats = run.watcher.stats
            assert stats.compactions == 1 and stats.full_reloads == 2
            assert run.watcher.view.federation == "acme2" and "c0" not in run.watcher.view.clusters


async def test_progress_requests_keep_an_idle_stream(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        rev = await seed(client)
        async with running_watcher(etcd.endpoints, progress_interval=0.1) as run:
            await run.reaches(rev)
            reconnects = run.watcher.stats.reconnects
            await async_wait_for(
                lambda: run.watcher.stats.progress_notifies >= 3, timeout=10, what="progress"
            )
            # idle, answered: the same stream, and the revision did not move
            assert run.watcher.stats.reconnects == reconnects
            assert run.watcher.revision == rev
            rev = await client.put(LAYOUT.cluster("a"), codec.encode(cluster("a", tier=5)))
            await run.reaches(rev)


async def test_a_cancel_that_meets_an_event_stops_the_watcher(etcd: EtcdCluster) -> None:
    """On Python 3.11 ``asyncio.wait_for`` drops a cancel that arrives as the awaited
    future completes; the watcher waited on its queue that way, so a gateway told to stop
    while a watch event came in kept watching and never exited (`fedgate serve` hung on
    SIGTERM about 1 time in 4). Every cancel, landing among a stream of events, ends the
    watcher at once."""
    async with EtcdClient(etcd.endpoints) as client:
        await seed(client)
        writing = True

        async def writer() -> None:
            n = 0
            while writing:  # a bounded stream: stopped below, each put one round trip
                n += 1
                await client.put(LAYOUT.gateway("a", "gw1"), codec.encode(
                    GatewayRecord(id="gw1", cluster="a", applied_revision=n)))  # fmt: skip

        feed = asyncio.ensure_future(writer())
        try:
            for round_ in range(15):
                watcher_client = EtcdClient(etcd.endpoints, timeout=2.0)
                watcher = ViewWatcher(watcher_client, LAYOUT, on_view=lambda v: None)
                task = asyncio.ensure_future(watcher.run())
                await watcher.wait_ready(10.0)
                await asyncio.sleep(0.003 * (round_ % 5))  # pacing: land among the events
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=3.0)
                assert task in done, f"round {round_}: the watcher ignored its cancel"
                await watcher_client.close()
        finally:
            writing = False
            await feed
