"""The DNS listener's counters in the gateway's Prometheus registry (``/metrics``).

A collector read at scrape time from :class:`~gateway.dns.wire.DnsStats`: nothing is
added to the per-query path.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from gateway.dns.wire import DnsStats


class DnsCollector(Collector):
    def __init__(self, stats: DnsStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        s = self.stats
        received = CounterMetricFamily(
            "fedgate_dns_packets", "DNS packets received, by transport", labels=["transport"]
        )
        received.add_metric(["udp"], s.udp)
        received.add_metric(["tcp"], s.tcp)
        yield received
        answered = CounterMetricFamily(
            "fedgate_dns_responses", "DNS responses sent, by rcode", labels=["rcode"]
        )
        for rcode, n in sorted(s.rcodes.items()):
            answered.add_metric([rcode], n)
        yield answered
        dropped = CounterMetricFamily(
            "fedgate_dns_dropped",
            "DNS packets not answered: malformed, or over the response-rate limit",
            labels=["reason"],
        )
        dropped.add_metric(["malformed"], s.malformed)
        dropped.add_metric(["rate_limited"], s.rate_limited)
        yield dropped
        yield CounterMetricFamily(
            "fedgate_dns_truncated",
            "DNS answers sent truncated (TC: ask over TCP)",
            value=s.truncated,
        )
        yield CounterMetricFamily(
            "fedgate_dns_slipped",
            "Responses over the rate limit sent truncated instead of dropped",
            value=s.slipped,
        )
