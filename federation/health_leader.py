"""One health leader per cluster: the cluster's summary, written on change under a lease.

Every gateway of a cluster runs a :class:`HealthLeader` beside its ``HealthReporter``.
They contend for ``{p}health/{c}/lock/leader`` (:class:`federation.leaselock.LeaseLock`,
TTL ``ttl``); the holder is the cluster's leader:

- it lists then watches ``{p}health/{c}/report/`` -- the *local views* of its cluster's
  other gateways, each written by its gateway on change, under that gateway's lease
  (a dead gateway's view vanishes with it) -- and takes its own view in memory from its
  reporter (``HealthReporter.lead``);
- on every change of a view it folds them (``federation.health_summary.combine``) and
  writes the keys of the summary that changed, ``{p}health/{c}/summary/{service|*}``,
  under the lock's lease, in transactions guarded on the lock (a deposed leader writes
  nothing); a steady cluster writes nothing, the lease keep-alive (every TTL/3) is the
  heartbeat that keeps the summary alive;
- when its lease cannot be kept alive it stops, and its reporter publishes its view
  again like any follower's.

The others wait on a watch of the lock key; when the leader's lease lapses etcd deletes
the lock and the summary with it, and the first follower to create the lock again
lists the reports and writes a fresh summary. Followers never talk to each other or to
other clusters: a report is read by one process, its cluster's leader; the views of
every gateway decode only summaries (``keys.view_skips``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from federation import codec
from federation.etcd import KV, Delete, EtcdClient, EtcdError, Put, WatchStream
from federation.health_summary import Summary, combine, content
from federation.keys import HEALTH_REPORT, HEALTH_SUMMARY, KeyLayout
from federation.leaselock import Held, LeaseLock
from federation.logging import get_logger
from federation.model import Observation

log = get_logger(__name__)

TXN_OPS = 64  # summary writes per transaction (etcd's default limit is 128)


class LocalView(Protocol):
    """What the leader needs of its gateway's ``federation.health.HealthReporter``."""

    @property
    def cluster(self) -> str: ...

    @property
    def gateway_id(self) -> str: ...

    def lead(self, sink: Callable[[tuple[Observation, ...]], None]) -> None: ...

    def follow(self) -> None: ...


