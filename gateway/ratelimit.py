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

Memory is bounded: buckets sit in LRU order; every check looks at the least recently
used few and evicts those that have refilled to full (forgetting a full bucket changes
nothing: a new one starts full), and past ``max_keys`` the least recently used goes
regardless (a flood of distinct keys cannot grow the table).
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


class RateLimiter:
    """Token buckets for every service with a ``rate_limit``."""

    __slots__ = ("_buckets", "_clock", "_live", "_max_keys", "_params", "_sweep")

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
        sweep: int = 2,
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._sweep = sweep  # idle buckets looked at per check
        self._live = 1
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        # service name -> (the RateLimit object seen, its params at the current live count)
        self._params: dict[str, tuple[RateLimit, _Params]] = {}

    @property
    def live_gateways(self) -> int:
        return self._live

    def set_live_gateways(self, count: int) -> None:
        """The number of live gateways (scope federation takes a 1/count share)."""
        count = max(1, count)
        if count != self._live:
            self._live = count
            self._params.clear()  # recomputed on the next check of each service

    def params(self, service: Service) -> tuple[float, float] | None:
        """(tokens per second, burst) this gateway applies to ``service``; None: no limit."""
        rl = service.rate_limit
        if rl is None:
            return None
        p = self._params_of(service.name, rl)
        return p.rate, p.burst

    def check(self, service: Service, key: str) -> float:
        """Take a token: 0.0 when allowed, else the seconds until one is available."""
        rl = service.rate_limit
        if rl is None:
            return 0.0
        entry = self._params.get(service.name)
        params = entry[1] if entry is not None and entry[0] is rl else None
        if params is None:
            params = self._params_of(service.name, rl)
        now = self._clock()
        buckets = self._buckets
        bkey = (service.name, key)
        bucket = buckets.get(bkey)
        if bucket is None:
            bucket = buckets[bkey] = _Bucket(params, now)
            if len(buckets) > self._max_keys:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(bkey)
            if bucket.params is not params:
                bucket.params = params
                if bucket.tokens > params.burst:
                    bucket.tokens = params.burst
            elapsed = now - bucket.last
            if elapsed > 0:
                tokens = bucket.tokens + elapsed * params.rate
                bucket.tokens = tokens if tokens < params.burst else params.burst
                bucket.last = now
        if self._sweep:
            self._evict_idle(now)
        if bucket.tokens >= _ONE:
            bucket.tokens -= 1.0
            return 0.0
        if params.rate <= 0:
            return _NO_RATE_RETRY_AFTER
        return (1.0 - bucket.tokens) / params.rate

    def __len__(self) -> int:
        return len(self._buckets)

    def _params_of(self, name: str, rl: RateLimit) -> _Params:
        entry = self._params.get(name)
        if entry is not None and (entry[0] is rl or entry[0] == rl):
            self._params[name] = (rl, entry[1])
            return entry[1]
        if rl.scope == "federation" and self._live > 1:
            params = _Params(rl.average / self._live, max(1.0, rl.burst / self._live))
        else:
            params = _Params(rl.average, max(1.0, float(rl.burst)))
        self._params[name] = (rl, params)
        return params

    def _evict_idle(self, now: float) -> None:
        """Drop least recently used buckets that have refilled to full (bounded work)."""
        buckets = self._buckets
        for _ in range(self._sweep):
            if len(buckets) <= 1:
                return
            key = next(iter(buckets))
            b = buckets[key]
            p = b.params
            if b.tokens + (now - b.last) * p.rate < p.burst:
                return
            del buckets[key]


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
    for n, v in headers:
        if n == name or (len(n) == len(name) and n.lower() == name):
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
