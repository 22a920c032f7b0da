"""Gateway liveness against a real etcd: the lease, the registration, a SIGKILLed gateway."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from federation import codec
from federation.etcd import EtcdClient
from federation.keys import KeyLayout
from federation.liveness import GatewayLease, GatewayRegistration
from federation.model import GatewayRecord
from tests.support.etcd import EtcdCluster
from tests.support.wait import async_wait_for

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = KeyLayout("/fedgate/")


async def _record(client: EtcdClient, key: str) -> GatewayRecord | None:
    kv = await client.get(key)
    return codec.decode(GatewayRecord, kv.value) if kv else None


async def test_registration_under_lease(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        lease = GatewayLease(client, ttl=5)
        reg = GatewayRegistration(lease, LAYOUT, GatewayRecord(id="gw1", cluster="c1"))
        await lease.start()
        await reg.start()
        try:
            assert lease.lease_id is not None
            kv = await client.get(LAYOUT.gateway("c1", "gw1"))
            assert kv is not None and kv.lease == lease.lease_id
            # a burst of updates: debounced into few writes, the last one wins
            writes = reg.writes
            for rev in range(1, 51):
                reg.update(applied_revision=rev)

            async def applied() -> bool:
                rec = await _record(client, reg.key)
                return rec is not None and rec.applied_revision == 50

            await async_wait_for(applied, timeout=5, what="record updated")
            assert reg.writes - writes <= 3
            # kept alive every TTL/3: the lease is refreshed, the key stays
            refreshed = lease.last_refresh
            await async_wait_for(
                lambda: lease.last_refresh > refreshed, timeout=5, what="a keep-alive"
            )
            remaining = await client.lease_ttl(lease.lease_id)
            assert remaining > 3
        finally:
            await reg.stop()
            await lease.stop(revoke=True)
        assert await client.get(LAYOUT.gateway("c1", "gw1")) is None


async def test_lost_lease_is_granted_anew_and_keys_put_again(etcd: EtcdCluster) -> None:
    async with EtcdClient(etcd.endpoints) as client:
        lease = GatewayLease(client, ttl=3)
        granted: list[int] = []

        async def on_new(lease_id: int) -> None:
            granted.append(lease_id)

        lease.on_new_lease(on_new)
        reg = GatewayRegistration(lease, LAYOUT, GatewayRecord(id="gw1", cluster="c1"))
        await lease.start()
        await reg.start()
        try:
            first = lease.lease_id
            assert first is not None and granted == [first]
            # the lease disappears behind the gateway's back (as after a long etcd outage)
            await client.revoke_lease(first)
            assert await client.get(reg.key) is None

            async def back() -> bool:
                kv = await client.get(reg.key)
                return kv is not None and kv.lease == lease.lease_id != first

            await async_wait_for(back, timeout=5, what="record re-put under a new lease")
            assert len(granted) == 2 and lease.grants == 2
        finally:
            await reg.stop()
            await lease.stop()


async def test_lease_granted_in_background_when_etcd_returns(etcd: EtcdCluster) -> None:
    etcd.stop()
    client = EtcdClient(etcd.endpoints, timeout=0.5)
    lease = GatewayLease(client, ttl=3)
    granted: list[int] = []

    async def on_new(lease_id: int) -> None:
        granted.append(lease_id)

    lease.on_new_lease(on_new)
    reg = GatewayRegistration(lease, LAYOUT, GatewayRecord(id="gw1", cluster="c1"))
    try:
        await lease.start()  # etcd is down: returns, keeps trying in the background
        await reg.start()
        assert lease.lease_id is None and granted == []
        reg.update(applied_revision=7)  # an update while etcd is down is not lost
        etcd.restart()
        await async_wait_for(lambda: granted, timeout=15, what="a lease once etcd is back")

        async def registered() -> bool:
            rec = await _record(client, reg.key)
            return rec is not None and rec.applied_revision == 7

        await async_wait_for(registered, timeout=10, what="record written")
    finally:
        await reg.stop()
        await lease.stop()
        await client.close()


_GATEWAY = """
import asyncio, sys
sys.path.insert(0, {root!r})
from federation.etcd import EtcdClient
from federation.keys import KeyLayout
from federation.liveness import GatewayLease, GatewayRegistration
from federation.model import GatewayRecord

async def main():
    client = EtcdClient([{endpoint!r}])
    lease = GatewayLease(client, ttl={ttl})
    reg = GatewayRegistration(lease, KeyLayout("/fedgate/"), GatewayRecord(id="gw-k", cluster="c1"))
    await lease.start()
    await reg.start()
    print("registered", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_sigkilled_gateway_vanishes_within_ttl_plus_2s(etcd: EtcdCluster) -> None:
    ttl = 5.0
    code = _GATEWAY.format(root=str(ROOT), endpoint=etcd.endpoint, ttl=ttl)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"registered", line
        async with EtcdClient(etcd.endpoints) as client:
            key = LAYOUT.gateway("c1", "gw-k")
            assert await client.get(key) is not None
            os.kill(proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.wait_for(proc.wait(), 10)

            async def gone() -> bool:
                return await client.get(key) is None

            await async_wait_for(gone, timeout=ttl + 2, interval=0.05, what="gateway key gone")
            elapsed = time.monotonic() - killed
            assert elapsed <= ttl + 2, elapsed
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
