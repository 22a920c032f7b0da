"""One health leader per cluster against a real etcd: summary on change, takeover on lapse.

Two gateways of cluster ``a`` run a :class:`HealthLeader` each (what ``fedgate serve``
runs beside its reporter); their local views are given here. One leads: it folds the
other's report into the summary; when its lease lapses (its process is cut from etcd),
the other takes over and writes the summary again. The view decodes summaries only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from federation import codec
from federation.etcd import EtcdClient
from federation.health_leader import HealthLeader
from federation.health_summary import compact
from federation.keys import KeyLayout
from federation.liveness import GatewayLease
from federation.model import ANY, GatewayRecord, HealthState, Observation
from federation.view import load_view
from tests.federation.test_view import cluster, service
from tests.support.etcd import EtcdCluster
from tests.support.wait import async_wait_for

LAYOUT = KeyLayout("/h/")
TTL = 2.0
UP, DOWN = HealthState.HEALTHY, HealthState.UNHEALTHY


class LocalView:
    """One gateway's local view, as its ``HealthReporter`` hands it to the leader."""

    def __init__(self, gateway_id: str, healthy: int) -> None:
        self.cluster, self.gateway_id = "a", gateway_id
        self.view = self.of(healthy)
        self.sink: Callable[[tuple[Observation, ...]], None] | None = None
        self.eager = True  # hands its view over at once (HealthReporter: on its next round)

    def of(self, healthy: int) -> tuple[Observation, ...]:
        state = UP if healthy else DOWN
        return (Observation(self.gateway_id, "a", "shop", "a", state, healthy, 3, at=1.0),)

    def lead(self, sink: Callable[[tuple[Observation, ...]], None]) -> None:
        self.sink = sink
        if self.eager:
            sink(self.view)

    def follow(self) -> None:
        self.sink = None


async def summary(client: EtcdClient) -> Observation | None:
    kv = await client.get(LAYOUT.health_summary("a", "shop"))
    return codec.decode_list(Observation, kv.value)[0] if kv is not None else None


async def test_one_leader_summarises_and_a_follower_takes_over(etcd: EtcdCluster) -> None:
    setup = EtcdClient(etcd.endpoints)
    clients = {g: EtcdClient(etcd.endpoints, timeout=1.0) for g in ("gw1", "gw2")}
    views = {"gw1": LocalView("gw1", 1), "gw2": LocalView("gw2", 2)}
    leases = {g: GatewayLease(clients[g], ttl=TTL) for g in views}
    for lease in leases.values():
        await lease.start()
    leaders = {
        g: HealthLeader(
            client=clients[g], layout=LAYOUT, reporter=views[g], lease=leases[g], ttl=TTL
        )
        for g in views
    }
    for c in (cluster("a"), cluster("b")):
        await setup.put(LAYOUT.cluster(c.name), codec.encode(c))
    await setup.put(LAYOUT.service("shop"), codec.encode(service("shop", ("a", "b"))))
    for g in views:
        await setup.put(LAYOUT.gateway("a", g), codec.encode(GatewayRecord(g, "a")))
    tasks = {g: asyncio.create_task(leaders[g].run()) for g in leaders}
    try:

        def leader() -> str:
            return next((g for g, x in leaders.items() if x.leading), "")

        first: str = await async_wait_for(leader, timeout=10, what="a leader")
        other = "gw2" if first == "gw1" else "gw1"
        assert not leaders[other].leading
        # the follower's reporter writes its report under its lease (left out if healthy)
        lease = await setup.grant_lease(30)
        report = LAYOUT.health_report("a", other)
        await setup.put(report, codec.encode(compact(views[other].view)), lease=lease)

        def summarised(healthy: int, by: str) -> Callable[[], Awaitable[Observation]]:
            async def check() -> Observation:
                got = await summary(setup)
                assert got and (got.healthy, got.observer) == (healthy, by), got
                return got

            return check

        # the gateway that sees most: the follower's 2 of 3
        line: Observation = await async_wait_for(summarised(2, first), timeout=10, what="summary")
        assert line.state is HealthState.DEGRADED and line.observer_cluster == "a"
        # a hostile report (deep JSON, a lie about another cluster) is one log line
        hostile = b"[" * 100_000 + b"]" * 100_000
        await setup.put(LAYOUT.health_report("a", "gw3"), hostile, lease=lease)
        forged = [Observation("gw4", "b", "shop", "b", DOWN, 0, 3)]
        await setup.put(LAYOUT.health_report("a", "gw4"), codec.encode(forged), lease=lease)
        writes = leaders[first].writes
        # the leader's own view moves: written on change, and only then
        views[first].view = views[first].of(3)
        sink = views[first].sink
        assert sink is not None
        sink(views[first].view)
        moved: Observation = await async_wait_for(summarised(3, first), what="own change")
        assert moved.state is UP
        sink(views[first].view)  # the same again: nothing to write
        await asyncio.sleep(0.3)  # pacing: a window for a write that must not come
        assert leaders[first].writes == writes + 1

        # every gateway's view decodes the summary, never the reports or the lock
        view = await load_view(setup, LAYOUT)
        health = view.health_of("shop", "a")
        assert health is not None and health.healthy_endpoints == 3 and not view.rejected
        assert {(o.service, o.cluster) for o in view.observations} == {("shop", "a")}

        # the leader's process is cut from etcd: its lease lapses, the other takes over;
        # its view comes late: its last report stands for it, the summary is re-signed
        # at once with its opinion (before: nothing for 1 s, then without its opinion)
        views[other].eager = False
        cut = time.monotonic()
        await clients[first].close()
        tasks[first].cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await tasks[first]
        await setup.delete(LAYOUT.gateway("a", first))
        await async_wait_for(lambda: leaders[other].leading, timeout=3 * TTL + 5, what="takeover")
        took = time.monotonic() - cut
        assert took <= TTL + 3.0, took  # the lease's TTL, then one campaign
        mine = views[other].view[0].healthy  # its own view now; the old leader's is gone
        again: Observation = await async_wait_for(summarised(mine, other), what="new summary")
        assert again.observer == other
        await setup.revoke_lease(lease)
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        for g in leases:
            with contextlib.suppress(Exception):
                await leases[g].stop()
        for client in (*clients.values(), setup):
            with contextlib.suppress(Exception):
                await client.close()


def test_summary_keys_must_match_the_cluster_and_service() -> None:
    from federation.etcd import KV
    from federation.view import decode_item

    def error(key: str, obs: list[Observation]) -> str | None:
        return decode_item(LAYOUT, KV(key, codec.encode(obs), 2, 2, 0)).error

    good = Observation("gw1", "a", "shop", "a", UP, 1, 1)
    assert error(LAYOUT.health_summary("a", "shop"), [good]) is None
    assert error(LAYOUT.health_summary("b", "shop"), [good])  # a's voice under b's key
    assert error(LAYOUT.health_summary("a", "cart"), [good])  # under another service
    assert error(LAYOUT.health_summary("a", ANY), [good])  # an own line in the wide key
    two = [Observation("gw1", "a", ANY, "b", DOWN), Observation("gw2", "a", ANY, "c", DOWN)]
    assert error(LAYOUT.health_summary("a", ANY), two)  # one leader per summary
    assert LAYOUT.parse(LAYOUT.health_lock("a")) is not None
    assert LAYOUT.parse("/h/health/a/other/x") is None
