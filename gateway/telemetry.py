"""Telemetry of the request path: Prometheus metrics, JSON access logs, W3C trace context.

One :class:`Telemetry` per gateway process. The proxy calls :meth:`Telemetry.begin` when a
request arrives (trace context: continue the client's trace or start one) and
:meth:`Telemetry.end` when it is answered (metrics, one access-log line, the server
span). Both run on every request, so they are written for speed:

* request counters and the latency histogram are plain Python numbers in a custom
  collector, turned into Prometheus families only when ``/metrics`` is scraped (no
  ``.labels()`` lookup, no lock per request; the event loop is single-threaded);
* the access log line is built directly as JSON (the same shape structlog's
  ``JSONRenderer`` gives: ``timestamp``, ``level``, ``event`` first) and written in
  batches: lines are queued and written at most every 0.2 s or every 256 lines;
* trace and span ids come from ``random.getrandbits``; an OpenTelemetry SDK span is
  created only when an OTLP exporter is configured and the trace is sampled.

``Telemetry.disabled(...)`` turns everything off (the baseline of the on/off benchmark).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Sequence
from typing import Any, Literal, TextIO

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    ProcessCollector,
    generate_latest,
)

from federation.model import RoutingView
from gateway.accesslog import AccessLog
from gateway.accesslog import escape as _escape
from gateway.fixedend import FixedEnd
from gateway.metrics import BUCKETS, CONTENT_TYPE, NO_CLUSTER, NO_SERVICE, RequestMetrics
from gateway.tracecontext import (
    NO_TRACE,
    RequestTrace,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
)
from gateway.tracecontext import traces_url as _traces_url
from gateway.upstream_metrics import DEFAULT_PER_PAIR_LIMIT, UpstreamMetrics

__all__ = [
    "BUCKETS",
    "CONTENT_TYPE",
    "NO_TRACE",
    "RequestTrace",
    "Telemetry",
    "format_traceparent",
    "parse_traceparent",
]


class Telemetry:
    """Metrics, access logs and traces of one gateway (see the module docstring)."""

    def __init__(
        self,
        *,
        gateway_id: str,
        cluster: str,
        metrics: bool = True,
        access_log: bool = True,
        tracing: bool = True,
        otlp_endpoint: str | None = None,
        sample_ratio: float = 1.0,
        log_stream: TextIO | None = None,
        log_format: Literal["json", "console"] = "json",
        span_exporter: Any = None,
        per_pair_limit: int = DEFAULT_PER_PAIR_LIMIT,
        version: str = "",
    ) -> None:
        """``log_stream``: where access-log lines go (default: ``sys.stdout`` at write time).
        ``span_exporter``: an OpenTelemetry ``SpanExporter`` used instead of OTLP (tests).
        ``per_pair_limit``: the cardinality budget of per (service, cluster) series
        (``gateway/upstream_metrics.py``); ``version``: ``fedgate_build_info``'s label.
        """
        if not 0.0 <= sample_ratio <= 1.0:
            raise ValueError(f"sample_ratio must be within 0..1, got {sample_ratio}")
        self.gateway_id = gateway_id
        self.cluster = cluster
        self.metrics = metrics
        self.access_log = access_log
        self.tracing = tracing
        self.sample_ratio = sample_ratio
        self.log_format = log_format
        self.registry = CollectorRegistry(auto_describe=False)
        self._log = AccessLog(
            log_stream, f',"gateway":{_escape(gateway_id)},"cluster":{_escape(cluster)},"method":'
        )
        self._last_revision = 0
        self._requests = RequestMetrics({})
        self._upstreams = UpstreamMetrics(cluster, per_pair_limit=per_pair_limit)
        self.version = version or _installed_version()
        self._provider: Any = None
        self._tracer: Any = None
        self._otel: Any = None
        if tracing and (otlp_endpoint or span_exporter is not None):
            self._setup_tracer(otlp_endpoint, span_exporter)
        self._setup_metrics()

    @classmethod
    def disabled(cls, *, gateway_id: str = "", cluster: str = "") -> Telemetry:
        """Everything off: begin/end cost a function call (the benchmark's baseline)."""
        return cls(
            gateway_id=gateway_id, cluster=cluster, metrics=False, access_log=False, tracing=False
        )

    @property
    def enabled(self) -> bool:
        return self.metrics or self.access_log or self.tracing

    # ----------------------------------------------------------------- set-up

    def _setup_metrics(self) -> None:
        r = self.registry
        if self.metrics:
            r.register(self._requests)
            ProcessCollector(registry=r)
            GCCollector(registry=r)
        r.register(self._upstreams)
        self._failovers = Counter(
            "fedgate_failovers",
            "Requests sent to another cluster than the first choice.",
            ["service", "from_cluster", "to_cluster"],
            registry=r,
        )
        self._rate_limited = Counter(
            "fedgate_rate_limited",
            "Requests refused by a rate limit (429).",
            ["service"],
            registry=r,
        )
        self._denied = Counter(
            "fedgate_denied",
            "Requests refused by an access policy (403).",
            ["service"],
            registry=r,
        )
        self._revision = Gauge(
            "fedgate_view_revision",
            "Config revision of the routing view this gateway has applied.",
            registry=r,
        )
        self._etcd_revision = Gauge(
            "fedgate_view_etcd_revision",
            "etcd revision the applied routing view reflects.",
            registry=r,
        )
        self._stale = Gauge(
            "fedgate_view_stale",
            "1 while the gateway serves a last-known-good view (etcd unreachable).",
            registry=r,
        )
        self._view_updates = Counter(
            "fedgate_view_updates",
            "Routing view updates: success (a view was applied), rejected (an item refused).",
            ["result"],
            registry=r,
        )
        self._cert_expiry = Gauge(
            "fedgate_certificate_expiry_timestamp_seconds",
            "Expiry of a certificate this gateway holds (public, east_west, ...), unix time.",
            ["certificate"],
            registry=r,
        )
        build = Gauge(
            "fedgate_build_info",
            "Always 1; the running fedgate's version as a label.",
            ["version"],
            registry=r,
        )
        build.labels(self.version).set(1)
        info = Gauge(
            "fedgate_gateway_info",
            "Always 1; the gateway's identity as labels.",
            ["gateway", "cluster"],
            registry=r,
        )
        info.labels(self.gateway_id, self.cluster).set(1)

    def _setup_tracer(self, otlp_endpoint: str | None, exporter: Any) -> None:
        from opentelemetry import trace as otel_trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=_traces_url(otlp_endpoint or ""))
        resource = Resource.create(
            {
                "service.name": "fedgate",
                "service.instance.id": self.gateway_id,
                "fedgate.cluster": self.cluster,
            }
        )
        self._provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(self.sample_ratio))
        )
        self._provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
        self._tracer = self._provider.get_tracer("fedgate.gateway")
        self._otel = otel_trace

    def close(self) -> None:
        """Flush the access log and the span exporter (call once at shutdown)."""
        self._log.flush()
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None
            self._tracer = None

    def flush(self) -> None:
        """Write queued access-log lines now (and export finished spans)."""
        self._log.flush()
        if self._provider is not None:
            self._provider.force_flush(2000)

    # ---------------------------------------------------------- request path

    def begin(self, headers: Sequence[tuple[bytes, bytes]]) -> RequestTrace:
        """The trace context of a new request (see :class:`RequestTrace`)."""
        if not self.tracing:
            return NO_TRACE
        parent: tuple[str, str, int] | None = None
        for name, value in headers:
            if name == b"traceparent":
                parent = parse_traceparent(value)
                break
        if self._tracer is not None:
            return self._begin_span(parent)
        if parent is not None:
            trace_id, parent_id, flags = parent
            sampled = bool(flags & 1)
        else:
            trace_id, parent_id = new_trace_id(), None
            ratio = self.sample_ratio
            sampled = ratio >= 1.0 or (ratio > 0.0 and random.random() < ratio)
        span_id = new_span_id()
        return RequestTrace(
            trace_id,
            span_id,
            parent_id,
            sampled,
            f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}".encode(),
        )

    def _begin_span(self, parent: tuple[str, str, int] | None) -> RequestTrace:
        otel = self._otel
        if parent is not None:
            from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

            trace_id, parent_id, flags = parent
            remote = SpanContext(
                int(trace_id, 16),
                int(parent_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(flags & 1),
            )
            context = otel.set_span_in_context(NonRecordingSpan(remote))
        else:
            parent_id = None
            context = None
        start = time.time_ns()
        span = self._tracer.start_span(
            "request", context=context, kind=otel.SpanKind.SERVER, start_time=start
        )
        sc = span.get_span_context()
        trace_id = f"{sc.trace_id:032x}"
        span_id = f"{sc.span_id:016x}"
        sampled = bool(sc.trace_flags & 1)
        return RequestTrace(
            trace_id,
            span_id,
            parent_id,
            sampled,
            f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}".encode(),
            span if span.is_recording() else None,
            start,
        )

    def fixed_end(
        self,
        *,
        method: str,
        host: str,
        path: str,
        service: str,
        cluster: str,
        upstream: str,
        client: str,
        headers: Sequence[tuple[bytes, bytes]],
        protocol: str,
        forwarded: bool = False,
        bytes_in: int = 0,
    ) -> FixedEnd | None:
        """What :meth:`end` does for requests that differ only in status, times, retries
        and response bytes (a repeated request head on one connection, one upstream), with
        the rest made once (``gateway/fixedend.py``); None when tracing is on (each
        request has its ids and span) or the log is not JSON: :meth:`end` then."""
        if self.tracing or (self.access_log and self.log_format != "json"):
            return None
        agent, request_id = _client_ids(headers)
        parts = self._log.json_parts(
            method, host, path, service, cluster, upstream, client, forwarded, bytes_in, agent,
            protocol, request_id,
        )  # fmt: skip
        return FixedEnd(
            self._requests if self.metrics else None,
            self._log if self.access_log else None,
            parts,
            service,
            cluster,
        )

    def end(
        self,
        trace: RequestTrace,
        *,
        method: str,
        host: str,
        path: str,
        service: str | None,
        cluster: str | None,
        upstream: str | None,
        status: int,
        duration: float,
        client: str,
        retries: int,
        forwarded: bool,
        bytes_in: int = 0,
        bytes_out: int = 0,
        upstream_time: float | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
        protocol: str = "1.1",
        scheme: str = "http",
        port: int | None = None,
        route: str | None = None,
    ) -> None:
        """Count the request, write its access-log line, end its span. ``headers``: the
        client's request headers (user agent, ``x-request-id``); ``upstream_time``: the
        last try's time to the answer's head; ``route``: the matched route's pattern."""
        if self.metrics:
            self._requests.observe(
                service or NO_SERVICE, cluster or NO_CLUSTER, status, duration, retries,
                bytes_in, bytes_out,
            )  # fmt: skip
        span = trace.span
        if not self.access_log and span is None:
            return
        agent, request_id = _client_ids(headers)
        if self.access_log:
            if self.log_format == "json":
                self._log.write(
                    self._log.json_line(
                        trace, method, host, path, service, cluster, upstream, status, duration,
                        client, retries, forwarded, bytes_in, bytes_out, upstream_time, agent,
                        protocol, request_id,
                    )
                )  # fmt: skip
            else:
                self._log.write(
                    self._log.console_line(
                        trace, method, host, path, service, cluster, upstream, status, duration,
                        client, retries, bytes_in, bytes_out, protocol,
                    )
                )  # fmt: skip
        if span is not None:
            attributes: dict[str, Any] = {
                "url.scheme": scheme,
                "network.protocol.version": protocol,
            }
            if port is not None:
                attributes["server.port"] = port
            if route is not None:
                attributes["http.route"] = route
            if agent is not None:
                attributes["user_agent.original"] = agent
            if request_id is not None:
                attributes["fedgate.request_id"] = request_id
            if bytes_in:
                attributes["http.request.body.size"] = bytes_in
            if bytes_out:
                attributes["http.response.body.size"] = bytes_out
            span.set_attributes(attributes)
            self._end_span(
                span, trace, method, host, path, service, cluster, upstream, status, client,
                retries, forwarded,
            )  # fmt: skip

    def upstream_span(
        self,
        trace: RequestTrace,
        *,
        method: str,
        service: str,
        cluster: str,
        address: str,
        start_ns: int,
        status: int | None,
        error: str | None,
    ) -> None:
        """One CLIENT span per upstream try (only when an exporter is configured and the
        request's span is recorded)."""
        parent = trace.span
        tracer = self._tracer
        if parent is None or tracer is None:
            return
        otel = self._otel
        host, _, port = address.rpartition(":")
        span = tracer.start_span(
            f"{method} {service}",
            context=otel.set_span_in_context(parent),
            kind=otel.SpanKind.CLIENT,
            start_time=start_ns,
        )
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "server.address": host.strip("[]") or address,
            "fedgate.service": service,
            "fedgate.upstream_cluster": cluster,
        }
        if port.isdigit():
            attributes["server.port"] = int(port)
        if status is not None:
            attributes["http.response.status_code"] = status
        if error is not None:
            attributes["error.type"] = error
        span.set_attributes(attributes)
        if error is not None or (status is not None and status >= 500):
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR))
        span.end()

    @property
    def spans_enabled(self) -> bool:
        """An exporter is configured (CLIENT spans per try are worth building)."""
        return self._tracer is not None

    def _end_span(
        self,
        span: Any,
        trace: RequestTrace,
        method: str,
        host: str,
        path: str,
        service: str | None,
        cluster: str | None,
        upstream: str | None,
        status: int,
        client: str,
        retries: int,
        forwarded: bool,
    ) -> None:
        span.update_name(f"{method} {service or NO_SERVICE}")
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "server.address": host,
            "url.path": path,
            "http.response.status_code": status,
            "client.address": client,
            "fedgate.gateway": self.gateway_id,
            "fedgate.retries": retries,
            "fedgate.forwarded": forwarded,
        }
        if service is not None:
            attributes["fedgate.service"] = service
        if cluster is not None:
            attributes["fedgate.upstream_cluster"] = cluster
        if upstream is not None:
            attributes["fedgate.upstream"] = upstream
        span.set_attributes(attributes)
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR))
        span.end()

    # ------------------------------------------------------------- events

    def rate_limited(self, service: str) -> None:
        if self.metrics:
            self._rate_limited.labels(service).inc()

    def denied(self, service: str) -> None:
        if self.metrics:
            self._denied.labels(service).inc()

    def failover(self, service: str, from_cluster: str, to_cluster: str) -> None:
        if self.metrics:
            self._failovers.labels(service, from_cluster, to_cluster).inc()

    def set_breaker_state(self, service: str, cluster: str, state: str) -> None:
        self._upstreams.set_breaker_state(service, cluster, state)

    def connect_error(self, service: str, cluster: str) -> None:
        """A try got no connection to ``cluster``'s upstream."""
        if self.metrics:
            self._requests.connect_error(service, cluster)

    def set_view(self, view: RoutingView) -> None:
        """The applied revision and the upstream gauges (on every view swap; O(1) but
        for new rejections: the upstream families are computed at scrape time)."""
        self._revision.set(view.config_revision)
        self._etcd_revision.set(view.revision)
        self._stale.set(1 if view.stale else 0)
        self._view_updates.labels("success").inc()
        new_rejections = sum(1 for r in view.rejected if r.revision > self._last_revision)
        if new_rejections:
            self._view_updates.labels("rejected").inc(new_rejections)
        self._last_revision = max(self._last_revision, view.revision)
        self._upstreams.set_view(view)

    def view_update(self, result: str) -> None:
        """Count a view update outcome other than a swap (``rejected``, ``failed``)."""
        self._view_updates.labels(result).inc()

    def set_certificate(self, certificate: str, not_after: float | None) -> None:
        """``certificate``: which one (``public``, ``east_west``, ``etcd_client``...);
        None removes its series (no such certificate now)."""
        if not_after is None:
            with contextlib.suppress(KeyError):
                self._cert_expiry.remove(certificate)
        else:
            self._cert_expiry.labels(certificate).set(not_after)

    # ------------------------------------------------------------ exposition

    def totals(self) -> tuple[float, float, float]:
        """(requests, 5xx answers, failovers) so far: what the status page's trends sample."""
        requests = errors = 0.0
        for (_, _, status), count in list(self._requests.counts.items()):
            requests += count[0]
            if status >= 500:
                errors += count[0]
        failovers = sum(
            s.value
            for family in self._failovers.collect()
            for s in family.samples
            if s.name.endswith("_total")
        )
        return requests, errors, failovers

    def metrics_text(self) -> bytes:
        """The registry in the Prometheus text format (``CONTENT_TYPE``)."""
        data: bytes = generate_latest(self.registry)
        return data


def _installed_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fedgate")
    except metadata.PackageNotFoundError:
        return "unknown"


def _client_ids(headers: Sequence[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The client's User-Agent and X-Request-Id (for the access log and the span)."""
    agent = request_id = None
    for name, value in headers:
        if name == b"user-agent":
            agent = value.decode("latin-1")
        elif name == b"x-request-id":
            request_id = value.decode("latin-1")
    return agent, request_id
