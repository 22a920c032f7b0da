"""Adaptive per-try timeouts: a multiple of an endpoint's recent p99 time to answer.

A blackholed endpoint (SIGSTOP, a dropped route) answers nothing; with a fixed per-try
timeout every request that lands there waits the whole ``retries.perTryTimeout`` (2 s by
default) before it is tried elsewhere. :class:`LatencyTracker` keeps the last
:data:`WINDOW` head latencies of each endpoint (successful tries only) and gives
``clamp(MULTIPLIER * p99, FLOOR, configured)``: an endpoint that normally answers in
5 ms costs a stalled request ~250 ms, not 2 s. Until an endpoint has :data:`MIN_SAMPLES`
samples the configured timeout applies. Only idempotent requests use it (a POST waits the
configured timeout: it is not retried after it was sent).

``record`` is an append to a ring; the p99 (the second largest of the window) is
recomputed every 16 samples, so the cost per try is constant.
"""

from __future__ import annotations

WINDOW = 64  # a power of two
_MASK = WINDOW - 1
MIN_SAMPLES = 20
MULTIPLIER = 8.0
FLOOR = 0.25  # seconds: never cut a try shorter (scheduling noise on a busy host)
MAX_TRACKED = 10000


class _Ring:
    __slots__ = ("count", "p99", "samples", "timeout")

    def __init__(self) -> None:
        self.samples: list[float] = [0.0] * WINDOW
        self.count = 0
        self.p99 = 0.0
        self.timeout = FLOOR  # max(FLOOR, MULTIPLIER * p99)


class LatencyTracker:
    __slots__ = ("_rings",)

    def __init__(self) -> None:
        self._rings: dict[str, _Ring] = {}

    def record(self, address: str, seconds: float) -> None:
        ring = self._rings.get(address)
        if ring is None:
            if len(self._rings) >= MAX_TRACKED:
                self._rings.clear()
            ring = self._rings[address] = _Ring()
        n = ring.count
        ring.samples[n & _MASK] = seconds
        n += 1
        ring.count = n
        if not n & 15 or n == MIN_SAMPLES:
            ordered = sorted(ring.samples[: min(n, WINDOW)])
            ring.p99 = ordered[max(0, len(ordered) - 1 - len(ordered) // 50)]
            ring.timeout = max(FLOOR, MULTIPLIER * ring.p99)

    def p99(self, address: str) -> float | None:
        ring = self._rings.get(address)
        if ring is None or ring.count < MIN_SAMPLES:
            return None
        return ring.p99

    def per_try_timeout(self, address: str, configured: float) -> float:
        """The per-try timeout for an idempotent try to ``address``."""
        ring = self._rings.get(address)
        if ring is None or ring.count < MIN_SAMPLES:
            return configured
        t = ring.timeout
        return t if t < configured else configured
