"""The federation-wide rate limit follows the live gateways in real etcd.

Gateways register their GatewayRecord under their lease (``federation.liveness``); the
composition root feeds every new view to ``limiter.set_live_gateways(live_gateway_count(
view))``. Here the views come from ``federation.view.load_view`` (one-shot reads) and
from a running ``federation.watch.ViewWatcher`` (the real path): gateways join, one
leaves cleanly (lease revoked), one dies (lease left to expire), and every limiter's
share follows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from federation.etcd import EtcdClient
from federation.keys import KeyLayout
from federation.liveness import GatewayLease, GatewayRegistration
from federation.model import GatewayRecord, RateLimit, RoutingView, Service
from federation.ratelimit_share import live_gateway_count
from federation.view import load_view
from federation.watch import ViewWatcher
from gateway.ratelimit import RateLimiter
from tests.support.etcd import EtcdCluster
from tests.support.wait import async_wait_for

LAYOUT = KeyLayout("/fedgate/")
SERVICE = Service(
    name="checkout",
    routes=(),
    port=8080,
    clusters=("c1",),
    rate_limit=RateLimit(average=600.0, burst=120, scope="federation"),
)


class Gateway:
    """What of a gateway process matters here: its client, lease and registration."""

    def __init__(self, endpoints: list[str], gateway_id: str, cluster: str, ttl: float) -> None:
        self.client = EtcdClient(endpoints)
        self.lease = GatewayLease(self.client, ttl=ttl)
        self.registration = GatewayRegistration(
            self.lease, LAYOUT, GatewayRecord(id=gateway_id, cluster=cluster)
        )

    async def start(self) -> None:
        await self.client.connect()
        await self.lease.start()
        await self.registration.start()

    async def stop(self, *, revoke: bool) -> None:
        await self.registration.stop()
        await self.lease.stop(revoke=revoke)
        await self.client.close()


@contextlib.asynccontextmanager
async def gateways(etcd: EtcdCluster) -> AsyncIterator[list[Gateway]]:
    started: list[Gateway] = []
    try:
        yield started
    finally:
        for gw in started:
            with contextlib.suppress(Exception):
                await gw.stop(revoke=True)


async def add(etcd: EtcdCluster, started: list[Gateway], gid: str, cluster: str) -> Gateway:
    gw = Gateway(list(etcd.endpoints), gid, cluster, ttl=2.0)
    started.append(gw)
    await gw.start()
    return gw


async def test_live_count_follows_leases_in_loaded_views(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as reader, gateways(etcd) as started:

        async def count() -> int:
            return live_gateway_count(await load_view(reader, LAYOUT))

        assert await count() == 1  # nobody registered: this gateway alone
        for i, cluster in enumerate(["c1", "c1", "c2"]):
            await add(etcd, started, f"gw{i}", cluster)
        assert await count() == 3

        # a clean stop revokes the lease: gone at once
        leaving = started.pop(0)
        await leaving.stop(revoke=True)
        assert await count() == 2

        # a dead gateway (no keep-alive, no revoke): gone when its lease expires
        dead = started.pop(0)
        await dead.stop(revoke=False)
        assert await count() == 2  # still within its TTL

        async def expired() -> bool:
            return await count() == 1

        await async_wait_for(expired, timeout=15, interval=0.2, what="the dead lease expiring")


async def test_limiter_share_follows_a_watched_view(etcd: EtcdCluster) -> None:
    """Two limiters fed by a ViewWatcher: the share goes 1 -> 1/2 -> 1/3 -> 1/2."""
    limiter = RateLimiter()
    views: list[RoutingView] = []

    def on_view(view: RoutingView) -> None:
        views.append(view)
        limiter.set_live_gateways(live_gateway_count(view))

    async with EtcdClient(etcd.endpoints) as reader, gateways(etcd) as started:
        watcher = ViewWatcher(reader, LAYOUT, on_view=on_view)
        task = asyncio.create_task(watcher.run())
        try:

            async def share_is(count: int) -> bool:
                return limiter.live_gateways == count and limiter.params(SERVICE) == (
                    600.0 / count,
                    120.0 / count,
                )

            await add(etcd, started, "gw-a", "c1")
            await async_wait_for(lambda: share_is(1), timeout=10, what="one gateway")
            await add(etcd, started, "gw-b", "c1")
            await async_wait_for(lambda: share_is(2), timeout=10, what="two gateways")
            await add(etcd, started, "gw-c", "c2")
            await async_wait_for(lambda: share_is(3), timeout=10, what="three gateways")

            dead = started.pop()
            await dead.stop(revoke=False)  # dies: its lease expires after ~2 s
            await async_wait_for(
                lambda: share_is(2), timeout=15, interval=0.1, what="share after lease expiry"
            )
            # the sum of the shares of the live gateways is the configured limit again
            assert limiter.params(SERVICE) is not None
            rate, burst = limiter.params(SERVICE)  # type: ignore[misc]
            assert rate * 2 == 600.0 and burst * 2 == 120.0
            assert all(len(v.gateways) <= 3 for v in views)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
