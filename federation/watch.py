"""List-then-watch: the routing view of every gateway, kept current from etcd.

:class:`ViewWatcher` reads every key under the prefix in one linearizable read at
revision R, builds the view, then watches the prefix from R+1. Each watch response
(all events of one or more whole etcd transactions: a transaction is never split) is
applied whole, alone or with the responses that arrived with it (coalescing, below),
and gives one new immutable view, handed to ``on_view``; the caller
swaps it in with one assignment. No view ever shows half a transaction.

Failures:

- the stream breaks (member killed, leader lost, connection reset) or falls silent
  (a progress request goes unanswered): reconnect, to the next endpoint, with jittered
  exponential backoff capped at ``max_backoff``, and watch again from the last
  *applied* revision + 1. A timeout or an error never moves the revision forward.
- the revision to resume from was compacted (in the create response or later): read
  the whole prefix again at one revision (``stats.full_reloads``) and watch on from
  there.
- etcd unreachable: the current view keeps serving, marked ``stale``; at start, the
  snapshot (when configured) serves, stale, until etcd answers.
- an invalid item: rejected by :func:`federation.view.build_view` (the previous value
  of that key keeps serving), counted in ``stats.update_rejected``.

Progress notifications prove the stream alive but do not advance the revision (etcd
3.5.1 may send one before events it still owes a catching-up watcher).

Cost follows change: the facts live in a :class:`~federation.viewstate.ViewState`, each
update is a *delta* applied to the structures its keys feed. Bursts are coalesced as
Istio debounces: an update after a quiet spell is applied at once; while events keep
coming they are gathered until ``debounce`` seconds pass without one, never longer than
``max_delay`` after the first (whole responses only: a transaction is never split).
A big delta (a full list, a large apply) is applied in a worker thread, so the event
loop keeps serving requests; a full list is applied with the garbage collector paused
and its objects are then frozen out of later collections (``federation.heap``: a full
collection walking a 1,000-cluster view blocked the loop for 200-500 ms). Events on
``own_keys`` (this gateway's own record) never start an update by themselves: they ride
with the next one (at most ``max_delay`` late).

The apply barrier (``{prefix}applying``, see docs/etcd.md): while it stands, config
events (federation, clusters, services, generation) later than its create revision are
*held*; the event that deletes it releases them all, with the events of its revision, as
one update. A full list that finds the barrier reads the config kinds at the barrier's
create revision - 1 (runtime kinds at the list revision); if that revision is compacted
the config of the last view is kept and ``stats.barrier_compacted`` counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import random
import time
from collections.abc import Callable, Collection
from typing import Any

from federation import heap
from federation.etcd import KV, EtcdClient, EtcdCompacted, EtcdError, WatchBatch, WatchStream
from federation.keys import HELD_KINDS, KeyLayout, parsed_view_skips, view_skips
from federation.listing import DEFAULT_PAGE, list_prefix, pages
from federation.logging import get_logger
from federation.model import RoutingView
from federation.snapshot import load_snapshot
from federation.snapshot_writer import SnapshotWriter
from federation.view import DecodeCache
from federation.viewstate import ViewState

log = get_logger(__name__)

ViewCallback = Callable[[RoutingView], None]


@dataclasses.dataclass
class WatchStats:
    """Counters of the update contract (as Envoy's xDS: attempt / success / rejected)."""

    update_attempt: int = 0  # updates applied (one watch response or one full reload)
    update_success: int = 0  # ... with no item rejected
    update_rejected: int = 0  # ... with at least one item rejected (the rest applied)
    rejected_items: int = 0  # items rejected in total
    revision: int = 0  # the etcd revision of the current view (applied revision)
    config_revision: int = 0
    full_reloads: int = 0  # reads of the whole prefix (the first one included)
    compactions: int = 0  # resumes refused because the revision was compacted
    reconnects: int = 0  # watch streams opened after the first one
    failures: int = 0  # stream or connection failures
    progress_notifies: int = 0  # progress answers (an idle stream is alive)
    connected: bool = False  # the last etcd call worked
    watching: bool = False  # a watch stream is open
    stale: bool = False
    snapshot_loaded: bool = False
    last_error: str = ""
    last_update: float = 0.0  # clock time of the last applied update
    events: int = 0  # watch events received
    coalesced: int = 0  # watch responses folded into an update with others
    offloaded: int = 0  # updates applied in a worker thread (big deltas)
    config_rebuilds: int = 0  # updates that changed clusters/services (route table rebuilt)
    endpoint_pairs: int = 0  # (service, cluster) endpoint lists recomputed
    health_pairs: int = 0  # (service, cluster) health assessments recomputed
    longest_apply_ms: float = 0.0  # the longest update applied on the event loop
    list_ms: float = 0.0  # the last full read of the prefix: reading it from etcd
    build_ms: float = 0.0  # ... and building its view (decoding every value)
    reload_cpu_ms: float = 0.0  # ... the process's CPU time for both (the machine's load aside)
    barrier: int = 0  # create revision of the standing apply barrier (0: none)
    held: int = 0  # config events held behind the barrier now
    barrier_releases: int = 0  # barriers released (held events applied as one update)
    barrier_compacted: int = 0  # lists that found a barrier but could not read behind it

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Delta = dict[str, KV | None]
OFFLOAD_KEYS = 256  # a delta of more keys than this is applied in a worker thread
OFFLOAD_BYTES = 16 * 1024  # ... or of more bytes to decode than this
OFFLOAD_PAIRS = 5000  # ... or any delta once the view holds more (service, cluster) pairs
# the view's objects made by updates are frozen out of collections too (federation.heap),
# once this many bytes of values were decoded since the last time, at most this often
SETTLE_BYTES = 1 << 20
SETTLE_INTERVAL = 10.0


class ViewWatcher:
    """Keeps ``view`` equal to etcd's prefix, one immutable view per change."""

    def __init__(
        self,
        client: EtcdClient,
        layout: KeyLayout,
        *,
        on_view: ViewCallback,
        snapshot_path: str | None = None,
        clock: Callable[[], float] = time.time,
        progress_interval: float = 5.0,
        max_backoff: float = 2.0,
        snapshot_debounce: float = 0.5,
        debounce: float = 0.005,
        max_delay: float = 0.05,
        own_keys: Collection[str] = (),
        offload_keys: int = OFFLOAD_KEYS,
        list_page: int = DEFAULT_PAGE,
    ) -> None:
        self._client = client
        self._layout = layout
        self._on_view = on_view
        self._clock = clock
        self._progress_interval = progress_interval
        self._max_backoff = max_backoff
        self._snapshot_path = snapshot_path
        self._writer = (
            SnapshotWriter(snapshot_path, layout=layout, debounce=snapshot_debounce)
            if snapshot_path
            else None
        )
        self._debounce = debounce
        self._max_delay = max_delay
        self._own_keys = frozenset(own_keys)
        self._offload_keys = offload_keys
        self._list_page = list_page
        self._view = RoutingView()
        self._cache = DecodeCache()
        self._state = ViewState(layout, cache=self._cache)
        self._revision = 0  # last revision taken in (applied, pending or held)
        self._config_floor = 0
        self._need_reload = True
        self._streams = 0
        self._failures = 0  # consecutive failures (reset once a watch is open)
        self._ready = asyncio.Event()
        # coalescing: events taken in but not yet applied
        self._pending: Delta = {}
        self._pending_revision = 0
        self._pending_first = 0.0  # loop time of the first pending event
        self._pending_last = 0.0  # ... of the last one
        self._pending_loud = False  # a pending key that is not this gateway's own
        self._last_flush = -1e9
        self._settled_at = -1e9  # loop time of the last heap.settle
        self._decoded_since_settle = 0  # bytes of values applied since
        # the apply barrier
        self._barrier = 0  # create revision of ``applying``; 0 = none
        self._held: Delta = {}
        self._held_floor = 0
        self.stats = WatchStats()

    # -- what callers read
    @property
    def view(self) -> RoutingView:
        return self._view

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def state(self) -> ViewState:
        return self._state

    @property
    def snapshot_writer(self) -> SnapshotWriter | None:
        return self._writer

    async def wait_ready(self, timeout: float | None = None) -> RoutingView:
        """Wait for a first view (from etcd or the snapshot)."""
        await asyncio.wait_for(self._ready.wait(), timeout)
        return self._view

    # -- the loop
    async def run(self) -> None:
        """List, then watch, forever (until cancelled). Resumes where it stopped."""
        if self._writer is not None:
            self._writer.start()  # its process forks this one: while the heap is small
        try:
            while True:
                try:
                    if self._need_reload:
                        await self._reload()
                    await self._watch()
                except EtcdCompacted as exc:
                    self.stats.compactions += 1
                    self._need_reload = True
                    log.info("watch.compacted", error=str(exc), action="reload")
                    continue
                except EtcdError as exc:
                    self._failures += 1
                    failures = self._failures
                    self.stats.failures += 1
                    self.stats.connected = False
                    self.stats.last_error = str(exc)
                    if failures == 1:
                        log.warning("watch.interrupted", error=str(exc), failures=failures)
                    if self._revision == 0 and not self._ready.is_set():
                        await self._serve_snapshot()
                    elif failures >= 2:
                        self._mark_stale()
                    await asyncio.sleep(self._backoff(failures))
                    continue
        finally:
            if self._writer is not None:
                with contextlib.suppress(Exception):
                    await self._writer.close()

    def _backoff(self, failures: int) -> float:
        base: float = min(self._max_backoff, 0.05 * 2 ** min(failures - 1, 10))
        return base * random.uniform(0.5, 1.0)

    def _held_kind(self, key: str) -> bool:
        parsed = self._layout.parse(key)
        return parsed is not None and parsed.kind in HELD_KINDS

    async def _reload(self) -> None:
        if self.stats.full_reloads == 0:
            gc.collect()  # the heap is small yet: no cycle is left behind for heap.settle
        # the listed items, their decoding and the build are young and make no cycles:
        # no collection walks them until the build has put them out of its reach
        with heap.paused():
            await self._list_and_build()

    async def _list_and_build(self) -> None:
        started, cpu = time.perf_counter(), time.process_time()
        revision, listed = await self._list()
        self.stats.full_reloads += 1
        self.stats.list_ms = round((time.perf_counter() - started) * 1000, 1)
        previous = self._view
        held: Delta = {}
        applying = listed.get(self._layout.applying())
        if applying is not None:
            listed, held = await self._behind_barrier(listed, applying)
        # a config key deleted while we were away leaves no trace; keep the old floor
        # when the store is the same one (its revision did not go backwards)
        if revision < previous.revision:
            self._config_floor = 0
        else:
            self._config_floor = max(self._config_floor, previous.config_revision)
        self._pending = {}
        self._barrier = applying.create_revision if applying is not None else 0
        self._held = held
        self._held_floor = 0
        self.stats.barrier = self._barrier
        self.stats.held = len(held)
        self._cache.retain(listed)
        state = ViewState(self._layout, previous=previous, cache=self._cache)
        self._revision = revision
        self._need_reload = False
        self.stats.connected = True
        started = time.perf_counter()
        await self._apply(state, dict(listed), revision, full=True)
        self.stats.build_ms = round((time.perf_counter() - started) * 1000, 1)
        self.stats.reload_cpu_ms = round((time.process_time() - cpu) * 1000, 1)
        self._state = state

    async def _list(self) -> tuple[int, dict[str, KV]]:
        """The whole prefix at one revision, each page decoded into the cache (in a
        worker thread, one page at a time, in order) while the next pages are read: the
        build then finds its items decoded. The decoding is the build's own
        (``DecodeCache.get_parsed``), so what it rejects is rejected the same. The pages
        waiting for it are those of ``listed``: no second copy."""
        listed: dict[str, KV] = {}
        revision = 0
        waiting: asyncio.Queue[list[KV] | None] = asyncio.Queue()

        async def decode() -> None:
            while (kvs := await waiting.get()) is not None:
                await asyncio.to_thread(self._predecode, kvs)

        decoding = asyncio.ensure_future(decode())
        listing = pages(self._client, self._layout.prefix, page=self._list_page)
        try:
            async for read_at, kvs in listing:
                revision = read_at
                listed.update((kv.key, kv) for kv in kvs)
                waiting.put_nowait(kvs)
            waiting.put_nowait(None)
            await asyncio.shield(decoding)
        finally:
            # a failed or cancelled list (compacted, etcd down, the watcher stopped and
            # run again): the next reload prunes the cache, so no page may still be
            # decoding into it; waits one page's decoding at most
            if not decoding.done():
                while not waiting.empty():
                    waiting.get_nowait()
                waiting.put_nowait(None)
                with contextlib.suppress(Exception):  # a cancellation goes on
                    await decoding
        return revision, listed

    def _predecode(self, kvs: list[KV]) -> None:
        """Decode one listed page into the cache (in a worker thread)."""
        parse, get = self._layout.parse, self._cache.get_parsed
        prefix = self._layout.prefix
        cut = len(prefix)
        for kv in kvs:
            parsed = parse(kv.key)
            if parsed is None:
                if not kv.key.startswith(prefix) or not view_skips(kv.key[cut:]):
                    get(kv, parsed)
            elif not parsed_view_skips(parsed):
                get(kv, parsed)

    async def _behind_barrier(
        self, listed: dict[str, KV], applying: KV
    ) -> tuple[dict[str, KV], Delta]:
        """An apply is under way: the config as it was before it, and what it holds."""
        before = applying.create_revision - 1
        try:
            old: dict[str, KV] = {}
            for kind in sorted(HELD_KINDS):
                _, kvs = await list_prefix(self._client, self._layout.folder(kind), revision=before)
                old.update((kv.key, kv) for kv in kvs if self._held_kind(kv.key))
        except EtcdCompacted:
            self.stats.barrier_compacted += 1
            log.warning("watch.barrier_compacted", barrier=applying.create_revision)
            old = {k: kv for k, kv in self._state.kvs.items() if self._held_kind(k)}
        now = {k: kv for k, kv in listed.items() if self._held_kind(k)}
        held: Delta = {k: None for k in old if k not in now}
        held.update((k, kv) for k, kv in now.items() if old.get(k) != kv)
        runtime = {k: kv for k, kv in listed.items() if not self._held_kind(k)}
        runtime.update(old)
        return runtime, held

    async def _watch(self) -> None:
        stream = await self._client.watch(
            self._layout.prefix, start_revision=self._revision + 1, progress_notify=True
        )
        self._streams += 1
        self._failures = 0
        if self._streams > 1:
            self.stats.reconnects += 1
            log.info("watch.resumed", revision=self._revision, reconnects=self.stats.reconnects)
        self.stats.connected = True
        self.stats.watching = True
        if self._view.stale and self._view.source == "etcd":
            self._emit(dataclasses.replace(self._view, stale=False))
        queue: asyncio.Queue[WatchBatch | BaseException] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read(stream, queue))
        try:
            asked = False
            while True:
                wait = self._progress_interval
                if self._pending:
                    wait = max(0.0, self._flush_at() - loop.time())
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel
                    # that meets an arriving event, and the watcher then never stops
                    async with asyncio.timeout(wait):
                        item = await queue.get()
                except TimeoutError:
                    if self._pending:
                        await self._flush()
                        continue
                    if asked:
                        raise stream.unavailable("no answer to a progress request") from None
                    await stream.request_progress()
                    asked = True
                    continue
                asked = False
                if isinstance(item, BaseException):
                    raise item
                if not item.events:
                    self.stats.progress_notifies += 1
                    continue
                idle = not self._pending and loop.time() - self._last_flush >= self._max_delay
                release = self._take(item, loop.time())
                if self._pending and (release or (idle and self._pending_loud)):
                    await self._flush()
        finally:
            self.stats.watching = False
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await stream.aclose()
            if self._pending and not self._need_reload:
                await self._flush()  # whole responses taken in: apply them before resuming

    def _flush_at(self) -> float:
        if not self._pending_loud:
            return self._pending_first + self._max_delay
        return min(self._pending_first + self._max_delay, self._pending_last + self._debounce)

    @staticmethod
    async def _read(stream: WatchStream, queue: asyncio.Queue[WatchBatch | BaseException]) -> None:
        try:
            while True:
                queue.put_nowait(await stream.next())
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            queue.put_nowait(exc)

    def _take(self, batch: WatchBatch, now: float) -> bool:
        """Take one whole watch response in (pending or held); True when a barrier fell."""
        released = False
        taken = False
        applying_key = self._layout.applying()
        for event in batch.events:
            kv = event.kv
            if kv.mod_revision <= self._revision:
                continue  # already taken in (a replay after a reconnect)
            self.stats.events += 1
            value = kv if event.kind == "put" else None
            key = kv.key
            if view_skips(key[len(self._layout.prefix) :]):
                taken = True  # a cluster's health report or lock: its leader's, no view's
                continue
            if key == applying_key:
                if value is not None and self._barrier == 0:
                    self._barrier = kv.create_revision
                    log.info("watch.barrier_holding", barrier=self._barrier)
                elif value is None and self._barrier:
                    released = True
                    self._release()
            if self._barrier and kv.mod_revision > self._barrier and self._held_kind(key):
                self._held[key] = value
                if value is None:
                    self._held_floor = max(self._held_floor, kv.mod_revision)
                self._pending_revision = max(self._pending_revision, kv.mod_revision)
            else:
                self._add(key, value, kv.mod_revision, now)
            taken = True
        if taken:
            self._revision = max(self._revision, batch.last_event_revision)
            self._pending_revision = max(self._pending_revision, self._revision)
            if self._pending and not released and self._pending_first != now:
                self.stats.coalesced += 1
        self.stats.barrier = self._barrier
        self.stats.held = len(self._held)
        return released

    def _add(self, key: str, value: KV | None, revision: int, now: float) -> None:
        if not self._pending:
            self._pending_first = now
            self._pending_loud = False
        self._pending[key] = value
        self._pending_last = now
        if key not in self._own_keys:
            self._pending_loud = True
        if value is None and self._held_kind(key):
            self._config_floor = max(self._config_floor, revision)

    def _release(self) -> None:
        """The barrier fell: every held event joins the pending update, in order."""
        held, self._held = self._held, {}
        if held and not self._pending:
            self._pending_first = asyncio.get_running_loop().time()
        for key, value in held.items():
            self._pending.pop(key, None)
            self._pending[key] = value
        self._pending_loud = True
        self._config_floor = max(self._config_floor, self._held_floor)
        self._held_floor = 0
        self._barrier = 0
        self.stats.barrier_releases += 1

    async def _flush(self) -> None:
        delta, self._pending = self._pending, {}
        self._pending_loud = False
        await self._apply(self._state, delta, self._pending_revision)

    async def _apply(
        self, state: ViewState, delta: Delta, revision: int, *, full: bool = False
    ) -> None:
        """Apply one delta: one new view, handed over once.

        A full load (``full``) is applied in a worker thread with the collector paused,
        and its objects are then kept out of later collections (``federation.heap``);
        so are those of later updates, every ``SETTLE_BYTES`` of values decoded (at most
        every ``SETTLE_INTERVAL``): without it, health churn refills the collected
        generations with view objects (75 ms collections at 10 clusters).
        """
        loop = asyncio.get_running_loop()
        self._last_flush = loop.time()
        now = self._clock()
        kw = {"revision": revision, "now": now, "config_floor": self._config_floor}
        size = sum(len(kv.value) for kv in delta.values() if kv is not None)
        if full:
            self.stats.offloaded += 1
            with heap.paused():
                view = await asyncio.to_thread(lambda: state.apply(delta, **kw))  # type: ignore[arg-type]
        elif (
            len(delta) > self._offload_keys
            or size > OFFLOAD_BYTES
            or len(state.health) > OFFLOAD_PAIRS  # a new view copies O(pairs) maps
            or state.heavy(delta)
        ):
            self.stats.offloaded += 1
            view = await asyncio.to_thread(lambda: state.apply(delta, **kw))  # type: ignore[arg-type]
        else:
            started = time.perf_counter()
            view = state.apply(delta, **kw)  # type: ignore[arg-type]
            took = (time.perf_counter() - started) * 1000
            self.stats.longest_apply_ms = max(self.stats.longest_apply_ms, round(took, 3))
        self._cache.retain(state.kvs)
        previous = self._view
        changed = set(delta)
        new_rejections = [
            r for r in view.rejected if r.key in changed and r not in previous.rejected
        ]
        self.stats.update_attempt += 1
        if new_rejections:
            self.stats.update_rejected += 1
            self.stats.rejected_items += len(new_rejections)
        else:
            self.stats.update_success += 1
        costs = state.stats
        self.stats.config_rebuilds = costs.config_rebuilds
        self.stats.endpoint_pairs = costs.endpoint_pairs
        self.stats.health_pairs = costs.health_pairs
        self.stats.revision = view.revision
        self.stats.config_revision = view.config_revision
        self.stats.last_update = self._clock()
        self._emit(view)
        self._decoded_since_settle += size
        if full or (
            self._decoded_since_settle >= SETTLE_BYTES
            and loop.time() - self._settled_at >= SETTLE_INTERVAL
        ):
            heap.settle(young=not full)  # after _emit: the listeners' structures too
            self._decoded_since_settle, self._settled_at = 0, loop.time()
        if self._writer is not None:  # what changed goes to the writer process
            self._writer.schedule(view, None if full else delta.keys())

    def _emit(self, view: RoutingView) -> None:
        self._view = view
        self.stats.stale = view.stale
        self._ready.set()
        try:
            self._on_view(view)
        except Exception:
            log.exception("watch.callback_failed")

    def _mark_stale(self) -> None:
        if not self._view.stale and self._ready.is_set():
            self._emit(dataclasses.replace(self._view, stale=True))

    async def _serve_snapshot(self) -> None:
        if self._snapshot_path is None or self.stats.snapshot_loaded:
            return
        view = await asyncio.to_thread(load_snapshot, self._snapshot_path)
        self.stats.snapshot_loaded = True
        if view is None:
            log.warning("watch.no_snapshot")
            return
        log.warning("watch.serving_snapshot", revision=view.revision)
        self._emit(view)
