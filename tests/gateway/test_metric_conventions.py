"""Every metric of a gateway follows the Prometheus naming conventions (a promtool-style
lint, ``tests/support/promlint.py``), and ``/metrics`` stays within its cardinality
budget: under 1 MB at 1,000 clusters x 2,000 services (``docs/observability.md``)."""

from __future__ import annotations

import time
from dataclasses import replace
from types import MappingProxyType

import pytest
from prometheus_client.parser import text_string_to_metric_families

from federation.model import HealthState, RoutingView
from gateway.dns.metrics import DnsCollector
from gateway.dns.wire import DnsStats
from gateway.telemetry import NO_TRACE, Telemetry
from tests.federation.test_health_query import big_view
from tests.federation.views import health, sample_view
from tests.support.promlint import lint_text

REQUEST = dict(
    method="GET", host="h", path="/", upstream="10.0.0.1:80", duration=0.003,
    client="192.0.2.1", retries=1, forwarded=False, bytes_in=10, bytes_out=100,
)  # fmt: skip


def populated(view: RoutingView, cluster: str = "aws-eu-west-1") -> Telemetry:
    """A gateway's telemetry with every family holding samples."""
    t = Telemetry(gateway_id="gw-1", cluster=cluster, access_log=False, tracing=False)
    t.registry.register(DnsCollector(DnsStats()))
    t.set_view(view)
    for service in view.services.values():
        for c in service.clusters:
            if c == cluster:
                for status in (200, 503):
                    t.end(NO_TRACE, service=service.name, cluster=c, status=status, **REQUEST)
    t.end(NO_TRACE, service=None, cluster=None, status=404, **REQUEST)
    t.rate_limited("checkout")
    t.denied("checkout")
    t.failover("checkout", cluster, "gcp-europe-west4")
    t.connect_error("checkout", "gcp-europe-west4")
    t.set_breaker_state("checkout", "gcp-europe-west4", "half-open")
    t.set_certificate("public", 1_800_000_000.0)
    t.set_certificate("east_west", 1_800_000_000.0)
    t.view_update("failed")
    return t


def test_every_metric_follows_the_conventions() -> None:
    text = populated(sample_view()).metrics_text().decode()
    assert lint_text(text) == []
    names = {f.name for f in text_string_to_metric_families(text)}
    for expected in (
        "fedgate_build_info",
        "fedgate_certificate_expiry_timestamp_seconds",
        "fedgate_upstream_state",
        "fedgate_upstream_retries",
        "fedgate_upstream_connect_errors",
        "fedgate_request_bytes",
        "fedgate_response_bytes",
        "process_cpu_seconds",
        "python_gc_collections",
    ):
        assert expected in names, expected


@pytest.mark.parametrize(
    "exposition, problem",
    [
        ("# HELP fedgate_latency_ms x\n# TYPE fedgate_latency_ms gauge\nfedgate_latency_ms 1\n",
         "not a base unit"),
        ("# HELP fedgate_hits x\n# TYPE fedgate_hits untyped\nfedgate_hits_total 1\n",
         "_total is for counters only"),
        ("# HELP fedgate_reqCount x\n# TYPE fedgate_reqCount gauge\nfedgate_reqCount 1\n",
         "not snake_case"),
        ("# HELP fedgate_conns_count x\n# TYPE fedgate_conns_count gauge\n"
         "fedgate_conns_count 1\n", "clashes"),
        ("# HELP fedgate_x x\n# TYPE fedgate_x gauge\nfedgate_x{path=\"/a\"} 1\n", "unbounded"),
        ("# HELP fedgate_x x\n# TYPE fedgate_x gauge\nfedgate_x{svcName=\"a\"} 1\n",
         "not snake_case"),
        ("# HELP fedgate_cert_expiry_seconds x\n# TYPE fedgate_cert_expiry_seconds gauge\n"
         "fedgate_cert_expiry_seconds 1\n", "_timestamp_seconds"),
        ("# HELP up x\n# TYPE up gauge\nup 1\n", "prefix"),
    ],
)  # fmt: skip
def test_the_lint_finds_what_promtool_finds(exposition: str, problem: str) -> None:
    problems = lint_text(exposition)
    assert any(problem in p for p in problems), problems


# ----------------------------------------------------------------- budget


@pytest.fixture(scope="module")
def view1000() -> RoutingView:
    return big_view(1000)


def pairs_with_own_series(text: str) -> set[tuple[str, str]]:
    return {
        (s.labels["service"], s.labels["cluster"])
        for f in text_string_to_metric_families(text)
        if f.name.startswith("fedgate_upstream_")
        for s in f.samples
        if "service" in s.labels and "cluster" in s.labels
    }


def test_metrics_of_1000_clusters_stay_under_1_mb(view1000: RoutingView) -> None:
    pairs = sum(len(s.clusters) for s in view1000.services.values())
    assert len(view1000.clusters) == 1000 and len(view1000.services) == 2000
    local = next(iter(view1000.clusters))
    t = populated(view1000, local)
    started = time.perf_counter()
    text = t.metrics_text().decode()
    first_scrape = time.perf_counter() - started
    size = len(text.encode())
    print(f"\n/metrics at 1000 clusters x 2000 services ({pairs} pairs): {size} bytes, "
          f"first scrape {first_scrape * 1000:.0f} ms")  # fmt: skip
    assert size < 1_000_000
    assert lint_text(text) == []
    own = pairs_with_own_series(text)
    local_pairs = {(s.name, local) for s in view1000.services.values() if local in s.clusters}
    assert local_pairs <= own  # this cluster's pairs, then the unhealthy ones, are reported
    assert len(own) <= t._upstreams.per_pair_limit + 2  # + the failover/breaker pairs
    # a new view is O(1); the same view scrapes from its cache
    started = time.perf_counter()
    t.set_view(view1000)
    assert time.perf_counter() - started < 0.01
    # everything unhealthy: the cap holds the size
    sick = replace(
        view1000,
        health=MappingProxyType(
            {k: health(k[0], k[1], HealthState.UNHEALTHY) for k in view1000.health}
        ),
    )
    t.set_view(sick)
    text = t.metrics_text().decode()
    print(f"/metrics, every pair unhealthy: {len(text.encode())} bytes")
    assert len(text.encode()) < 1_000_000
    assert len(pairs_with_own_series(text)) <= t._upstreams.per_pair_limit + 2
