"""Passive statistics from real traffic: recent error rate and latency per (service, cluster).

``record()`` is called once per upstream try on the request path, so it is a few
attribute updates: the error rate is counted in one-second buckets over a sliding
window (10 s by default; the current bucket is plain counters, moved into the ring of
past buckets when the second changes), the latency is an exponentially weighted moving
average.
``snapshot()`` is read by the health reporter every second or so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

Key = tuple[str, str]


class _Series:
    """The current bucket's counters are plain attributes (``stamp``, ``total``,
    ``errors``): a record adds to them; they move into the ring when a record or a
    snapshot finds the second changed."""

    __slots__ = ("errors", "latency", "ring_errors", "ring_stamps", "ring_totals", "stamp", "total")

    def __init__(self, buckets: int) -> None:
        self.ring_stamps = [-1] * buckets  # which second each past bucket holds
        self.ring_totals = [0] * buckets
        self.ring_errors = [0] * buckets
        self.stamp = -1  # the current bucket's second
        self.total = 0
        self.errors = 0
        self.latency = -1.0  # EWMA in seconds; -1: no sample yet

    def roll(self, stamp: int) -> None:
        """Keep the current bucket in the ring and start the bucket of ``stamp``."""
        old = self.stamp
        if old >= 0:
            i = old % len(self.ring_stamps)
            self.ring_stamps[i] = old
            self.ring_totals[i] = self.total
            self.ring_errors[i] = self.errors
        self.stamp = stamp
        self.total = 0
        self.errors = 0


class PassiveStats:
    """Per (service, cluster): error rate over a sliding window and latency EWMA."""

    def __init__(
        self,
        *,
        window: float = 10.0,
        bucket: float = 1.0,
        alpha: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0 or bucket <= 0 or bucket > window:
            raise ValueError("window and bucket must be positive, bucket <= window")
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self._buckets = max(1, round(window / bucket))
        self._bucket = bucket
        self._alpha = alpha
        self._clock = clock
        self._series: dict[Key, _Series] = {}

    def record(self, service: str, cluster: str, ok: bool, latency: float) -> None:
        series = self._series.get((service, cluster))
        if series is None:
            series = self._series[(service, cluster)] = _Series(self._buckets)
        stamp = int(self._clock() / self._bucket)
        if stamp != series.stamp:
            series.roll(stamp)
        series.total += 1
        if not ok:
            series.errors += 1
        last = series.latency
        series.latency = latency if last < 0.0 else last + self._alpha * (latency - last)

    def snapshot(self) -> Mapping[tuple[str, str], tuple[float, float, int]]:
        """(error rate 0..1, latency EWMA in ms, requests in the window) per key with traffic."""
        now = int(self._clock() / self._bucket)
        oldest = now - self._buckets + 1
        out: dict[Key, tuple[float, float, int]] = {}
        for key, series in self._series.items():
            if series.stamp != now:
                series.roll(now)
            total = series.total
            errors = series.errors
            for stamp, t, e in zip(
                series.ring_stamps, series.ring_totals, series.ring_errors, strict=True
            ):
                if oldest <= stamp < now:
                    total += t
                    errors += e
            if total:
                out[key] = (errors / total, max(0.0, series.latency) * 1000.0, total)
        return out

    def forget(self, service: str, cluster: str) -> None:
        self._series.pop((service, cluster), None)
