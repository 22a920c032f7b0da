"""A lock in etcd held by a lease: one holder at a time, taken over when its lease lapses.

The holder creates the lock key (a transaction guarded on the key not existing) under
a lease of its own, keeps the lease alive every ``ttl / 3`` seconds and writes what it
owns under the same lease, so it all vanishes with the holder. A holder that dies stops
renewing; etcd deletes the key after the TTL and the next contender takes it. A holder
whose keep-alive fails is told (:attr:`Held.lost`) and must stop acting as the holder:
the lock may pass to another process. Writes that must only land while the lock is
still ours are guarded on the lock's create revision (:meth:`Held.guard`).

Used for one ACME order per name across the federation (``federation/acme_lock.py``)
and for one health leader per cluster (``federation/health_leader.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from federation.etcd import EtcdClient, EtcdError, Guard, Put


class Held:
    """A held lock: its lease, whether it was lost, and the guard of writes made as holder."""

    def __init__(self, etcd: EtcdClient, key: str, lease: int, revision: int) -> None:
        self._etcd = etcd
        self.key = key
        self.lease = lease
        self.revision = revision  # the lock key's create revision
        self.lost = False  # the lease could not be kept alive: another may hold the lock
        self.lost_event = asyncio.Event()

    def guard(self) -> Guard:
        """A transaction compare that holds only while this lock is still ours."""
        return Guard(self.key, "create", "==", self.revision)

    def lose(self) -> None:
        self.lost = True
        self.lost_event.set()


class LeaseLock:
    """Contends for one key; :meth:`acquire` or :meth:`hold` it."""

    def __init__(self, etcd: EtcdClient, key: str, holder: str, *, ttl: float = 10.0) -> None:
        self._etcd = etcd
        self.key = key
        self._holder = holder
        self.ttl = ttl

    async def holder(self) -> str | None:
        kv = await self._etcd.get(self.key)
        return kv.value.decode(errors="replace") if kv is not None else None

    async def acquire(self) -> tuple[Held | None, asyncio.Task[None] | None]:
        """(held, its keep-alive task) when this process got the lock, else (None, None)."""
        lease = await self._etcd.grant_lease(self.ttl)
        try:
            ok, revision = await self._etcd.txn(
                [Guard(self.key, "create", "==", 0)],
                [Put(self.key, self._holder.encode(), lease=lease)],
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self._etcd.revoke_lease(lease)
            raise
        if not ok:
            await self._etcd.revoke_lease(lease)
            return None, None
        held = Held(self._etcd, self.key, lease, revision)
        return held, asyncio.create_task(self._keep(held), name=f"lease-lock {self.key}")

    async def release(self, held: Held, keeper: asyncio.Task[None] | None) -> None:
        """Stop renewing and revoke the lease: the lock and what was written under it go."""
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        with contextlib.suppress(Exception):
            await self._etcd.revoke_lease(held.lease)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[Held | None]:
        """Yields a :class:`Held` when this process got the lock, else None."""
        held, keeper = await self.acquire()
        if held is None:
            yield None
            return
        try:
            yield held
        finally:
            await self.release(held, keeper)

    async def _keep(self, held: Held) -> None:
        """Refresh the lease; when that fails the holder is told (:attr:`Held.lost`)."""
        try:
            while True:
                await asyncio.sleep(self.ttl / 3)
                if await self._etcd.keepalive_once(held.lease) <= 0:
                    break
        except EtcdError:
            pass
        held.lose()
