"""The request metrics of the data plane as plain numbers: ``fedgate_requests_total``,
``fedgate_request_duration_seconds``, the retry, connect-error and byte counters, a
custom Prometheus collector (``observe`` costs a dict lookup and a bisect; the families
are built only at scrape time)."""

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

# the label values of the state gauges (one series per state, 1 for the current one)
HEALTH_STATES: tuple[str, ...] = (
    HealthState.HEALTHY,
    HealthState.DEGRADED,
    HealthState.UNHEALTHY,
    HealthState.UNKNOWN,
)
BREAKER_STATES: tuple[str, ...] = ("closed", "half_open", "open")

NO_SERVICE = "unmatched"  # label of requests that matched no route
NO_CLUSTER = "none"  # label of requests answered before a cluster was chosen


class RequestMetrics:
    """fedgate_requests_total and fedgate_request_duration_seconds as plain numbers.

    A custom collector: ``observe`` costs a dict lookup and a bisect; the Prometheus
    families are built only at scrape time.
    """

    def __init__(self, const: Mapping[str, str]) -> None:
        self._const = dict(const)
        # (service, cluster, status) -> [requests, retries, request bytes, response bytes]
        self.counts: dict[tuple[str, str, int], list[int]] = {}
        # (service, cluster) -> [bucket counts..., +Inf count, sum]
        self.hists: dict[tuple[str, str], list[float]] = {}
        self.connect_errors: dict[tuple[str, str], list[int]] = {}
        self._nb = len(BUCKETS)

    def observe(
        self,
        service: str,
        cluster: str,
        status: int,
        duration: float,
        retries: int = 0,
        bytes_in: int = 0,
        bytes_out: int = 0,
    ) -> None:
        key = (service, cluster, status)
        c = self.counts.get(key)
        if c is None:
            c = self.counts[key] = [0, 0, 0, 0]
        c[0] += 1
        if retries:
            c[1] += retries
        if bytes_in:
            c[2] += bytes_in
        if bytes_out:
            c[3] += bytes_out
        hkey = (service, cluster)
        h = self.hists.get(hkey)
        if h is None:
            h = self.hists[hkey] = [0.0] * (self._nb + 2)
        h[bisect_left(BUCKETS, duration)] += 1
        h[-1] += duration

    def counts_of(self, service: str, cluster: str, status: int) -> list[int]:
        """The counters ``observe`` adds to for (service, cluster, status), made when first
        asked: [requests, retries, request bytes, response bytes]. A caller that keeps the
        list adds to it directly (a repeated request's end: ``gateway/fixedend.py``)."""
        key = (service, cluster, status)
        c = self.counts.get(key)
        if c is None:
            c = self.counts[key] = [0, 0, 0, 0]
        return c

    def histogram_of(self, service: str, cluster: str) -> list[float]:
        """The latency histogram ``observe`` adds to for (service, cluster): bucket counts,
        +Inf count, sum (see ``counts_of``)."""
        key = (service, cluster)
        h = self.hists.get(key)
        if h is None:
            h = self.hists[key] = [0.0] * (self._nb + 2)
        return h

    def connect_error(self, service: str, cluster: str) -> None:
        key = (service, cluster)
        c = self.connect_errors.get(key)
        if c is None:
            c = self.connect_errors[key] = [0]
        c[0] += 1

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
        per_service: dict[str, list[int]] = {}  # summed over clusters and codes at scrape
        for (service, _, _), c in list(self.counts.items()):
            s = per_service.get(service)
            if s is None:
                per_service[service] = c[1:]
            else:
                s[0] += c[1]
                s[1] += c[2]
                s[2] += c[3]
        for i, name, doc in (
            (0, "fedgate_upstream_retries", "Upstream tries after the first, by service."),
            (1, "fedgate_request_bytes", "Request body bytes received from clients, by service."),
            (2, "fedgate_response_bytes", "Response body bytes sent to clients, by service."),
        ):
            family = CounterMetricFamily(name, doc, labels=["service"])
            for service, s in per_service.items():
                family.add_metric([service], s[i])
            yield family
        errors = CounterMetricFamily(
            "fedgate_upstream_connect_errors",
            "Tries that got no connection to the upstream, by service and cluster.",
            labels=["service", "cluster"],
        )
        for (service, cluster), c in list(self.connect_errors.items()):
            errors.add_metric([service, cluster], c[0])
        yield errors


def _float_label(v: float) -> str:
    return repr(float(v))
