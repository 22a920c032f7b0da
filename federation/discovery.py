"""Kubernetes endpoint discovery: EndpointSlices -> endpoints in etcd, under the gateway's lease.

For every manifest service that runs in this gateway's cluster, and every namespace of
``Cluster.kubernetes.namespaces``, one thread lists then watches the service's
EndpointSlices (``federation.endpointslices``: resume from the last resourceVersion,
list again on ``410 Gone``, reconnect with backoff) and hands every new state of its
slices to the event loop. There the endpoints of all namespaces of a service are
merged, and written to etcd at ``layout.endpoints(service, cluster, source)`` as
``codec.encode([Endpoint, ...])`` under the gateway's lease, only when they changed.
The key is deleted when the service has no EndpointSlice left (or leaves the manifest).
After the lease was lost and granted anew, every key is written again.

One key holds at most ``federation.limits.MAX_ENDPOINTS_PER_KEY`` endpoints (every
gateway refuses a longer value): past that, discovery writes the cap itself, routable
endpoints first, says so in one warning line, in :meth:`EndpointDiscovery.status` and
in ``fedgate_discovery_endpoints_dropped{service}``, instead of writing a value every
gateway would refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client.core import GaugeMetricFamily

from federation import codec
from federation.endpointslices import (
    SERVICE_NAME_LABEL,
    SOURCE,
    Backoff,
    SliceWatcher,
    endpoints_from_slices,
    join_all,
    kubernetes_api_client,
)
from federation.keys import KeyLayout
from federation.limits import MAX_ENDPOINTS_PER_KEY
from federation.logging import get_logger
from federation.model import Cluster, Endpoint, Service

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from federation.etcd import EtcdClient

__all__ = [
    "SERVICE_NAME_LABEL",
    "Backoff",
    "EndpointDiscovery",
    "cap_endpoints",
    "endpoints_from_slices",
    "kubernetes_api_client",
]

log = get_logger(__name__)


class LeasedWriter(Protocol):
    """What discovery needs of ``federation.liveness.GatewayLease``."""

    def on_new_lease(self, callback: Callable[[int], Awaitable[None]]) -> None: ...

    async def put(self, key: str, value: bytes) -> None: ...


# ------------------------------------------------------------------- the discovery


_ABSENT: tuple[Endpoint, ...] | None = None


def cap_endpoints(
    endpoints: tuple[Endpoint, ...], limit: int = MAX_ENDPOINTS_PER_KEY
) -> tuple[tuple[Endpoint, ...], int]:
    """At most ``limit`` endpoints (routable first, then serving, then by address), in
    address order; and how many were left out. Costs a sort only past the limit."""
    if len(endpoints) <= limit:
        return endpoints, 0
    best = sorted(endpoints, key=lambda e: (not e.routable, not e.serving, e.address))
    kept = sorted(best[:limit], key=lambda e: e.address)
    return tuple(kept), len(endpoints) - limit


class EndpointDiscovery:
    """Keeps ``endpoints/<cluster>/<service>/<source>`` in etcd equal to the EndpointSlices."""

    def __init__(
        self,
        *,
        client: EtcdClient,
        layout: KeyLayout,
        lease: LeasedWriter,
        cluster: Cluster,
        services: Callable[[], Sequence[Service]],
        api_client: Any,
        source: str = SOURCE,
        watch_timeout: int = 30,
        request_timeout: float = 5.0,
        page_size: int = 500,
        rescan_interval: float = 1.0,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        rng: random.Random | None = None,
        max_endpoints: int = MAX_ENDPOINTS_PER_KEY,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._client = client
        self._layout = layout
        self._lease = lease
        self._cluster = cluster
        self._services = services
        self._api_client = api_client
        self._source = source
        self._watch_timeout = watch_timeout
        self._request_timeout = request_timeout
        self._page_size = page_size
        self._rescan_interval = rescan_interval
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._rng = rng or random.Random()
        self._watchers: dict[tuple[str, str], SliceWatcher] = {}
        self._specs: dict[str, Service] = {}
        # service -> namespace -> endpoints (None: no slices there)
        self._found: dict[str, dict[str, tuple[Endpoint, ...] | None]] = {}
        self._written: dict[str, tuple[Endpoint, ...]] = {}
        self._max_endpoints = max_endpoints
        # service -> endpoints found but not written (the per-key cap); only capped ones
        self.dropped: dict[str, int] = {}
        self._dirty = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats: dict[str, int] = {
            "lists": 0,
            "watches": 0,
            "gone": 0,
            "bookmarks": 0,
            "errors": 0,
            "writes": 0,
            "deletes": 0,
            "write_errors": 0,
        }
        self.last_write_error: str | None = None
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """``fedgate_discovery_endpoints_dropped{service}``: a Prometheus collector."""
        family = GaugeMetricFamily(
            "fedgate_discovery_endpoints_dropped",
            f"Endpoints discovered but not published: over the cap of {self._max_endpoints} "
            "per service and cluster that every gateway enforces.",
            labels=["service"],
        )
        for svc, n in sorted(self.dropped.items()):
            family.add_metric([svc], n)
        yield family

    # -- what the gateway's status shows
    def status(self) -> dict[str, object]:
        return {
            "cluster": self._cluster.name,
            "namespaces": list(self._namespaces()),
            "services": sorted(self._specs),
            "watchers": sum(1 for w in self._watchers.values() if w.alive),
            "endpoints": {s: len(e) for s, e in sorted(self._written.items())},
            "last_write_error": self.last_write_error,
            "dropped": dict(sorted(self.dropped.items())),
            **self.stats,
        }

    def desired(self) -> dict[str, tuple[Endpoint, ...]]:
        """Service -> the endpoints that should be in etcd now (absent: no slices), at
        most the per-key cap each (:attr:`dropped` says how many were left out)."""
        out: dict[str, tuple[Endpoint, ...]] = {}
        for svc, per_ns in self._found.items():
            if svc not in self._specs:
                continue
            present = [eps for eps in per_ns.values() if eps is not None]
            if present:
                merged = {e.address: e for eps in present for e in eps}
                out[svc], dropped = cap_endpoints(
                    tuple(merged[a] for a in sorted(merged)), self._max_endpoints
                )
                self._note_cap(svc, dropped)
        for svc in [s for s in self.dropped if s not in out]:
            self._note_cap(svc, 0)
        return out

    def _note_cap(self, svc: str, dropped: int) -> None:
        before = self.dropped.get(svc, 0)
        if dropped and not before:
            log.warning(
                "endpoints.capped",
                service=svc,
                found=self._max_endpoints + dropped,
                written=self._max_endpoints,
                reason=f"at most {self._max_endpoints} endpoints per service and cluster "
                "(every gateway refuses more); routable ones kept",
            )
        elif before and not dropped:
            log.info("endpoints.cap_lifted", service=svc)
        if dropped:
            self.dropped[svc] = dropped
        else:
            self.dropped.pop(svc, None)

    def _namespaces(self) -> tuple[str, ...]:
        k8s = self._cluster.kubernetes
        return tuple(k8s.namespaces) if k8s is not None else ()

    # -- life cycle
    async def run(self) -> None:
        """Discover until cancelled; then stop every watch thread."""
        if not self._namespaces():
            log.info("discovery.off", cluster=self._cluster.name, reason="no kubernetes namespaces")
            return
        self._loop = asyncio.get_running_loop()
        self._lease.on_new_lease(self._on_new_lease)
        writer = asyncio.create_task(self._write_loop(), name="discovery-writer")
        try:
            while True:
                self._reconcile()
                await asyncio.sleep(self._rescan_interval)  # the manifest's service set
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            watchers = list(self._watchers.values())
            self._watchers.clear()
            for w in watchers:
                w.stop()  # each blocked read returns at once (its socket is shut down)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.to_thread(join_all, watchers, 2.0)

    async def _on_new_lease(self, lease_id: int) -> None:
        # keys bound to the lost lease are gone: write everything again
        self._written.clear()
        self._dirty.set()

    def _reconcile(self) -> None:
        """Start watchers for services that run here, stop those of services that left."""
        wanted = {s.name: s for s in self._services() if self._cluster.name in s.clusters}
        for key, w in list(self._watchers.items()):
            spec = wanted.get(key[1])
            if spec is None or spec != w.service:
                w.stop()
                del self._watchers[key]
                if spec is None or spec.port != w.service.port:
                    self._found.get(key[1], {}).pop(key[0], None)
        for name in list(self._found):
            if name not in wanted:
                del self._found[name]
        changed = set(self._specs) != set(wanted)
        self._specs = wanted
        for name, spec in wanted.items():
            for ns in self._namespaces():
                if (ns, name) in self._watchers:
                    continue
                w = SliceWatcher(
                    api_client=self._api_client,
                    namespace=ns,
                    service=spec,
                    cluster=self._cluster.name,
                    publish=self._publish_threadsafe,
                    watch_timeout=self._watch_timeout,
                    request_timeout=self._request_timeout,
                    page_size=self._page_size,
                    backoff=Backoff(
                        self._backoff_base,
                        self._backoff_cap,
                        random.Random(self._rng.random()),
                    ),
                    stats=self.stats,
                )
                self._watchers[(ns, name)] = w
                w.start()
        if changed:
            self._dirty.set()

    def _publish_threadsafe(
        self, watcher: SliceWatcher, endpoints: tuple[Endpoint, ...] | None
    ) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._on_found, watcher, endpoints)

    def _on_found(self, watcher: SliceWatcher, endpoints: tuple[Endpoint, ...] | None) -> None:
        ns, svc = watcher.namespace, watcher.service.name
        if self._watchers.get((ns, svc)) is not watcher:
            return  # a watcher that was stopped meanwhile
        self._found.setdefault(svc, {})[ns] = endpoints
        self._dirty.set()

    async def _write_loop(self) -> None:
        backoff = Backoff(self._backoff_base, self._backoff_cap, random.Random(self._rng.random()))
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            failed = await self._write_changes()
            if failed:
                await asyncio.sleep(backoff.next())
                self._dirty.set()
            else:
                backoff.reset()

    async def _write_changes(self) -> bool:
        """Write what changed; True if some write failed (it is retried)."""
        want = self.desired()
        failed = False
        for svc in sorted(set(want) | set(self._written)):
            new = want.get(svc, _ABSENT)
            if new is not None and self._written.get(svc) == new:
                continue
            key = self._layout.endpoints(svc, self._cluster.name, self._source)
            try:
                if new is None:
                    await self._client.delete(key)
                    self._written.pop(svc, None)
                    self.stats["deletes"] += 1
                    log.info("endpoints.deleted", service=svc, key=key)
                else:
                    await self._lease.put(key, codec.encode(list(new)))
                    self._written[svc] = new
                    self.stats["writes"] += 1
                    log.info(
                        "endpoints.written",
                        service=svc,
                        key=key,
                        total=len(new),
                        routable=sum(1 for e in new if e.routable),
                        dropped=self.dropped.get(svc, 0),
                    )
                self.last_write_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed = True
                self.stats["write_errors"] += 1
                self.last_write_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                log.warning("endpoints.write_failed", service=svc, error=self.last_write_error)
        return failed
