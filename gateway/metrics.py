"""The request metrics of the data plane as plain numbers: ``fedgate_requests_total`` and
``fedgate_request_duration_seconds``, a custom Prometheus collector (``observe`` costs a
dict lookup and a bisect; the families are built only at scrape time), and the value
tables of the gauges ``gateway/telemetry.py`` registers."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from federation.model import HealthState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# latency buckets (seconds) for a proxy: sub-millisecond to the request timeout
BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

# the value of fedgate_upstream_health per state
HEALTH_VALUE: Mapping[str, float] = {
    HealthState.HEALTHY: 1.0,
    HealthState.DEGRADED: 0.5,
    HealthState.UNHEALTHY: 0.0,
    HealthState.UNKNOWN: -1.0,
}
BREAKER_VALUE: Mapping[str, float] = {"closed": 0.0, "half-open": 1.0, "open": 2.0}

NO_SERVICE = "unmatched"  # label of requests that matched no route
NO_CLUSTER = "none"  # label of requests answered before a cluster was chosen


class RequestMetrics:
    """fedgate_requests_total and fedgate_request_duration_seconds as plain numbers.

    A custom collector: ``observe`` costs a dict lookup and a bisect; the Prometheus
    families are built only at scrape time.
    """

    def __init__(self, const: Mapping[str, str]) -> None:
        self._const = dict(const)
        self.counts: dict[tuple[str, str, int], list[int]] = {}
        # (service, cluster) -> [bucket counts..., +Inf count, sum]
        self.hists: dict[tuple[str, str], list[float]] = {}
        self._nb = len(BUCKETS)

    def observe(self, service: str, cluster: str, status: int, duration: float) -> None:
        key = (service, cluster, status)
        c = self.counts.get(key)
        if c is None:
            c = self.counts[key] = [0]
        c[0] += 1
        hkey = (service, cluster)
        h = self.hists.get(hkey)
        if h is None:
            h = self.hists[hkey] = [0.0] * (self._nb + 2)
        h[bisect_left(BUCKETS, duration)] += 1
        h[-1] += duration

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        names = ["service", "cluster", "code"]
        counter = CounterMetricFamily(
            "fedgate_requests_total",
            "Requests answered, by service, upstream cluster and status code.",
            labels=names,
        )
        for (service, cluster, status), c in list(self.counts.items()):
            counter.add_metric([service, cluster, str(status)], c[0])
        yield counter
        hist = HistogramMetricFamily(
            "fedgate_request_duration_seconds",
            "Time from request arrival to the end of the answer, by service and cluster.",
            labels=["service", "cluster"],
        )
        for (service, cluster), h in list(self.hists.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip(BUCKETS, h, strict=False):
                cumulative += n
                buckets.append((_float_label(bound), cumulative))
            cumulative += h[self._nb]
            buckets.append(("+Inf", cumulative))
            hist.add_metric([service, cluster], buckets, h[-1])
        yield hist


def _float_label(v: float) -> str:
    return repr(float(v))
