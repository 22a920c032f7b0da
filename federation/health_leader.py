"""One health leader per cluster: the cluster's summary, written on change, kept across leaders.

Every gateway of a cluster runs a :class:`HealthLeader` beside its ``HealthReporter``.
They contend for ``{p}health/{c}/lock/leader`` (:class:`federation.leaselock.LeaseLock`,
a lease of its own with a third of the gateway lease's TTL, :func:`lock_ttl`); the holder
is the cluster's leader:

- it lists then watches ``{p}health/{c}/report/`` -- the *local views* of its cluster's
  other gateways, each written by its gateway on change, under that gateway's lease
  (a dead gateway's view vanishes with it) -- and takes its own view in memory from its
  reporter (``HealthReporter.lead``);
- on every change of a view it folds them (``federation.health_summary.combine``) and
  writes the keys of the summary that changed, ``{p}health/{c}/summary/{service|*}``,
  in transactions guarded on the lock (a deposed leader writes nothing), under its own
  *gateway* lease, the one its ``GatewayRecord`` lives under: a summary counts for the
  federation only while its signer is live (``federation.aggregate``), and it now lasts
  exactly as long. A steady cluster writes nothing; the gateway lease's keep-alive is
  the heartbeat that keeps the summary alive;
- when its lock's lease cannot be kept alive it stops, and its reporter publishes its
  view again like any follower's.

The others wait on a watch of the lock key. **No gap at a change of leader**: a leader
that dies (SIGKILL) leaves its summary in place, signed by a gateway still registered;
its lock lapses first (a third of the TTL), and the first follower to create the lock
again lists the reports and re-signs every key of the summary (a put moves the key to
its own lease) before the dead leader's record -- and its keys -- lapse. A leader that
stops (SIGTERM) releases the lock and waits, bounded, until a follower has re-signed
the summary before its gateway lease is revoked. A whole cluster gone takes its summary
with its last leader's lease: a partitioned cluster is judged by the others.
Followers never talk to each other or to other clusters: a report is read by one
process, its cluster's leader; the views of every gateway decode only summaries
(``keys.view_skips``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from federation import codec
from federation.etcd import KV, Delete, EtcdClient, EtcdError, Put, WatchStream
from federation.health import Lease
from federation.health_summary import Summary, combine, content
from federation.keys import HEALTH_REPORT, HEALTH_SUMMARY, KeyLayout
from federation.leaselock import Held, LeaseLock
from federation.logging import get_logger
from federation.model import Observation

log = get_logger(__name__)

TXN_OPS = 64  # summary writes per transaction (etcd's default limit is 128)
HANDOVER_POLL = 0.05  # seconds between reads of the summary while a stopping leader hands over


def lock_ttl(gateway_ttl: float) -> float:
    """The leader lock's TTL: a third of the gateway lease's (whole seconds, at least 1),
    so a dead leader's lock lapses, and a follower re-signs the summary, while the dead
    leader's record (renewed every TTL/3: alive for at least 2/3 of the TTL after the
    death) still makes that summary count. 5 s -> 2 s, 3 s -> 1 s."""
    return float(max(1, math.ceil(gateway_ttl / 3)))


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
        lease: Lease,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.time,
        recheck: float = 10.0,
    ) -> None:
        """``lease``: the gateway's own lease (its record's); ``ttl``: that lease's TTL."""
        self._client = client
        self._layout = layout
        self._reporter = reporter
        self._lease = lease
        self._cluster = reporter.cluster
        self._id = reporter.gateway_id
        self._lock = LeaseLock(
            client, layout.health_lock(self._cluster), self._id, ttl=lock_ttl(ttl)
        )
        self._clock = clock
        self._recheck = recheck  # a follower re-reads the lock at least this often
        self._handover = lock_ttl(ttl) + 1.0  # a stopping leader waits this long at most
        self._own: tuple[Observation, ...] | None = None  # None: not handed over yet
        self._own_changed = asyncio.Event()
        self._peers = 0  # other gateways of the cluster with a report, when last leading
        self.leading = False
        self.terms = 0  # times this gateway became the leader
        self.writes = 0  # summary transactions written
        lease.on_new_lease(self._on_new_lease)

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
                stopping = False
                try:
                    await self._lead(held)
                except asyncio.CancelledError:
                    stopping = True
                    raise
                finally:
                    self._step_down()
                    await self._lock.release(held, keeper)
                    if stopping:
                        await self._hand_over()
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
    async def _on_new_lease(self, lease_id: int) -> None:
        self._own_changed.set()  # a leader writes its summary again under the new lease

    async def _hand_over(self) -> None:
        """A stopping leader (its lock just released): wait until a follower has signed
        every key of the summary (its gateway lease, revoked next, would take them), at
        most ``lock TTL + 1 s``; at once when the cluster has no other gateway."""
        if not self._peers:
            return
        at = self._layout.health_part(self._cluster, HEALTH_SUMMARY)
        with contextlib.suppress(TimeoutError, EtcdError):
            async with asyncio.timeout(self._handover):
                while True:
                    _, kvs = await self._client.get_prefix(at)
                    if not any(_signer(kv.value) == self._id for kv in kvs):
                        log.info("health.leader_handed_over", cluster=self._cluster)
                        return
                    await asyncio.sleep(HANDOVER_POLL)

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
        self._reporter.lead(self._take_own)  # its view comes in memory from now on
        revision, kvs = await self._client.get_prefix(reports_at)
        reports: dict[str, tuple[Observation, ...]] = {}
        for kv in kvs:
            self._read_report(reports, reports_at, kv, own_too=True)
        # until the reporter hands its view over, its last report stands for it: the
        # summary is re-signed at once, without waiting for the reporter's next round
        last = reports.pop(self._id, None)
        if self._own is None and last is not None:
            self._own = last
        with contextlib.suppress(EtcdError):
            await self._client.delete(own_report)  # the leader's view is read in memory
        self._peers = len(reports)
        _, old = await self._client.get_prefix(summary_at)
        # every key is written again at once: signed by this leader, under its lease
        written: dict[str, tuple[object, ...]] = {kv.key[len(summary_at) :]: () for kv in old}
        under = self._lease.lease_id
        queue: asyncio.Queue[object] = asyncio.Queue()
        stream = await self._client.watch(reports_at, start_revision=revision + 1)
        reader = asyncio.create_task(_pump(stream, queue))
        try:
            while not held.lost:
                if self._lease.lease_id != under:
                    # a new gateway lease: the old one's keys (the summary) went with it
                    under = self._lease.lease_id
                    written.clear()
                summary = self._summary(reports)
                if under is not None and not await self._write(
                    held, summary, written, summary_at, under
                ):
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
                    self._peers = len(reports)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await stream.aclose()

    def _read_report(
        self,
        reports: dict[str, tuple[Observation, ...]],
        at: str,
        kv: KV,
        *,
        own_too: bool = False,
    ) -> None:
        """A report into ``reports`` (a hostile one is one log line); the leader's own
        report only when ``own_too`` (its view comes in memory)."""
        gateway = kv.key[len(at) :]
        if gateway == self._id and not own_too:
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
        self,
        held: Held,
        summary: Summary,
        written: dict[str, tuple[object, ...]],
        at: str,
        lease: int,
    ) -> bool:
        """Write the keys of ``summary`` whose content changed, under ``lease`` (the
        gateway's); False when not the holder."""
        ops: list[Put | Delete] = []
        fresh: dict[str, tuple[object, ...] | None] = {}
        for name, observations in summary.items():
            now = content(observations)
            if written.get(name) != now:
                ops.append(Put(at + name, codec.encode(list(observations)), lease=lease))
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


def _signer(value: bytes) -> str | None:
    """The gateway that signed a summary key (None when it cannot be read)."""
    try:
        lines = codec.decode_list(Observation, value)
    except codec.CodecError:
        return None
    return lines[0].observer if lines else None


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
