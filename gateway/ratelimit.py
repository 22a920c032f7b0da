"""Rate limiting: token buckets per (service, key), refilled lazily by the clock.

A service's ``rateLimit`` gives ``average`` tokens per second and a ``burst`` capacity.
Every request takes one token from the bucket of its key (:func:`limit_key`: the client
address, the peer's SPIFFE identity, or a header's value). A bucket starts full; an
empty one answers how long until the next token, which the proxy sends (rounded up to
a whole second) as ``Retry-After`` with a 429.

``scope: federation`` shares one limit among the live gateways: each takes
``average / count`` and ``burst / count`` (at least one token), where ``count`` is the
number of live gateways in the view (:meth:`RateLimiter.set_live_gateways`, called on
every view swap with ``federation.ratelimit_share.live_gateway_count``). Traffic spread
evenly over the gateways then sees the configured limit; no etcd on the request path.

Memory is bounded: a service's buckets sit in LRU order; every new bucket looks at the
least recently used few of its service (and every 64th check a few more) and evicts
those that have refilled to full (forgetting a full bucket changes nothing: a new one
starts full), and past ``max_keys``
(all services together) the least recently used of the service that adds one goes
regardless, so a flood of distinct keys cannot grow the table.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from federation.model import RateLimit, Service

__all__ = ["RateLimiter", "limit_key"]

_NO_RATE_RETRY_AFTER = 60.0  # average <= 0: the burst is all there is
_ONE = 1.0 - 1e-9  # a token, give or take float rounding of the refill


class _Params:
    """The effective rate and capacity of one service's buckets on this gateway."""

    __slots__ = ("burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst


class _Bucket:
    __slots__ = ("last", "params", "tokens")

    def __init__(self, params: _Params, now: float) -> None:
        self.params = params
        self.tokens = params.burst
        self.last = now


class _ServiceBuckets:
    """The buckets of one service, least recently used first."""

    __slots__ = ("buckets", "params", "rate_limit")

    def __init__(self, rate_limit: RateLimit, params: _Params) -> None:
        self.rate_limit = rate_limit
        self.params = params
        self.buckets: OrderedDict[str, _Bucket] = OrderedDict()


class RateLimiter:
    """Token buckets for every service with a ``rate_limit``."""

    __slots__ = ("_clock", "_count", "_live", "_max_keys", "_services", "_sweep", "_tick")

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
        sweep: int = 2,
    ) -> None:
        """``max_keys`` bounds the buckets of all services together; ``sweep`` is how many
        least recently used buckets are looked at (and dropped when full) per new bucket."""
        self._clock = clock
        self._max_keys = max_keys
        self._sweep = sweep
        self._live = 1
        self._count = 0  # buckets over all services
        self._tick = 0
        self._services: dict[str, _ServiceBuckets] = {}

    @property
    def live_gateways(self) -> int:
        return self._live

    def set_live_gateways(self, count: int) -> None:
        """The number of live gateways (scope federation takes a 1/count share)."""
        count = max(1, count)
        if count != self._live:
            self._live = count
            for state in self._services.values():
                state.params = self._compute(state.rate_limit)

    def params(self, service: Service) -> tuple[float, float] | None:
        """(tokens per second, burst) this gateway applies to ``service``; None: no limit."""
        rl = service.rate_limit
        if rl is None:
            return None
        p = self._state(service.name, rl).params
        return p.rate, p.burst

    def check(self, service: Service, key: str) -> float:
        """Take a token: 0.0 when allowed, else the seconds until one is available."""
        rl = service.rate_limit
        if rl is None:
            return 0.0
        state = self._services.get(service.name)
        if state is None or state.rate_limit is not rl:
            state = self._state(service.name, rl)
        params = state.params
        now = self._clock()
        buckets = state.buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = _Bucket(params, now)
            self._count += 1
            self._evict(buckets, now, self._sweep)
        else:
            buckets.move_to_end(key)
            self._tick += 1
            if self._tick & 63 == 0:  # now and then: drop idle buckets without new ones
                self._evict(buckets, now, 8)
            if bucket.params is not params:
                bucket.params = params
                if bucket.tokens > params.burst:
                    bucket.tokens = params.burst
            elapsed = now - bucket.last
            if elapsed > 0:
                tokens = bucket.tokens + elapsed * params.rate
                bucket.tokens = tokens if tokens < params.burst else params.burst
                bucket.last = now
        if bucket.tokens >= _ONE:
            bucket.tokens -= 1.0
            return 0.0
        if params.rate <= 0:
            return _NO_RATE_RETRY_AFTER
        return (1.0 - bucket.tokens) / params.rate

    def __len__(self) -> int:
        return self._count

    def retain(self, keep: Callable[[str], bool]) -> None:
        """Drop the buckets of services for which ``keep(name)`` is False (gone from the
        view, or no rate limit any more)."""
        for name in [n for n in self._services if not keep(n)]:
            self._count -= len(self._services.pop(name).buckets)

    def _state(self, name: str, rl: RateLimit) -> _ServiceBuckets:
        state = self._services.get(name)
        if state is None:
            state = self._services[name] = _ServiceBuckets(rl, self._compute(rl))
        elif state.rate_limit is not rl:
            if state.rate_limit != rl:
                state.params = self._compute(rl)  # buckets adopt it on their next check
            state.rate_limit = rl
        return state

    def _compute(self, rl: RateLimit) -> _Params:
        if rl.scope == "federation" and self._live > 1:
            return _Params(rl.average / self._live, max(1.0, rl.burst / self._live))
        return _Params(rl.average, max(1.0, float(rl.burst)))

    def _evict(self, buckets: OrderedDict[str, _Bucket], now: float, sweep: int) -> None:
        """Drop up to ``sweep`` idle (full) buckets, then the LRU one if over the bound."""
        for _ in range(sweep):
            if len(buckets) <= 1:
                break
            b = buckets[next(iter(buckets))]
            p = b.params
            if b.tokens + (now - b.last) * p.rate < p.burst:
                break
            buckets.popitem(last=False)
            self._count -= 1
        if self._count > self._max_keys and len(buckets) > 1:
            buckets.popitem(last=False)
            self._count -= 1


def limit_key(
    rate_limit: RateLimit,
    *,
    client_ip: str,
    headers: Sequence[tuple[bytes, bytes]],
    peer_id: str | None,
) -> str:
    """The bucket key of a request by the service's ``rate_limit.per``.

    ``client-ip``: the client address; ``peer-identity``: the verified SPIFFE ID, or the
    client address when there is none; ``header:<Name>``: the header's first value
    (name case-insensitive, value at most 256 bytes), or ``-`` when the request has none,
    so requests without the header share one bucket.
    """
    per = rate_limit.per
    if per == "client-ip":
        return client_ip
    if per == "peer-identity":
        return peer_id if peer_id else client_ip
    name = _header_name(per)
    if name is None:
        return client_ip
    for n, v in headers:  # ASGI header names are lower-case already: compare as is
        if n == name:
            return v[:256].decode("latin-1")
    for n, v in headers:  # not found: a server that kept the client's case
        if len(n) == len(name) and n.lower() == name:
            return v[:256].decode("latin-1")
    return "-"


_HEADER_NAMES: dict[str, bytes | None] = {}


def _header_name(per: str) -> bytes | None:
    name = _HEADER_NAMES.get(per)
    if name is None and per not in _HEADER_NAMES:
        if per[:7].lower() == "header:" and per[7:].strip():
            name = per[7:].strip().lower().encode("latin-1")
        if len(_HEADER_NAMES) < 1024:
            _HEADER_NAMES[per] = name
    return name
