"""Health observations: active probes + passive statistics -> Observations in etcd, leased.

A :class:`HealthReporter` runs in every gateway. It

* probes every endpoint of every service that runs in its own cluster
  (``GET healthCheck.path``, the manifest's interval and timeout, ``healthyAfter`` /
  ``unhealthyAfter`` hysteresis per endpoint), with a tiny HTTP/1.1 client on raw asyncio
  streams (one short connection per probe);
* pings the east-west listener of every other cluster (``GET /__fedgate/ping`` on
  ``Cluster.east_west``, or on each live gateway's URL when the cluster has none), over
  TLS with the east-west client context when one is given;
* reads the passive statistics of real traffic (error rate, latency EWMA);
* publishes its opinions (its *local view*) as one key, ``layout.health_report(cluster,
  gateway_id)`` = a JSON list of :class:`Observation`, under the gateway's lease: a dead
  observer's opinions vanish with it. It writes on a state change at once, on a
  statistics change at most every ``stats_interval`` seconds, and again after every new
  lease. Only its cluster's health leader reads that key (``federation.health_leader``),
  and the leader's own view goes to it in memory (:meth:`HealthReporter.lead`) instead;
* tells the local placement at once when its own endpoints change
  (``sink.local_endpoints``), without waiting for the round trip through etcd.

The federation package never imports the gateway package: the parts it needs are the
small protocols below.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from federation import codec
from federation.grpc_health import grpc_probe
from federation.health_summary import compact
from federation.keys import KeyLayout
from federation.logging import get_logger
from federation.model import ANY, HealthCheck, HealthState, Observation, RoutingView, Service

log = get_logger(__name__)

PING_PATH = "/__fedgate/ping"
DEGRADED_ERROR_RATE = 0.05
UNHEALTHY_ERROR_RATE = 0.5
MIN_REQUESTS = 10  # passive statistics count only with this many requests in the window
STATS_EPSILON = 0.02  # error rate change that is worth a write
LATENCY_EPSILON = 0.25  # relative latency change that is worth a write
DEFAULT_GATEWAY_CHECK = HealthCheck(
    path=PING_PATH, interval=0.5, timeout=0.5, healthy_after=2, unhealthy_after=2
)


class Lease(Protocol):
    """What the reporter needs of ``federation.liveness.GatewayLease``."""

    @property
    def lease_id(self) -> int | None: ...

    def on_new_lease(self, callback: Callable[[int], Awaitable[None]]) -> None: ...

    async def put(self, key: str, value: bytes) -> None: ...


class ViewSource(Protocol):
    @property
    def view(self) -> RoutingView: ...


class PassiveSource(Protocol):
    def snapshot(self) -> Mapping[tuple[str, str], tuple[float, float, int]]: ...


class LocalSink(Protocol):
    """The gateway's placement: told at once about the own cluster's endpoints."""

    def local_endpoints(self, service: str, *, healthy: int, total: int) -> None: ...


# --------------------------------------------------------------------------- hysteresis


@dataclass(slots=True)
class ProbeState:
    """One target's health with hysteresis.

    Unknown until the first result (which decides at once); then ``unhealthy_after``
    failures in a row take it down and ``healthy_after`` successes in a row bring it back.
    """

    healthy_after: int = 2
    unhealthy_after: int = 3
    healthy: bool | None = None
    successes: int = 0
    failures: int = 0
    last_change: float = 0.0

    def record(self, ok: bool, now: float = 0.0) -> bool:
        """Count one probe result; True when the state changed."""
        if ok:
            self.successes += 1
            self.failures = 0
            flip = self.healthy is None or (
                not self.healthy and self.successes >= self.healthy_after
            )
            new = True
        else:
            self.failures += 1
            self.successes = 0
            flip = self.healthy is None or (
                bool(self.healthy) and self.failures >= self.unhealthy_after
            )
            new = False
        if flip and self.healthy is not new:
            self.healthy = new
            self.last_change = now
            return True
        return False


# --------------------------------------------------------------------------- HTTP probe


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError with one line otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


async def http_probe(
    host: str,
    port: int,
    path: str,
    *,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    host_header: str | None = None,
) -> bool:
    """One ``GET path`` over a fresh connection: True on a 2xx/3xx status within ``timeout``."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host_header or host}\r\n"
        "User-Agent: fedgate-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=ssl_context,
                server_hostname=host if ssl_context is not None else None,
            )
            writer.write(request)
            line = await reader.readline()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            return False
        return 200 <= int(parts[1]) < 400
    except (OSError, TimeoutError, ssl.SSLError, ValueError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            if ssl_context is None:
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that
                # meets the inner's completion, and the probe loop would never stop
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(0.2):
                        await writer.wait_closed()


# --------------------------------------------------------------------------- targets


@dataclass(slots=True)
class _Target:
    kind: str  # "endpoint" | "gateway"
    name: str  # service (endpoint) or cluster (gateway)
    address: str  # host:port
    path: str
    check: HealthCheck
    tls: bool = False
    grpc: bool = False  # protocol: grpc -> grpc.health.v1.Health/Check (grpc_health.py)
    state: ProbeState = field(default_factory=ProbeState)
    task: asyncio.Task[None] | None = None


Observed = tuple[str, str, str, int, int]  # service, cluster, state, healthy, total


class HealthReporter:
    """Probes, aggregates its own opinions and publishes them under the gateway's lease."""

    def __init__(
        self,
        *,
        lease: Lease,
        layout: KeyLayout,
        gateway_id: str,
        cluster: str,
        holder: ViewSource,
        passive: PassiveSource,
        east_west_context: ssl.SSLContext | None,
        placement: LocalSink | None = None,
        clock: Callable[[], float] = time.time,
        stats_interval: float = 2.0,
        gateway_check: HealthCheck = DEFAULT_GATEWAY_CHECK,
    ) -> None:
        self._lease = lease
        self._key = layout.health_report(cluster, gateway_id)
        self._leader: Callable[[tuple[Observation, ...]], None] | None = None
        self._gateway_id = gateway_id
        self._cluster = cluster
        self._holder = holder
        self._passive = passive
        self._tls = east_west_context
        self._sink = placement
        self._clock = clock
        self._stats_interval = stats_interval
        self._gateway_check = gateway_check
        self._targets: dict[tuple[str, str, str], _Target] = {}
        self._view: RoutingView | None = None
        self._changed = asyncio.Event()
        self._published: tuple[Observation, ...] | None = None
        self._published_at = -1e18
        self._local: dict[str, tuple[int, int]] = {}
        self._shape_of: RoutingView | None = None
        self._shape_cache: tuple[list[Service], list[str]] = ([], [])
        self.writes = 0
        self.probes = 0
        lease.on_new_lease(self._on_new_lease)

    # ------------------------------------------------------------------ life cycle
    async def run(self) -> None:
        """Probe and publish until cancelled."""
        try:
            while True:
                view = self._holder.view
                if view is not self._view:
                    before, self._view = self._view, view
                    # the targets follow services, clusters, endpoints and gateways only:
                    # a health-only view (most of them) keeps those objects
                    if before is None or any(
                        getattr(view, part) is not getattr(before, part)
                        for part in ("services", "clusters", "endpoints", "gateways")
                    ):
                        self._reconcile(view)
                        self._notify_local()
                await self.publish()
                with contextlib.suppress(TimeoutError):  # (asyncio.timeout: see above)
                    async with asyncio.timeout(min(0.5, self._stats_interval)):
                        await self._changed.wait()
                self._changed.clear()
        finally:
            await self._stop_targets()

    async def _stop_targets(self) -> None:
        tasks = [t.task for t in self._targets.values() if t.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._targets.clear()

    async def _on_new_lease(self, lease_id: int) -> None:
        self._published = None  # the old key died with the old lease
        await self.publish(force=True)

    # ------------------------------------------------------------------ targets
    def _reconcile(self, view: RoutingView) -> None:
        wanted: dict[tuple[str, str, str], _Target] = {}
        for svc in view.services.values():
            if self._cluster not in svc.clusters:
                continue
            for ep in view.endpoints_of(svc.name, self._cluster):
                if ep.routable:
                    key = ("endpoint", svc.name, ep.address)
                    wanted[key] = _Target(
                        "endpoint", svc.name, ep.address, svc.health_check.path, svc.health_check,
                        grpc=svc.protocol == "grpc",
                    )  # fmt: skip
        runs_in: dict[str, list[Service]] = {}  # one pass, not clusters x services
        for svc in view.services.values():
            for c in svc.clusters:
                runs_in.setdefault(c, []).append(svc)
        for name, cluster in view.clusters.items():
            if name == self._cluster:
                continue
            runs = runs_in.get(name)
            if not runs:
                continue
            urls = [cluster.east_west] if cluster.east_west else []
            if not urls:
                urls = [g.east_west for g in view.gateways_in(name) if g.east_west]
            check = self._gateway_check_for(runs)
            for url in urls:
                parts = urlsplit(url)
                if not parts.hostname or parts.scheme not in ("http", "https"):
                    continue
                if parts.scheme == "https" and self._tls is None:
                    continue  # this gateway cannot reach it either: no opinion
                try:
                    port = parts.port or (443 if parts.scheme == "https" else 80)
                except ValueError:
                    continue
                host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
                address = f"{host}:{port}"
                wanted[("gateway", name, address)] = _Target(
                    "gateway", name, address, PING_PATH, check, tls=parts.scheme == "https"
                )
        for key in list(self._targets):
            if key not in wanted:
                old = self._targets.pop(key)
                if old.task is not None:
                    old.task.cancel()
        for key, target in wanted.items():
            current = self._targets.get(key)
            if current is not None:
                current.check, current.path, current.tls = target.check, target.path, target.tls
                current.grpc = target.grpc
                current.state.healthy_after = target.check.healthy_after
                current.state.unhealthy_after = target.check.unhealthy_after
                continue
            target.state = ProbeState(target.check.healthy_after, target.check.unhealthy_after)
            target.task = asyncio.get_running_loop().create_task(
                self._probe_loop(target), name=f"probe-{key[0]}-{key[1]}-{key[2]}"
            )
            self._targets[key] = target

    def _gateway_check_for(self, services: list[Service]) -> HealthCheck:
        """Ping a cluster at the fastest pace any of its services asks for (at most 0.5 s)."""
        fastest = min(services, key=lambda s: s.health_check.interval).health_check
        base = self._gateway_check
        return HealthCheck(
            path=PING_PATH,
            interval=min(base.interval, fastest.interval),
            timeout=min(base.timeout, fastest.timeout),
            healthy_after=min(base.healthy_after, fastest.healthy_after),
            unhealthy_after=min(base.unhealthy_after, fastest.unhealthy_after),
        )

    async def _probe_loop(self, target: _Target) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(random.uniform(0, min(target.check.interval, 0.2)))  # spread
        while True:
            started = loop.time()
            try:
                host, port = split_host_port(target.address)
                ok = await (grpc_probe if target.grpc else http_probe)(
                    host,
                    port,
                    target.path,
                    timeout=target.check.timeout,
                    ssl_context=self._tls if target.tls else None,
                    host_header=target.address,
                )
            except ValueError:
                ok = False
            self.probes += 1
            if target.state.record(ok, self._clock()):
                log.info(
                    "health.changed", kind=target.kind, name=target.name, address=target.address,
                    state="healthy" if target.state.healthy else "unhealthy",
                )  # fmt: skip
                if target.kind == "endpoint":
                    self._notify_local(target.name)
                self._changed.set()
            await asyncio.sleep(max(0.05, target.check.interval - (loop.time() - started)))

    def _endpoint_counts(self, service: str) -> tuple[int, int, int]:
        """(healthy, total, unknown) of the own cluster's probed endpoints of ``service``."""
        healthy = total = unknown = 0
        for t in self._targets.values():
            if t.kind == "endpoint" and t.name == service:
                total += 1
                if t.state.healthy is None:
                    unknown += 1
                elif t.state.healthy:
                    healthy += 1
        return healthy, total, unknown

    def _notify_local(self, service: str | None = None) -> None:
        if self._sink is None or self._view is None:
            return
        names = (
            [service]
            if service is not None
            else [s.name for s in self._view.services.values() if self._cluster in s.clusters]
        )
        for name in names:
            healthy, total, unknown = self._endpoint_counts(name)
            value = (healthy + unknown, total)  # not probed yet: given the benefit of the doubt
            if self._local.get(name) != value:
                self._local[name] = value
                self._sink.local_endpoints(name, healthy=value[0], total=value[1])

    # ------------------------------------------------------------------ observations
    def observations(self) -> tuple[Observation, ...]:
        """This gateway's current opinions (its local view, ``at`` = now), O(own services
        + unreachable clusters + pairs it sends real traffic to):

        - one observation per service of its own cluster (its probes; ``unknown`` until
          every endpoint was probed);
        - one observation per (service, remote cluster) only with real traffic there
          (``MIN_REQUESTS`` in the window): its error rate and latency count;
        - one *cluster-wide exception* (``service="*"``) per remote cluster whose
          gateways it finds unreachable (``unhealthy``) or has no result for yet
          (``unknown``: no opinion);
        - the *marker* (``"*"/"*"``, healthy = reachable clusters, total = pinged) when it
          pings other clusters: every remote cluster it lists no exception for is
          reachable for it (a silent healthy vote, ``federation.aggregate``).
        """
        view = self._view if self._view is not None else self._holder.view
        now = self._clock()
        stats = self._passive.snapshot()
        # one pass over the targets (at 1,000 clusters: ~1,000 pings + own endpoints)
        pings: dict[str, list[bool | None]] = {}
        counts: dict[str, list[int]] = {}  # service -> [healthy, total, unknown]
        for t in self._targets.values():
            if t.kind == "gateway":
                pings.setdefault(t.name, []).append(t.state.healthy)
            else:
                c = counts.setdefault(t.name, [0, 0, 0])
                c[1] += 1
                if t.state.healthy is None:
                    c[2] += 1
                elif t.state.healthy:
                    c[0] += 1
        out: list[Observation] = []
        own, remote = self._shape(view)
        for svc in own:
            healthy, total, unknown = counts.get(svc.name, (0, 0, 0))
            if unknown:  # no opinion yet (said: a report leaves out what is fully healthy)
                unsure = HealthState.UNKNOWN
                out.append(self._observation(svc.name, self._cluster, unsure, healthy, total, now))
                continue
            err, ms, n = stats.get((svc.name, self._cluster), (0.0, 0.0, 0))
            state = _with_passive(_endpoint_state(healthy, total), err, n)
            out.append(self._observation(svc.name, self._cluster, state, healthy, total, now))
            if n:
                out[-1] = dataclasses.replace(
                    out[-1], error_rate=round(err, 4), latency_ms=round(ms, 2)
                )
        reach = {cluster: _reachable(pings.get(cluster, [])) for cluster in remote}
        # real traffic to another cluster: a per-service line with its statistics
        for (name, cluster), (err, ms, n) in sorted(stats.items()):
            if n < MIN_REQUESTS or cluster not in reach:
                continue
            runs = view.services.get(name)
            if runs is None or cluster not in runs.clusters:
                continue
            up = reach[cluster]
            state = HealthState.UNHEALTHY if up is False else HealthState.HEALTHY
            healthy, total = (0, 1) if up is False else (1, 1)
            state = _with_passive(state, err, n)
            out.append(
                dataclasses.replace(
                    self._observation(name, cluster, state, healthy, total, now),
                    error_rate=round(err, 4),
                    latency_ms=round(ms, 2),
                )
            )
        for cluster, up in reach.items():
            if up is False:
                out.append(self._observation(ANY, cluster, HealthState.UNHEALTHY, 0, 1, now))
            elif up is None:
                out.append(self._observation(ANY, cluster, HealthState.UNKNOWN, 0, 0, now))
        if reach:
            up_count = sum(1 for v in reach.values() if v)
            out.append(self._observation(ANY, ANY, HealthState.HEALTHY, up_count, len(reach), now))
        return tuple(out)

    def _shape(self, view: RoutingView) -> tuple[list[Service], list[str]]:
        """Own cluster's services and the other clusters that run one (once per config:
        the incremental view keeps ``services`` and ``clusters`` while they do not change)."""
        if self._shape_of is None or (
            self._shape_of.services is not view.services
            or self._shape_of.clusters is not view.clusters
        ):
            own: list[Service] = []
            remote: set[str] = set()
            for svc in sorted(view.services.values(), key=lambda s: s.name):
                remote.update(c for c in svc.clusters if c in view.clusters)
                if self._cluster in svc.clusters and self._cluster in view.clusters:
                    own.append(svc)
            remote.discard(self._cluster)
            self._shape_of = view
            self._shape_cache = (own, sorted(remote))
        return self._shape_cache

    def _observation(
        self, service: str, cluster: str, state: HealthState, healthy: int, total: int, now: float
    ) -> Observation:
        return Observation(
            observer=self._gateway_id,
            observer_cluster=self._cluster,
            service=service,
            cluster=cluster,
            state=state,
            healthy=healthy,
            total=total,
            at=now,
        )

    @property
    def cluster(self) -> str:
        return self._cluster

    @property
    def gateway_id(self) -> str:
        return self._gateway_id

    def lead(self, sink: Callable[[tuple[Observation, ...]], None]) -> None:
        """This gateway leads its cluster's health: its view goes to ``sink``, not to etcd."""
        self._leader = sink
        self._published = None
        self._changed.set()

    def follow(self) -> None:
        """Leadership lost or given up: publish the local view to etcd again, at once."""
        self._leader = None
        self._published = None
        self._changed.set()

    async def publish(self, *, force: bool = False) -> bool:
        """Write the observations if they changed materially; True when written."""
        if self._lease.lease_id is None and self._leader is None:
            return False
        current = self.observations()
        now = self._clock()
        previous = self._published
        if not force and previous is not None and _states(current) == _states(previous):
            if now - self._published_at < self._stats_interval:
                return False
            if not _stats_moved(current, previous):
                return False
        if self._leader is not None:
            self._leader(current)
            self._published, self._published_at = current, now
            return True
        try:
            await self._lease.put(self._key, codec.encode(compact(current)))
        except Exception as exc:  # etcd down or lease lost: retried on the next round
            log.debug("health.publish_failed", error=str(exc))
            return False
        self._published = current
        self._published_at = now
        self.writes += 1
        return True

    def local_status(self) -> dict[str, object]:
        """The probe results, for the status page and tests."""
        return {f"{t.kind}:{t.name}:{t.address}": t.state.healthy for t in self._targets.values()}


def _reachable(pings: list[bool | None]) -> bool | None:
    """Whether a remote cluster's gateways answer our pings (None: no result yet)."""
    known = [h for h in pings if h is not None]
    if not pings or len(known) < len(pings):
        return None
    return any(known)


def _endpoint_state(healthy: int, total: int) -> HealthState:
    if total == 0 or healthy == 0:
        return HealthState.UNHEALTHY
    return HealthState.HEALTHY if healthy >= total else HealthState.DEGRADED


def _with_passive(state: HealthState, error_rate: float, n: int) -> HealthState:
    if n < MIN_REQUESTS or state is HealthState.UNHEALTHY:
        return state
    if error_rate >= UNHEALTHY_ERROR_RATE:
        return HealthState.UNHEALTHY
    if error_rate > DEGRADED_ERROR_RATE:
        return HealthState.DEGRADED
    return state


def _states(obs: tuple[Observation, ...]) -> list[Observed]:
    return [(o.service, o.cluster, str(o.state), o.healthy, o.total) for o in obs]


def _stats_moved(current: tuple[Observation, ...], previous: tuple[Observation, ...]) -> bool:
    for a, b in zip(current, previous, strict=True):
        if abs(a.error_rate - b.error_rate) > STATS_EPSILON:
            return True
        base = max(b.latency_ms, 1.0)
        if abs(a.latency_ms - b.latency_ms) / base > LATENCY_EPSILON:
            return True
    return False
