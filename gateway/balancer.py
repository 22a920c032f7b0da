"""Which endpoint of a cluster takes a request: least-request with power of two choices.

One :class:`Balancer` per gateway process. For every request the proxy calls
:meth:`Balancer.pick` with the (service, cluster) pool from the current view, then
:meth:`Balancer.started` when the request goes upstream and :meth:`Balancer.finished`
when it is over. The balancer

* picks two distinct random candidates among the routable, non-ejected, non-excluded
  endpoints and takes the one with fewer requests in flight (one candidate: that one);
* ejects an endpoint after ``consecutive_failures`` failures in a row (passive outlier
  detection) for ``base_ejection * times_ejected`` seconds (capped at ``max_ejection``);
  ``times_ejected`` decays by one for every ``base_ejection`` seconds an endpoint stays in;
* never ejects more than ``max_ejected_percent`` of a pool, and always leaves at least one
  endpoint in (a pool of one is never ejected);
* lets an ejection expire by the injected clock; a success resets the failure counter.

State is per address (``host:port``), so the same backend shared by two pools carries
one in-flight count. Per (service, cluster) the balancer caches the routable endpoints of
the view's tuple (rebuilt only when the view hands in a different tuple), so a pick with
no ejection and no exclusion costs two random numbers and two attribute reads.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet

from federation.model import Endpoint

__all__ = ["Balancer"]

_EMPTY: frozenset[str] = frozenset()


class _Host:
    """What the balancer knows of one address."""

    __slots__ = (
        "active",
        "address",
        "ejected_until",
        "failures",
        "last_expiry",
        "pools",
        "times_ejected",
    )

    def __init__(self, address: str) -> None:
        self.address = address
        self.active = 0  # requests in flight
        self.failures = 0  # consecutive failures
        self.ejected_until = 0.0  # > now: ejected
        self.times_ejected = 0
        self.last_expiry = 0.0  # when the last ejection ended (for the multiplier decay)
        self.pools: list[_Pool] = []


class _Pool:
    """The routable endpoints of one (service, cluster) as last handed in by the view."""

    __slots__ = ("endpoints", "hosts", "key", "next_expiry", "num_ejected", "source")

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.source: Sequence[Endpoint] = ()
        self.endpoints: list[Endpoint] = []  # routable ones
        self.hosts: list[_Host] = []  # parallel to endpoints
        self.num_ejected = 0  # hosts of this pool currently ejected
        self.next_expiry = math.inf  # earliest ejection end among them


class Balancer:
    """Least-request (P2C) endpoint choice with passive outlier ejection."""

    __slots__ = (
        "_base_ejection",
        "_bits",
        "_clock",
        "_consecutive_failures",
        "_hosts",
        "_max_ejected_percent",
        "_max_ejection",
        "_pools",
    )

    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        consecutive_failures: int = 5,
        base_ejection: float = 30.0,
        max_ejected_percent: float = 50.0,
        max_ejection: float = 300.0,
    ) -> None:
        self._bits = (rng or random.Random()).getrandbits
        self._clock = clock
        self._consecutive_failures = consecutive_failures
        self._base_ejection = base_ejection
        self._max_ejected_percent = max_ejected_percent
        self._max_ejection = max_ejection
        self._hosts: dict[str, _Host] = {}
        self._pools: dict[str, dict[str, _Pool]] = {}  # service -> cluster -> pool

    # ------------------------------------------------------------------ request path

    def pick(
        self,
        service: str,
        cluster: str,
        endpoints: Sequence[Endpoint],
        *,
        exclude: AbstractSet[str] = _EMPTY,
    ) -> Endpoint | None:
        """The endpoint for the next try, or None when no candidate is left."""
        by_cluster = self._pools.get(service)
        pool = by_cluster.get(cluster) if by_cluster is not None else None
        if pool is None:
            pool = self._pool(service, cluster)
            self._rebuild(pool, endpoints)
        elif endpoints is not pool.source:
            if endpoints == pool.source:
                pool.source = endpoints  # same content, new tuple: cheaper next time
            else:
                self._rebuild(pool, endpoints)
        hosts = pool.hosts
        n = len(hosts)
        if n == 0:
            return None
        if pool.num_ejected == 0 and not exclude:
            if n == 1:
                return pool.endpoints[0]
            # two distinct indices from one 30-bit draw (a one-digit int: cheap arithmetic);
            # the quotient feeds the second index (bias about n**2 / 2**30)
            x = self._bits(30)
            i = x % n
            j = (x // n) % (n - 1)
            if j >= i:
                j += 1
            if hosts[j].active < hosts[i].active:
                i = j
            return pool.endpoints[i]
        return self._pick_slow(pool, exclude)

    def started(self, address: str) -> None:
        """A request to ``address`` went out."""
        host = self._hosts.get(address)
        if host is None:
            host = self._hosts[address] = _Host(address)
        host.active += 1

    def finished(self, address: str, ok: bool | None) -> None:
        """A request to ``address`` is over; ``ok=False``: connect failure, reset, timeout
        or 5xx; ``ok=None``: the client's doing (hung up, too slow), not counted."""
        host = self._hosts.get(address)
        if host is None:
            return
        if host.active > 0:
            host.active -= 1
        if ok is None:
            pass
        elif ok:
            host.failures = 0
        elif self._consecutive_failures > 0:
            self._failed(host)
        if host.active == 0 and not host.pools:
            del self._hosts[address]  # gone from every view: forget it

    # ------------------------------------------------------------------ introspection

    def active(self, address: str) -> int:
        """Requests in flight to ``address``."""
        host = self._hosts.get(address)
        return host.active if host is not None else 0

    def is_ejected(self, address: str) -> bool:
        host = self._hosts.get(address)
        return host is not None and host.ejected_until > self._clock()

    def ejected(self) -> dict[str, float]:
        """Ejected addresses -> seconds of ejection left (for the admin API)."""
        now = self._clock()
        return {a: h.ejected_until - now for a, h in self._hosts.items() if h.ejected_until > now}

    def tracked(self) -> int:
        """Addresses the balancer holds state for (bounded by the view's endpoints)."""
        return len(self._hosts)

    # ------------------------------------------------------------------ internals

    def _pick_slow(self, pool: _Pool, exclude: AbstractSet[str]) -> Endpoint | None:
        """Pick with ejected or excluded endpoints in the pool.

        A few random draws find two eligible distinct candidates without scanning (large
        pools with a few ejections or retries); when they do not, a scan lists them.
        """
        now = self._clock()
        if pool.num_ejected and pool.next_expiry <= now:
            self._recount(pool, now)
        hosts = pool.hosts
        n = len(hosts)
        # every routable endpoint ejected (the pool shrank under the ejections): panic,
        # ignore ejection rather than send nothing
        ignore_ejection = pool.num_ejected >= n
        if n > 8:
            bits = self._bits
            found = -1
            for _ in range(8):
                i = bits(30) % n
                h = hosts[i]
                if (ignore_ejection or h.ejected_until <= now) and h.address not in exclude:
                    if found < 0:
                        found = i
                    elif i != found:
                        if h.active < hosts[found].active:
                            found = i
                        return pool.endpoints[found]
        candidates = [
            i
            for i, h in enumerate(hosts)
            if (ignore_ejection or h.ejected_until <= now) and h.address not in exclude
        ]
        k = len(candidates)
        if k == 0:
            return None
        if k == 1:
            return pool.endpoints[candidates[0]]
        x = self._bits(30)
        a = x % k
        b = (x // k) % (k - 1)
        if b >= a:
            b += 1
        i, j = candidates[a], candidates[b]
        if hosts[j].active < hosts[i].active:
            i = j
        return pool.endpoints[i]

    # ------------------------------------------------------------------ housekeeping

    def retain(self, keep: Callable[[str, str], bool]) -> None:
        """Forget the pools for which ``keep(service, cluster)`` is False (gone from the
        view), and the state of addresses in no pool any more with nothing in flight."""
        for service, by_cluster in list(self._pools.items()):
            for cluster, pool in list(by_cluster.items()):
                if keep(service, cluster):
                    continue
                del by_cluster[cluster]
                for host in pool.hosts:
                    if pool in host.pools:
                        host.pools.remove(pool)
                    if not host.pools and host.active == 0:
                        self._hosts.pop(host.address, None)
            if not by_cluster:
                del self._pools[service]

    def _pool(self, service: str, cluster: str) -> _Pool:
        pool = _Pool((service, cluster))
        self._pools.setdefault(service, {})[cluster] = pool
        return pool

    def _rebuild(self, pool: _Pool, endpoints: Sequence[Endpoint]) -> None:
        """The view handed in a different tuple for this pool: re-resolve its hosts."""
        old = pool.hosts
        pool.source = endpoints
        pool.endpoints = []
        pool.hosts = []
        seen: set[str] = set()
        for ep in endpoints:
            if not ep.routable or ep.address in seen:
                continue
            seen.add(ep.address)
            host = self._hosts.get(ep.address)
            if host is None:
                host = self._hosts[ep.address] = _Host(ep.address)
            if pool not in host.pools:
                host.pools.append(pool)
            pool.endpoints.append(ep)
            pool.hosts.append(host)
        for host in old:
            if host.address not in seen:
                host.pools.remove(pool)
                if not host.pools and host.active == 0:
                    self._hosts.pop(host.address, None)
        self._recount(pool, self._clock())

    @staticmethod
    def _recount(pool: _Pool, now: float) -> None:
        """Count the pool's ejected hosts; ejections that ended are let back in here."""
        count = 0
        nxt = math.inf
        for h in pool.hosts:
            until = h.ejected_until
            if until:
                if until <= now:
                    h.last_expiry = until
                    h.ejected_until = 0.0
                    h.failures = 0
                else:
                    count += 1
                    if until < nxt:
                        nxt = until
        pool.num_ejected = count
        pool.next_expiry = nxt

    def _allowed_ejections(self, size: int) -> int:
        if size <= 1 or self._max_ejected_percent <= 0:
            return 0
        share = math.floor(size * self._max_ejected_percent / 100.0)
        return min(size - 1, max(1, share))

    def _failed(self, host: _Host) -> None:
        until = host.ejected_until
        if until:
            now = self._clock()
            if until > now:
                return  # a late answer from before the ejection: it changes nothing
            # the ejection ended and no pick noticed yet: it is back, counting from zero
            host.last_expiry = until
            host.ejected_until = 0.0
            host.failures = 0
            for pool in host.pools:
                self._recount(pool, now)
        host.failures += 1
        if host.failures >= self._consecutive_failures:
            self._maybe_eject(host, self._clock())

    def _maybe_eject(self, host: _Host, now: float) -> None:
        for pool in host.pools:
            if pool.next_expiry <= now:
                self._recount(pool, now)  # let other expired ejections back in first
        for pool in host.pools:
            if pool.num_ejected >= self._allowed_ejections(len(pool.hosts)):
                return  # the cap: this pool keeps the endpoint in
        base = self._base_ejection
        if host.times_ejected and base > 0 and host.last_expiry:
            # the multiplier decays by one for every base interval the host stayed in
            healthy_for = max(0.0, now - host.last_expiry)
            host.times_ejected = max(0, host.times_ejected - int(healthy_for // base))
        host.times_ejected += 1
        host.ejected_until = now + min(self._max_ejection, base * host.times_ejected)
        host.failures = 0
        for pool in host.pools:
            pool.num_ejected += 1
            if host.ejected_until < pool.next_expiry:
                pool.next_expiry = host.ejected_until
