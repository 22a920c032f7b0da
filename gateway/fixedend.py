"""The end of a repeated request, with what does not change made once.

A keep-alive client repeats its requests: the same head on one connection, answered by
the same upstream, differs from the last one only in its status, times, retries and
bytes. :class:`FixedEnd` holds what :meth:`Telemetry.end <gateway.telemetry.Telemetry.end>`
would work out again for each of them (the metric series looked up, the access-log line's
fixed JSON parts escaped and joined) and adds one request's numbers: the same counters and
the same line, byte for byte, as ``Telemetry.end`` (see ``Telemetry.fixed_end``).
"""

from __future__ import annotations

from bisect import bisect_left

from gateway.accesslog import AccessLog, JsonParts
from gateway.metrics import BUCKETS, RequestMetrics


class FixedEnd:
    """Counts one request and writes its access-log line (either may be off: None)."""

    __slots__ = ("_cluster", "_codes", "_hist", "_log", "_metrics", "_parts", "_service")

    def __init__(
        self,
        metrics: RequestMetrics | None,
        log: AccessLog | None,
        parts: JsonParts,
        service: str,
        cluster: str,
    ) -> None:
        self._metrics = metrics
        self._hist = metrics.histogram_of(service, cluster) if metrics is not None else None
        self._codes: dict[int, list[int]] = {}  # status -> its counters in ``metrics``
        self._log = log
        self._parts = parts
        self._service = service
        self._cluster = cluster

    def end(
        self,
        status: int,
        duration: float,
        retries: int,
        bytes_out: int,
        upstream_time: float | None,
    ) -> None:
        hist = self._hist
        if hist is not None:
            c = self._codes.get(status)
            if c is None:
                assert self._metrics is not None
                c = self._codes[status] = self._metrics.counts_of(
                    self._service, self._cluster, status
                )
            c[0] += 1
            if retries:
                c[1] += retries
            if bytes_out:
                c[3] += bytes_out
            hist[bisect_left(BUCKETS, duration)] += 1
            hist[-1] += duration
        log = self._log
        if log is not None:
            log.write(log.json(self._parts, status, duration, retries, bytes_out, upstream_time))
