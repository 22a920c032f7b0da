"""The routing view's gauges under a cardinality budget (``docs/observability.md``).

A federation of 1,000 clusters and 2,000 services has about 40,000 (service, cluster)
pairs; one series per pair and state would make ``/metrics`` tens of megabytes. So:

* **per (service, cluster)**, only the *budgeted* pairs: those of this gateway's own
  cluster, then those that are not healthy, at most ``per_pair_limit`` pairs in all
  (local first, then worst first): ``fedgate_upstream_state{service,cluster,state}``
  (one series per state, 1 for the current one), ``fedgate_upstream_score`` and
  ``fedgate_upstream_endpoints{health="healthy"|"unhealthy"}``;
* **aggregated** for everything: ``fedgate_service_clusters{service,state}`` (how many
  of a service's clusters are in each state) and ``fedgate_cluster_services{cluster,state}``
  (how many services of a cluster are in each state), states with a zero count omitted;
  ``fedgate_upstream_pairs{budget="reported"|"omitted"}`` says what the budget left out;
* the circuit breakers this gateway holds (one per pair it has sent to), one series per
  state: ``fedgate_circuit_breaker_state{service,cluster,state}``.

``set_view`` only keeps a reference (O(1) per swap); the families are computed at scrape
time, once per view (the next scrape of the same view reuses them).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from federation.model import HealthState, RoutingView
from gateway.metrics import BREAKER_STATES, HEALTH_STATES

__all__ = ["DEFAULT_PER_PAIR_LIMIT", "UpstreamMetrics"]

DEFAULT_PER_PAIR_LIMIT = 1000

_RANK = {
    HealthState.UNHEALTHY: 0,
    HealthState.DEGRADED: 1,
    HealthState.UNKNOWN: 2,
    HealthState.HEALTHY: 3,
}


class UpstreamMetrics:
    """A custom collector over the current routing view and the breaker states."""

    def __init__(self, local_cluster: str, *, per_pair_limit: int = DEFAULT_PER_PAIR_LIMIT):
        if per_pair_limit < 0:
            raise ValueError(f"per_pair_limit must be >= 0, got {per_pair_limit}")
        self.local_cluster = local_cluster
        self.per_pair_limit = per_pair_limit
        self._view: RoutingView | None = None
        self._cached: tuple[RoutingView, list[Metric]] | None = None
        self.breakers: dict[tuple[str, str], str] = {}

    def set_view(self, view: RoutingView) -> None:
        self._view = view
        live = view.services
        for key in [k for k in self.breakers if k[0] not in live]:
            del self.breakers[key]

    def set_breaker_state(self, service: str, cluster: str, state: str) -> None:
        self.breakers[(service, cluster)] = state.replace("-", "_")

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        view = self._view
        if view is not None:
            cached = self._cached
            if cached is None or cached[0] is not view:
                cached = self._cached = (view, self._families(view))
            yield from cached[1]
        breaker = GaugeMetricFamily(
            "fedgate_circuit_breaker_state",
            "Circuit breaker of a (service, cluster) this gateway sent to: 1 for its state.",
            labels=["service", "cluster", "state"],
        )
        for (service, cluster), current in list(self.breakers.items()):
            for state in BREAKER_STATES:
                breaker.add_metric([service, cluster, state], 1.0 if state == current else 0.0)
        yield breaker

    def _families(self, view: RoutingView) -> list[Metric]:
        local = self.local_cluster
        health = view.health
        endpoints = view.endpoints
        per_service: dict[str, dict[str, int]] = {}
        per_cluster: dict[str, dict[str, int]] = {}
        budget: list[tuple[int, str, str, str]] = []  # (rank, service, cluster, state)
        unknown = HealthState.UNKNOWN
        healthy = HealthState.HEALTHY
        for service in view.services.values():
            name = service.name
            counts = per_service.setdefault(name, {})
            for cluster in service.clusters:
                h = health.get((name, cluster))
                state = h.state if h is not None else unknown
                counts[state] = counts.get(state, 0) + 1
                cc = per_cluster.setdefault(cluster, {})
                cc[state] = cc.get(state, 0) + 1
                if cluster == local:
                    budget.append((-1, name, cluster, state))
                elif state != healthy:
                    budget.append((_RANK.get(state, 2), name, cluster, state))
        budget.sort()
        total_pairs = sum(sum(c.values()) for c in per_service.values())
        kept = budget[: self.per_pair_limit]
        state_f = GaugeMetricFamily(
            "fedgate_upstream_state",
            "Federation-wide state of a budgeted (service, cluster) pair: 1 for its state.",
            labels=["service", "cluster", "state"],
        )
        score_f = GaugeMetricFamily(
            "fedgate_upstream_score",
            "Health score of a budgeted (service, cluster) pair, 0..1, higher is healthier.",
            labels=["service", "cluster"],
        )
        eps_f = GaugeMetricFamily(
            "fedgate_upstream_endpoints",
            "Endpoints of a budgeted (service, cluster) pair, by health.",
            labels=["service", "cluster", "health"],
        )
        for _, name, cluster, current in kept:
            for label in HEALTH_STATES:
                state_f.add_metric([name, cluster, label], 1.0 if label == current else 0.0)
            h = health.get((name, cluster))
            score_f.add_metric([name, cluster], h.score if h is not None else 0.0)
            eps = endpoints.get((name, cluster), ())
            total = max(h.total_endpoints if h is not None else 0, len(eps))
            good = h.healthy_endpoints if h is not None else sum(1 for e in eps if e.routable)
            good = min(good, total)
            eps_f.add_metric([name, cluster, "healthy"], good)
            eps_f.add_metric([name, cluster, "unhealthy"], total - good)
        pairs_f = GaugeMetricFamily(
            "fedgate_upstream_pairs",
            "(service, cluster) pairs of the view: reported one by one, or omitted "
            "by the cardinality budget (still counted in the aggregates).",
            labels=["budget"],
        )
        pairs_f.add_metric(["reported"], len(kept))
        pairs_f.add_metric(["omitted"], total_pairs - len(kept))
        svc_f = GaugeMetricFamily(
            "fedgate_service_clusters",
            "Clusters of a service in each state (states with none omitted).",
            labels=["service", "state"],
        )
        for name, counts in per_service.items():
            for st, n in counts.items():
                svc_f.add_metric([name, st], n)
        cl_f = GaugeMetricFamily(
            "fedgate_cluster_services",
            "Services of a cluster in each state (states with none omitted).",
            labels=["cluster", "state"],
        )
        for cluster, counts in per_cluster.items():
            for st, n in counts.items():
                cl_f.add_metric([cluster, st], n)
        return [state_f, score_f, eps_f, pairs_f, svc_f, cl_f]
