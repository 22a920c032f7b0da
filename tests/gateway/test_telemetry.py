"""Telemetry: W3C trace context, access log lines, metrics, OpenTelemetry spans."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from federation.model import HealthState
from gateway.telemetry import NO_TRACE, Telemetry, _traces_url, parse_traceparent
from tests.federation.views import sample_view
from tests.support.wait import async_wait_for, wait_for

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TP = f"00-{TRACE}-{PARENT}-01".encode()

REQUEST: dict[str, Any] = dict(
    method="GET", host="shop.acme.com", path="/checkout", service="checkout",
    cluster="gcp-europe-west4", upstream="10.0.0.7:8080", status=200, duration=0.0042,
    client="192.0.2.10", retries=1, forwarded=False, bytes_in=12, bytes_out=345,
    upstream_time=0.0031, protocol="1.1", scheme="https", port=8443,
    route="shop.acme.com/checkout",
    headers=[(b"user-agent", b"curl/8.5"), (b"x-request-id", b"req-1")],
)  # fmt: skip


def make(**kw: Any) -> tuple[Telemetry, io.StringIO]:
    stream = io.StringIO()
    t = Telemetry(gateway_id="gw-1", cluster="aws-eu-west-1", log_stream=stream, **kw)
    return t, stream


def lines(t: Telemetry, stream: io.StringIO) -> list[dict[str, Any]]:
    t.flush()
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def metrics(t: Telemetry) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(t.metrics_text().decode())}


# ---------------------------------------------------------------- traceparent


@pytest.mark.parametrize(
    "value",
    [
        TP,
        f"00-{TRACE}-{PARENT}-00".encode(),
        f"00-{TRACE}-{PARENT}-09".encode(),
        b" " + TP + b" ",
    ],
)
def test_valid_traceparent(value: bytes) -> None:
    parsed = parse_traceparent(value)
    assert parsed is not None and parsed[:2] == (TRACE, PARENT)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"garbage",
        f"01-{TRACE}-{PARENT}-01".encode(),  # only version 00 is understood
        f"ff-{TRACE}-{PARENT}-01".encode(),
        f"00-{TRACE.upper()}-{PARENT}-01".encode(),  # lower-case hex only
        f"00-{'0' * 32}-{PARENT}-01".encode(),  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01".encode(),  # all-zero parent id
        f"00-{TRACE[:-1]}-{PARENT}-01".encode(),
        f"00-{TRACE}-{PARENT}-1".encode(),
        f"00-{TRACE}-{PARENT}-01-extra".encode(),
        f"00_{TRACE}_{PARENT}_01".encode(),
        f"00-{TRACE}-{PARENT}-0g".encode(),
        "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01".encode(),
    ],
)
def test_invalid_traceparent_is_ignored(value: bytes) -> None:
    assert parse_traceparent(value) is None
    t, _ = make()
    trace = t.begin([(b"traceparent", value)])
    assert trace.trace_id != TRACE and trace.parent_id is None
    assert len(trace.trace_id) == 32 and len(trace.span_id) == 16


def test_incoming_trace_is_continued_with_a_new_span_id() -> None:
    t, _ = make()
    trace = t.begin([(b"host", b"x"), (b"traceparent", TP)])
    assert trace.trace_id == TRACE and trace.parent_id == PARENT
    assert trace.span_id != PARENT and len(trace.span_id) == 16
    int(trace.span_id, 16)
    assert trace.sampled
    assert trace.traceparent == f"00-{TRACE}-{trace.span_id}-01".encode()
    assert parse_traceparent(trace.traceparent) == (TRACE, trace.span_id, 1)


def test_unsampled_flag_is_propagated() -> None:
    t, _ = make()
    trace = t.begin([(b"traceparent", f"00-{TRACE}-{PARENT}-00".encode())])
    assert not trace.sampled and trace.traceparent.endswith(b"-00")


def test_a_new_trace_is_started_without_traceparent() -> None:
    t, _ = make()
    a, b = t.begin([]), t.begin([])
    assert a.trace_id != b.trace_id and a.parent_id is None
    assert a.traceparent == f"00-{a.trace_id}-{a.span_id}-01".encode()
    t0, _ = make(sample_ratio=0.0)
    assert t0.begin([]).traceparent.endswith(b"-00")


def test_tracing_off_gives_the_empty_trace() -> None:
    t, _ = make(tracing=False)
    assert t.begin([(b"traceparent", TP)]) is NO_TRACE
    assert NO_TRACE.traceparent == b""


# ------------------------------------------------------------------ access log


def test_access_log_line_is_json_with_trace_and_span_ids() -> None:
    t, stream = make()
    trace = t.begin([(b"traceparent", TP)])
    t.end(trace, **REQUEST)
    (line,) = lines(t, stream)
    assert line == {
        "timestamp": line["timestamp"], "level": "info", "event": "access", "gateway": "gw-1",
        "cluster": "aws-eu-west-1", "method": "GET", "host": "shop.acme.com", "path": "/checkout",
        "status": 200, "duration_ms": 4.2, "service": "checkout",
        "upstream_cluster": "gcp-europe-west4", "upstream": "10.0.0.7:8080",
        "client": "192.0.2.10", "retries": 1, "forwarded": False, "bytes_in": 12,
        "bytes_out": 345, "upstream_ms": 3.1, "user_agent": "curl/8.5",
        "protocol": "HTTP/1.1", "request_id": "req-1", "trace_id": TRACE,
        "span_id": trace.span_id,
    }  # fmt: skip
    assert line["timestamp"].endswith("Z") and len(line["timestamp"]) == 24
    assert list(line)[:3] == ["timestamp", "level", "event"]


def test_access_log_escapes_whatever_the_client_sent() -> None:
    t, stream = make(tracing=False)
    nasty = '/a"b\\c\n\x00é\u2028\ud800'
    t.end(NO_TRACE, **{**REQUEST, "path": nasty, "host": "h\"\n", "service": None,
                       "cluster": None, "upstream": None})  # fmt: skip
    (line,) = lines(t, stream)
    assert line["path"] == nasty and line["host"] == 'h"\n'
    assert line["service"] is None and line["upstream_cluster"] is None
    assert "trace_id" not in line
    assert stream.getvalue().isascii() and stream.getvalue().count("\n") == 1


async def test_access_log_is_flushed_by_itself() -> None:
    t, stream = make()
    t.end(t.begin([]), **REQUEST)
    assert stream.getvalue() == ""  # queued, written in batches
    await async_wait_for(lambda: stream.getvalue().endswith("\n"), timeout=3, what="flush")


def test_access_log_batches_are_bounded() -> None:
    t, stream = make()
    for _ in range(300):
        t.end(NO_TRACE, **REQUEST)  # no event loop: every line is written at once
    assert stream.getvalue().count("\n") == 300


def test_console_format() -> None:
    t, stream = make(log_format="console")
    t.end(t.begin([(b"traceparent", TP)]), **REQUEST)
    t.flush()
    out = stream.getvalue()
    assert "GET shop.acme.com/checkout -> 200" in out and f"trace={TRACE}" in out


def test_access_log_off() -> None:
    t, stream = make(access_log=False)
    t.end(t.begin([]), **REQUEST)
    t.flush()
    assert stream.getvalue() == ""


# -------------------------------------------------------------------- metrics


def test_request_counter_and_histogram() -> None:
    t, _ = make(access_log=False)
    for status, duration in [(200, 0.0004), (200, 0.003), (503, 0.2)]:
        t.end(NO_TRACE, **{**REQUEST, "status": status, "duration": duration})
    t.end(NO_TRACE, **{**REQUEST, "service": None, "cluster": None, "status": 404})
    fams = metrics(t)
    counts = {
        (s.labels["service"], s.labels["cluster"], s.labels["code"]): s.value
        for s in fams["fedgate_requests"].samples
    }
    assert counts == {
        ("checkout", "gcp-europe-west4", "200"): 2,
        ("checkout", "gcp-europe-west4", "503"): 1,
        ("unmatched", "none", "404"): 1,
    }
    hist = {
        (s.name, s.labels.get("le")): s.value
        for s in fams["fedgate_request_duration_seconds"].samples
        if s.labels["service"] == "checkout"
    }
    assert hist[("fedgate_request_duration_seconds_bucket", "0.0005")] == 1
    assert hist[("fedgate_request_duration_seconds_bucket", "0.005")] == 2
    assert hist[("fedgate_request_duration_seconds_bucket", "0.25")] == 3
    assert hist[("fedgate_request_duration_seconds_bucket", "+Inf")] == 3
    assert hist[("fedgate_request_duration_seconds_count", None)] == 3
    assert hist[("fedgate_request_duration_seconds_sum", None)] == pytest.approx(0.2034)


def test_event_metrics() -> None:
    t, _ = make()
    t.rate_limited("checkout")
    t.rate_limited("checkout")
    t.denied("search")
    t.failover("checkout", "aws-eu-west-1", "gcp-europe-west4")
    t.set_breaker_state("checkout", "gcp-europe-west4", "open")
    t.set_certificate("east_west", 1_800_000_000.0)
    t.set_certificate("public", 1_700_000_000.0)
    t.set_certificate("public", None)  # gone: its series too
    fams = metrics(t)

    def value(name: str, **labels: str) -> float:
        for s in fams[name].samples:
            if s.labels == labels and not s.name.endswith("_created"):
                return float(s.value)
        raise AssertionError(f"no sample {name}{labels}")

    assert value("fedgate_rate_limited", service="checkout") == 2
    assert value("fedgate_denied", service="search") == 1
    assert value(
        "fedgate_failovers", service="checkout", from_cluster="aws-eu-west-1",
        to_cluster="gcp-europe-west4",
    ) == 1  # fmt: skip
    breaker = {
        s.labels["state"]: s.value
        for s in fams["fedgate_circuit_breaker_state"].samples
        if s.labels["cluster"] == "gcp-europe-west4"
    }
    assert breaker == {"closed": 0, "half_open": 0, "open": 1}  # one series per state
    expiry = fams["fedgate_certificate_expiry_timestamp_seconds"].samples
    assert [(s.labels, s.value) for s in expiry] == [
        ({"certificate": "east_west"}, 1_800_000_000.0)
    ]
    (build,) = fams["fedgate_build_info"].samples
    assert build.value == 1 and build.labels["version"]
    assert value("fedgate_gateway_info", gateway="gw-1", cluster="aws-eu-west-1") == 1


def test_set_view_publishes_revision_and_upstream_health() -> None:
    t, _ = make()
    view = sample_view(states={("checkout", "onprem-fra1"): HealthState.UNHEALTHY})
    t.set_view(view)
    fams = metrics(t)
    assert fams["fedgate_view_revision"].samples[0].value == 40
    assert fams["fedgate_view_etcd_revision"].samples[0].value == 57
    health = {
        (s.labels["service"], s.labels["cluster"], s.labels["state"]): s.value
        for s in fams["fedgate_upstream_state"].samples
    }
    # within the budget: the local cluster's pairs and the pairs not healthy
    assert health[("checkout", "onprem-fra1", "unhealthy")] == 1.0
    assert health[("checkout", "onprem-fra1", "healthy")] == 0.0
    assert health[("checkout", "aws-eu-west-1", "healthy")] == 1.0
    assert {(s, c) for s, c, _ in health} == {
        (svc, c) for svc, c, _ in health if c == "aws-eu-west-1" or c == "onprem-fra1"
    }
    aggregated = {
        (s.labels["service"], s.labels["state"]): s.value
        for s in fams["fedgate_service_clusters"].samples
    }
    assert aggregated[("checkout", "unhealthy")] == 1
    # endpoints by health add up under sum(): no "total" series counted twice
    eps = fams["fedgate_upstream_endpoints"].samples
    assert {s.labels["health"] for s in eps} == {"healthy", "unhealthy"}
    for svc, c in {(s.labels["service"], s.labels["cluster"]) for s in eps}:
        h = view.health.get((svc, c))
        if h is not None:
            got = sum(
                s.value for s in eps if (s.labels["service"], s.labels["cluster"]) == (svc, c)
            )
            assert got == max(h.total_endpoints, len(view.endpoints.get((svc, c), ())))
    updates = {s.labels["result"]: s.value for s in fams["fedgate_view_updates"].samples
               if s.name.endswith("_total")}  # fmt: skip
    assert updates == {"success": 1}
    # a smaller view removes the series of pairs that are gone
    t.set_view(sample_view().__class__())
    assert metrics(t)["fedgate_upstream_state"].samples == []


def test_disabled_costs_nothing_and_records_nothing() -> None:
    stream = io.StringIO()
    t = Telemetry.disabled(gateway_id="g", cluster="c")
    t._log.stream = stream
    assert not t.enabled
    trace = t.begin([(b"traceparent", TP)])
    t.end(trace, **REQUEST)
    t.flush()
    assert trace is NO_TRACE and stream.getvalue() == ""
    assert "fedgate_requests_total" not in t.metrics_text().decode()


def test_registries_are_per_instance() -> None:
    a, _ = make()
    b, _ = make()
    a.end(NO_TRACE, **REQUEST)
    assert "fedgate_requests_total{" in a.metrics_text().decode()
    assert "fedgate_requests_total{" not in b.metrics_text().decode()


# ---------------------------------------------------------------- OpenTelemetry


def test_server_span_continues_the_client_trace() -> None:
    exporter = InMemorySpanExporter()
    t, stream = make(span_exporter=exporter)
    trace = t.begin([(b"traceparent", TP)])
    assert trace.trace_id == TRACE and trace.span is not None
    t.end(trace, **{**REQUEST, "status": 502})
    t.flush()
    (span,) = exporter.get_finished_spans()
    ctx = span.get_span_context()
    assert f"{ctx.trace_id:032x}" == TRACE and f"{ctx.span_id:016x}" == trace.span_id
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT
    assert span.kind is SpanKind.SERVER and span.name == "GET checkout"
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 502
    assert span.attributes["fedgate.upstream_cluster"] == "gcp-europe-west4"
    assert span.status.status_code is StatusCode.ERROR
    assert span.resource.attributes["service.instance.id"] == "gw-1"
    # OpenTelemetry HTTP server semantic conventions
    assert span.attributes["url.scheme"] == "https"
    assert span.attributes["server.port"] == 8443
    assert span.attributes["http.route"] == "shop.acme.com/checkout"
    assert span.attributes["user_agent.original"] == "curl/8.5"
    # the upstream gets the gateway's span as parent
    assert trace.traceparent == f"00-{TRACE}-{trace.span_id}-01".encode()
    assert lines(t, stream)[0]["span_id"] == trace.span_id
    t.close()


def test_one_client_span_per_upstream_try() -> None:
    exporter = InMemorySpanExporter()
    t, _ = make(span_exporter=exporter)
    trace = t.begin([(b"traceparent", TP)])
    assert t.spans_enabled
    t.upstream_span(
        trace,
        method="GET",
        service="checkout",
        cluster="aws-eu-west-1",
        address="10.0.0.7:8080",
        start_ns=1,
        status=None,
        error="connect-failure",
    )
    t.upstream_span(
        trace,
        method="GET",
        service="checkout",
        cluster="gcp-europe-west4",
        address="[2001:db8::1]:8443",
        start_ns=2,
        status=200,
        error=None,
    )
    t.end(trace, **REQUEST)
    t.flush()
    spans = exporter.get_finished_spans()
    clients = [s for s in spans if s.kind is SpanKind.CLIENT]
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(clients) == 2
    for c in clients:
        assert c.parent is not None and c.parent.span_id == server.get_span_context().span_id
    first, second = sorted(clients, key=lambda s: s.start_time or 0)
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["error.type"] == "connect-failure"
    assert first.status.status_code is StatusCode.ERROR
    assert second.attributes["server.address"] == "2001:db8::1"
    assert second.attributes["server.port"] == 8443
    assert second.attributes["http.response.status_code"] == 200
    # without an exporter nothing is built
    plain, _ = make()
    assert not plain.spans_enabled
    plain.upstream_span(
        plain.begin([]),
        method="GET",
        service="s",
        cluster="c",
        address="a:1",
        start_ns=1,
        status=200,
        error=None,
    )
    t.close()


def test_root_span_and_unsampled_parent() -> None:
    exporter = InMemorySpanExporter()
    t, _ = make(span_exporter=exporter)
    root = t.begin([])
    t.end(root, **REQUEST)
    unsampled = t.begin([(b"traceparent", f"00-{TRACE}-{PARENT}-00".encode())])
    assert unsampled.span is None and not unsampled.sampled
    t.end(unsampled, **REQUEST)
    t.flush()
    (span,) = exporter.get_finished_spans()
    assert span.parent is None and f"{span.get_span_context().trace_id:032x}" == root.trace_id
    t.close()


class _Collector:
    """A real OTLP/HTTP receiver: decodes every POSTed ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                outer.requests.append(req)
                outer.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[Any]:
        return [
            span
            for req in self.requests
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]


@pytest.fixture
def collector() -> Iterator[_Collector]:
    c = _Collector()
    c.thread.start()
    try:
        yield c
    finally:
        c.server.shutdown()
        c.server.server_close()


def test_otlp_http_export(collector: _Collector) -> None:
    t, _ = make(otlp_endpoint=collector.url)
    trace = t.begin([(b"traceparent", TP)])
    t.end(trace, **REQUEST)
    t.flush()
    spans = wait_for(collector.spans, timeout=10, what="span exported")
    assert collector.paths == ["/v1/traces"]
    assert spans[0].trace_id.hex() == TRACE and spans[0].span_id.hex() == trace.span_id
    assert spans[0].parent_span_id.hex() == PARENT
    t.close()


def test_traces_url() -> None:
    assert _traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert _traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert _traces_url("http://c:4318/custom/path") == "http://c:4318/custom/path"


def test_sample_ratio_is_checked() -> None:
    with pytest.raises(ValueError, match="sample_ratio"):
        make(sample_ratio=1.5)
