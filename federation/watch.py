"""List-then-watch: the routing view of every gateway, kept current from etcd.

:class:`ViewWatcher` reads every key under the prefix in one linearizable read at
revision R, builds the view, then watches the prefix from R+1. Each watch response
(all events of one or more whole etcd transactions: a transaction is never split) is
applied at once and gives one new immutable view, handed to ``on_view``; the caller
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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from federation.etcd import KV, EtcdClient, EtcdCompacted, EtcdError, WatchBatch, WatchStream
from federation.keys import CONFIG_KINDS, KeyLayout
from federation.model import RoutingView
from federation.snapshot import SnapshotWriter, load_snapshot
from federation.view import DecodeCache, build_view

log = logging.getLogger(__name__)

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

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    ) -> None:
        self._client = client
        self._layout = layout
        self._on_view = on_view
        self._clock = clock
        self._progress_interval = progress_interval
        self._max_backoff = max_backoff
        self._snapshot_path = snapshot_path
        self._writer = (
            SnapshotWriter(snapshot_path, debounce=snapshot_debounce) if snapshot_path else None
        )
        self._view = RoutingView()
        self._kvs: dict[str, KV] = {}
        self._cache = DecodeCache()
        self._revision = 0  # last applied revision; 0 = nothing listed yet
        self._config_floor = 0
        self._need_reload = True
        self._streams = 0
        self._failures = 0  # consecutive failures (reset once a watch is open)
        self._ready = asyncio.Event()
        self.stats = WatchStats()

    # -- what callers read
    @property
    def view(self) -> RoutingView:
        return self._view

    @property
    def revision(self) -> int:
        return self._revision

    async def wait_ready(self, timeout: float | None = None) -> RoutingView:
        """Wait for a first view (from etcd or the snapshot)."""
        await asyncio.wait_for(self._ready.wait(), timeout)
        return self._view

    # -- the loop
    async def run(self) -> None:
        """List, then watch, forever (until cancelled). Resumes where it stopped."""
        try:
            while True:
                try:
                    if self._need_reload:
                        await self._reload()
                    await self._watch()
                except EtcdCompacted as exc:
                    self.stats.compactions += 1
                    self._need_reload = True
                    log.info("watch: %s; reloading the whole prefix", exc)
                    continue
                except EtcdError as exc:
                    self._failures += 1
                    failures = self._failures
                    self.stats.failures += 1
                    self.stats.connected = False
                    self.stats.last_error = str(exc)
                    if failures == 1:
                        log.warning("etcd watch interrupted: %s", exc)
                    if self._revision == 0 and not self._ready.is_set():
                        self._serve_snapshot()
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

    async def _reload(self) -> None:
        revision, kvs = await self._client.get_prefix(self._layout.prefix)
        self.stats.full_reloads += 1
        previous = self._view
        self._kvs = {kv.key: kv for kv in kvs}
        self._cache.retain(self._kvs)
        # a config key deleted while we were away leaves no trace; keep the old floor
        # when the store is the same one (its revision did not go backwards)
        if revision < previous.revision:
            self._config_floor = 0
        else:
            self._config_floor = max(self._config_floor, previous.config_revision)
        self._revision = revision
        self._need_reload = False
        self.stats.connected = True
        self._publish(previous, revision, changed=set(self._kvs))

    async def _watch(self) -> None:
        stream = await self._client.watch(
            self._layout.prefix, start_revision=self._revision + 1, progress_notify=True
        )
        self._streams += 1
        self._failures = 0
        if self._streams > 1:
            self.stats.reconnects += 1
        self.stats.connected = True
        self.stats.watching = True
        if self._view.stale and self._view.source == "etcd":
            self._emit(dataclasses.replace(self._view, stale=False))
        queue: asyncio.Queue[WatchBatch | BaseException] = asyncio.Queue()
        reader = asyncio.get_running_loop().create_task(self._read(stream, queue))
        try:
            asked = False
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self._progress_interval)
                except TimeoutError:
                    if asked:
                        raise stream.unavailable("no answer to a progress request") from None
                    await stream.request_progress()
                    asked = True
                    continue
                asked = False
                if isinstance(item, BaseException):
                    raise item
                if item.events:
                    self._apply(item)
                else:
                    self.stats.progress_notifies += 1
        finally:
            self.stats.watching = False
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await stream.aclose()

    @staticmethod
    async def _read(stream: WatchStream, queue: asyncio.Queue[WatchBatch | BaseException]) -> None:
        try:
            while True:
                queue.put_nowait(await stream.next())
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            queue.put_nowait(exc)

    def _apply(self, batch: WatchBatch) -> None:
        """Apply one whole watch response: one new view."""
        changed: set[str] = set()
        revision = self._revision
        for event in batch.events:
            kv = event.kv
            if kv.mod_revision <= self._revision:
                continue  # already applied (a replay after a reconnect)
            changed.add(kv.key)
            if event.kind == "put":
                self._kvs[kv.key] = kv
            else:
                self._kvs.pop(kv.key, None)
                parsed = self._layout.parse(kv.key)
                if parsed is not None and parsed.kind in CONFIG_KINDS:
                    self._config_floor = max(self._config_floor, kv.mod_revision)
            revision = max(revision, kv.mod_revision)
        if not changed:
            return
        previous = self._view
        self._revision = revision
        self._publish(previous, revision, changed=changed)

    def _publish(self, previous: RoutingView, revision: int, *, changed: set[str]) -> None:
        view = build_view(
            self._kvs,
            layout=self._layout,
            revision=revision,
            previous=previous,
            now=self._clock(),
            cache=self._cache,
            config_floor=self._config_floor,
        )
        self._cache.retain(self._kvs)
        new_rejections = [r for r in view.rejected if r.key in changed]
        self.stats.update_attempt += 1
        if new_rejections:
            self.stats.update_rejected += 1
            self.stats.rejected_items += len(new_rejections)
        else:
            self.stats.update_success += 1
        self.stats.revision = revision
        self.stats.config_revision = view.config_revision
        self.stats.last_update = self._clock()
        self._emit(view)
        if self._writer is not None:
            self._writer.schedule(view)

    def _emit(self, view: RoutingView) -> None:
        self._view = view
        self.stats.stale = view.stale
        self._ready.set()
        try:
            self._on_view(view)
        except Exception:
            log.exception("on_view callback failed")

    def _mark_stale(self) -> None:
        if not self._view.stale and self._ready.is_set():
            self._emit(dataclasses.replace(self._view, stale=True))

    def _serve_snapshot(self) -> None:
        if self._snapshot_path is None or self.stats.snapshot_loaded:
            return
        view = load_snapshot(self._snapshot_path)
        self.stats.snapshot_loaded = True
        if view is None:
            log.warning("etcd unreachable at start and no usable snapshot")
            return
        log.warning(
            "etcd unreachable at start: serving the snapshot of revision %d (stale)",
            view.revision,
        )
        self._emit(view)