class HealthLeader:
    """Contends for the cluster's health lock; while held, keeps the summary true."""

    def __init__(
        self,
        *,
        client: EtcdClient,
        layout: KeyLayout,
        reporter: LocalView,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.time,
        recheck: float = 10.0,
    ) -> None:
        self._client = client
        self._layout = layout
        self._reporter = reporter
        self._cluster = reporter.cluster
        self._id = reporter.gateway_id
        self._lock = LeaseLock(client, layout.health_lock(self._cluster), self._id, ttl=ttl)
        self._clock = clock
        self._recheck = recheck  # a follower re-reads the lock at least this often
        self._own: tuple[Observation, ...] | None = None  # None: not handed over yet
        self._own_changed = asyncio.Event()
        self.leading = False
        self.terms = 0  # times this gateway became the leader
        self.writes = 0  # summary transactions written

    async def run(self) -> None:
        """Contend, lead while the lock is held, contend again; until cancelled."""
        failures = 0
        while True:
            try:
                held, keeper = await self._lock.acquire()
                if held is None:
                    await self._wait_vacant()
                    failures = 0
                    continue
                failures = 0
                try:
                    await self._lead(held)
                finally:
                    self._step_down()
                    await self._lock.release(held, keeper)
            except Exception as exc:  # etcd down, lock lost, a refused watch: campaign again
                failures += 1
                why = (str(exc) or type(exc).__name__).splitlines()[0]
                say = log.warning if failures == 1 else log.debug  # once per outage
                say("health.leader_failed", cluster=self._cluster, error=why, failures=failures)
                await asyncio.sleep(min(2.0, 0.1 * 2**failures) * random.uniform(0.5, 1.0))

    # ------------------------------------------------------------------ follower
    async def _wait_vacant(self) -> None:
        """Return when the lock key is gone (or after ``recheck`` seconds)."""
        revision, kvs = await self._client.get_prefix(self._lock.key)
        if not kvs:
            return
        stream = await self._client.watch(self._lock.key, start_revision=revision + 1)
        try:
            async with asyncio.timeout(self._recheck):
                while True:
                    batch = await stream.next()
                    if any(e.kind == "delete" for e in batch.events):
                        return
        except TimeoutError:
            return
        finally:
            await stream.aclose()

    # ------------------------------------------------------------------ leader
    def _step_down(self) -> None:
        if self.leading:
            log.info("health.leader_stepped_down", cluster=self._cluster)
        self.leading = False
        self._reporter.follow()

    def _take_own(self, view: tuple[Observation, ...]) -> None:
        self._own = view
        self._own_changed.set()

    async def _lead(self, held: Held) -> None:
        self.leading = True
        self.terms += 1
        log.info("health.leader_elected", cluster=self._cluster, gateway=self._id)
        reports_at = self._layout.health_part(self._cluster, HEALTH_REPORT)
        summary_at = self._layout.health_part(self._cluster, HEALTH_SUMMARY)
        own_report = self._layout.health_report(self._cluster, self._id)
        self._own = None
        self._own_changed.clear()
        self._reporter.lead(self._take_own)
        with contextlib.suppress(TimeoutError):  # the own view comes with the next round
            async with asyncio.timeout(1.0):
                await self._own_changed.wait()
        with contextlib.suppress(EtcdError):
            await self._client.delete(own_report)  # the leader's view is read in memory
        revision, kvs = await self._client.get_prefix(reports_at)
        reports: dict[str, tuple[Observation, ...]] = {}
        for kv in kvs:
            self._read_report(reports, reports_at, kv)
        _, old = await self._client.get_prefix(summary_at)
        written: dict[str, tuple[object, ...]] = {kv.key[len(summary_at) :]: () for kv in old}
        queue: asyncio.Queue[object] = asyncio.Queue()
        stream = await self._client.watch(reports_at, start_revision=revision + 1)
        reader = asyncio.create_task(_pump(stream, queue))
        try:
            while not held.lost:
                summary = self._summary(reports)
                if not await self._write(held, summary, written, summary_at):
                    return  # the lock is someone else's now
                got = await _next(queue, self._own_changed, held.lost_event)
                self._own_changed.clear()
                if isinstance(got, EtcdError):  # compacted, or the stream lost: list again
                    revision, kvs = await self._client.get_prefix(reports_at)
                    reports.clear()
                    for kv in kvs:
                        self._read_report(reports, reports_at, kv)
                    reader.cancel()
                    await stream.aclose()
                    stream = await self._client.watch(reports_at, start_revision=revision + 1)
                    reader = asyncio.create_task(_pump(stream, queue))
                elif isinstance(got, BaseException):
                    raise got
                elif got is not None:
                    for kv, deleted in got:  # type: ignore[attr-defined]
                        if deleted:
                            reports.pop(kv.key[len(reports_at) :], None)
                        else:
                            self._read_report(reports, reports_at, kv)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await stream.aclose()

    def _read_report(self, reports: dict[str, tuple[Observation, ...]], at: str, kv: KV) -> None:
        gateway = kv.key[len(at) :]
        if gateway == self._id:
            return
        try:
            view = codec.decode_list(Observation, kv.value)
        except codec.CodecError as exc:
            log.warning("health.report_rejected", key=kv.key, error=str(exc).splitlines()[0])
            reports.pop(gateway, None)
            return
        if any(o.observer != gateway or o.observer_cluster != self._cluster for o in view):
            log.warning("health.report_rejected", key=kv.key, error="not written by its gateway")
            reports.pop(gateway, None)
            return
        reports[gateway] = tuple(view)

    def _summary(self, reports: Mapping[str, Sequence[Observation]]) -> Summary:
        views: dict[str, Sequence[Observation]] = dict(reports)
        if self._own is not None:  # (an empty report is "all healthy", no view is not)
            views[self._id] = self._own
        return combine(self._cluster, self._id, views, self._clock())

    async def _write(
        self, held: Held, summary: Summary, written: dict[str, tuple[object, ...]], at: str
    ) -> bool:
        """Write the keys of ``summary`` whose content changed; False when not the holder."""
        ops: list[Put | Delete] = []
        fresh: dict[str, tuple[object, ...] | None] = {}
        for name, observations in summary.items():
            now = content(observations)
            if written.get(name) != now:
                ops.append(Put(at + name, codec.encode(list(observations)), lease=held.lease))
                fresh[name] = now
        for name in written:
            if name not in summary:
                ops.append(Delete(at + name))
                fresh[name] = None
        for start in range(0, len(ops), TXN_OPS):
            ok, _ = await self._client.txn([held.guard()], ops[start : start + TXN_OPS])
            if not ok:
                return False
            self.writes += 1
        for name, value in fresh.items():
            if value is None:
                written.pop(name, None)
            else:
                written[name] = value
        return True


async def _pump(stream: WatchStream, queue: asyncio.Queue[object]) -> None:
    """Watch responses -> ``[(kv, deleted), ...]`` on the queue; the error that ends it."""
    try:
        while True:
            batch = await stream.next()
            queue.put_nowait([(e.kv, e.kind == "delete") for e in batch.events])
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        queue.put_nowait(exc)


async def _next(
    queue: asyncio.Queue[object], own: asyncio.Event, lost: asyncio.Event
) -> object | None:
    """The next queued item, or None when the own view changed or the lock was lost."""
    if not queue.empty():
        return queue.get_nowait()
    if own.is_set() or lost.is_set():
        return None
    getter = asyncio.ensure_future(queue.get())
    waiters = [getter, asyncio.ensure_future(own.wait()), asyncio.ensure_future(lost.wait())]
    try:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    if getter in done:
        return getter.result()
    return None
