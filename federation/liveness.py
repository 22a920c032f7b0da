"""Gateway liveness: one etcd lease per gateway process, and the gateway's own record.

Every fact a gateway publishes (its :class:`GatewayRecord`, the endpoints it
discovers, its health observations) is put under the process's one lease
(:class:`GatewayLease`). The lease is kept alive every TTL/3; when the process dies
(SIGKILL included) nobody refreshes it and etcd deletes all its keys within the TTL.

When etcd is unreachable for longer than the TTL the lease expires on the server;
once etcd answers again the keep-alive sees the lease gone, grants a new one and
calls every ``on_new_lease`` callback, so the owners put their keys again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from federation import codec
from federation.etcd import EtcdClient, EtcdError, LeaseNotFound
from federation.keys import KeyLayout
from federation.logging import get_logger
from federation.model import GatewayRecord

log = get_logger(__name__)

NewLeaseCallback = Callable[[int], Awaitable[None]]


class GatewayLease:
    """The lease every lease-bound key of one gateway process lives under."""

    def __init__(
        self,
        client: EtcdClient,
        *,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 1:
            raise ValueError("lease TTL must be at least 1 second")
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._lease_id: int | None = None
        self._callbacks: list[NewLeaseCallback] = []
        self._task: asyncio.Task[None] | None = None
        self._granted = asyncio.Event()
        self._last_refresh = 0.0
        self._kick = asyncio.Event()
        self.grants = 0  # how many leases were granted (1 + losses)

    @property
    def ttl(self) -> float:
        return self._ttl

    @property
    def lease_id(self) -> int | None:
        return self._lease_id

    @property
    def interval(self) -> float:
        """Keep-alive period: TTL/3."""
        return self._ttl / 3

    def on_new_lease(self, callback: NewLeaseCallback) -> None:
        """Call ``callback(lease_id)`` after every grant (re-put your keys there)."""
        self._callbacks.append(callback)

    async def start(self) -> None:
        """Start keeping a lease alive; returns once the first one is granted.

        If etcd is unreachable, returns at once and grants in the background (callers
        are told through ``on_new_lease``).
        """
        if self._task is not None:
            return
        try:
            await self._grant()
        except EtcdError as exc:
            log.warning("lease.grant_failed", error=str(exc))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gateway-lease")

    async def wait_granted(self, timeout: float | None = None) -> int:
        await asyncio.wait_for(self._granted.wait(), timeout)
        assert self._lease_id is not None
        return self._lease_id

    async def stop(self, *, revoke: bool = True) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        lease_id, self._lease_id = self._lease_id, None
        self._granted.clear()
        if revoke and lease_id is not None:
            with contextlib.suppress(EtcdError):
                await self._client.revoke_lease(lease_id)

    async def put(self, key: str, value: bytes) -> None:
        """Put ``key`` under the current lease (raises EtcdError without a lease)."""
        lease_id = self._lease_id
        if lease_id is None:
            raise EtcdError("no lease granted yet (etcd unreachable)")
        try:
            await self._client.put(key, value, lease=lease_id)
        except LeaseNotFound:
            # the lease expired under us: the keep-alive loop grants a new one and the
            # owners re-put from their on_new_lease callback
            if self._lease_id == lease_id:
                self._lease_id = None
                self._granted.clear()
                self._wake()
            raise

    # -- internals
    def _wake(self) -> None:
        self._kick.set()  # make the loop act now

    @property
    def last_refresh(self) -> float:
        """Clock time of the last successful grant or keep-alive."""
        return self._last_refresh

    async def _grant(self) -> None:
        lease_id = await self._client.grant_lease(self._ttl)
        self._lease_id = lease_id
        self._last_refresh = self._clock()
        self.grants += 1
        self._granted.set()
        for callback in list(self._callbacks):
            try:
                await callback(lease_id)
            except Exception as exc:  # an owner's failure must not stop the lease
                log.warning("lease.callback_failed", error=str(exc))

    async def _run(self) -> None:
        failures = 0
        while True:
            if self._lease_id is None:
                delay = 0.0 if failures == 0 else _backoff(failures, cap=self._ttl / 3)
            else:
                delay = self.interval if failures == 0 else _backoff(failures, cap=self.interval)
            with contextlib.suppress(TimeoutError):  # not wait_for: it may swallow a cancel
                async with asyncio.timeout(delay):
                    await self._kick.wait()
            self._kick.clear()
            try:
                if self._lease_id is None:
                    await self._grant()
                else:
                    lease_id = self._lease_id
                    ttl = await self._client.keepalive_once(lease_id)
                    if ttl <= 0:
                        log.warning("lease.expired", lease=f"{lease_id:x}")
                        self._lease_id = None
                        self._granted.clear()
                        await self._grant()
                    else:
                        self._last_refresh = self._clock()
                failures = 0
            except EtcdError as exc:
                failures += 1
                if failures == 1:
                    log.warning("lease.keepalive_failed", error=str(exc))


def _backoff(failures: int, *, cap: float) -> float:
    base: float = min(cap, 0.1 * 2 ** min(failures, 10))
    return base * random.uniform(0.5, 1.0)


class GatewayRegistration:
    """This gateway's :class:`GatewayRecord` at ``keys.gateway(cluster, id)``, under the lease.

    ``update(**changes)`` replaces fields; the record is rewritten soon after
    (debounced: many updates in a burst give one write). It is written again after
    every new lease.
    """

    def __init__(
        self,
        lease: GatewayLease,
        layout: KeyLayout,
        record: GatewayRecord,
        *,
        debounce: float = 0.2,
    ) -> None:
        self._lease = lease
        self._layout = layout
        self._record = record
        self._debounce = debounce
        self._key = layout.gateway(record.cluster, record.id)
        self._written: bytes | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()
        self._stopped = False
        self.writes = 0
        lease.on_new_lease(self._on_new_lease)

    @property
    def key(self) -> str:
        return self._key

    @property
    def record(self) -> GatewayRecord:
        return self._record

    async def start(self) -> None:
        """Write the record now (if a lease is held) and keep it up to date."""
        if self._lease.lease_id is not None:
            with contextlib.suppress(EtcdError):
                await self._write()
        self._ensure_task()

    def update(self, **changes: Any) -> None:
        """Replace fields of the record; it is rewritten soon (debounced)."""
        record = dataclasses.replace(self._record, **changes)
        if record == self._record:
            return
        self._record = record
        self._dirty.set()
        self._ensure_task()

    async def stop(self, *, delete: bool = False) -> None:
        self._stopped = True
        task, self._flush_task = self._flush_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if delete:
            with contextlib.suppress(EtcdError):
                await self._lease._client.delete(self._key)

    async def flush(self) -> None:
        """Write the current record now."""
        await self._write()

    # -- internals
    def _ensure_task(self) -> None:
        if self._stopped or (self._flush_task is not None and not self._flush_task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not started yet: start() writes
        self._flush_task = loop.create_task(self._flush_loop(), name="gateway-registration")

    async def _on_new_lease(self, lease_id: int) -> None:
        self._written = None
        await self._write()

    async def _write(self) -> None:
        value = codec.encode(self._record)
        await self._lease.put(self._key, value)
        self._written = value
        self.writes += 1

    async def _flush_loop(self) -> None:
        failures = 0
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._debounce if failures == 0 else _backoff(failures, cap=2.0))
            self._dirty.clear()
            if codec.encode(self._record) == self._written:
                continue
            try:
                await self._write()
                failures = 0
            except EtcdError:
                failures += 1
                self._dirty.set()  # retry; a new lease also rewrites it
