"""Passive statistics from real traffic: recent error rate and latency per (service, cluster).

``record()`` is called once per upstream try on the request path, so it is a few
arithmetic operations: the error rate is counted in one-second buckets over a sliding
window (10 s by default), the latency is an exponentially weighted moving average.
``snapshot()`` is read by the health reporter every second or so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

Key = tuple[str, str]


class _Series:
    __slots__ = ("errors", "latency", "stamps", "totals")

    def __init__(self, buckets: int) -> None:
        self.stamps = [-1] * buckets  # which second each bucket holds
        self.totals = [0] * buckets
        self.errors = [0] * buckets
        self.latency = -1.0  # EWMA in seconds; -1: no sample yet


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

    def record(self, service: str, cluster: str, *, ok: bool, latency: float) -> None:
        key = (service, cluster)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self._buckets)
        stamp = int(self._clock() / self._bucket)
        i = stamp % self._buckets
        if series.stamps[i] != stamp:
            series.stamps[i] = stamp
            series.totals[i] = 0
            series.errors[i] = 0
        series.totals[i] += 1
        if not ok:
            series.errors[i] += 1
        if series.latency < 0.0:
            series.latency = latency
        else:
            series.latency += self._alpha * (latency - series.latency)

    def snapshot(self) -> Mapping[tuple[str, str], tuple[float, float, int]]:
        """(error rate 0..1, latency EWMA in ms, requests in the window) per key with traffic."""
        oldest = int(self._clock() / self._bucket) - self._buckets + 1
        out: dict[Key, tuple[float, float, int]] = {}
        for key, series in self._series.items():
            total = errors = 0
            for stamp, t, e in zip(series.stamps, series.totals, series.errors, strict=True):
                if stamp >= oldest:
                    total += t
                    errors += e
            if total:
                out[key] = (errors / total, max(0.0, series.latency) * 1000.0, total)
        return out

    def forget(self, service: str, cluster: str) -> None:
        self._series.pop((service, cluster), None)
