"""The per-view metric gauges, updated for what changed instead of rewritten per swap.

``Telemetry.set_view`` clears and re-sets the upstream gauges of every (service,
cluster) on each swap: O(services x clusters), which at 1,000 clusters costs more than
the whole incremental view update. :class:`ViewGauges` is the view listener the
composition root installs instead: a swap that keeps ``services`` and ``clusters``
(every health, endpoint or gateway change, see ``federation.viewstate``) touches only
the pairs whose health or endpoints are new objects (identity, not equality: the
incremental view keeps the objects of what did not change); a service change touches
that service's pairs (and drops those that left); a change of the clusters falls back
to ``set_view``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from federation.model import HealthState, RoutingView

__all__ = ["ViewGauges"]


class ViewGauges:
    """``telemetry.set_view`` at the cost of what changed (a ViewHolder listener)."""

    def __init__(self, telemetry: Any, *, health_value: Mapping[str, float]) -> None:
        self._t = telemetry
        self._value = health_value  # the gauge's encoding of a state (telemetry's)
        self._last: RoutingView | None = None
        self.full = 0  # swaps that rewrote every gauge
        self.pairs = 0  # pairs rewritten by incremental swaps

    def __call__(self, view: RoutingView) -> None:
        before, self._last = self._last, view
        t = self._t
        if (
            before is None
            or view.clusters is not before.clusters
            or not hasattr(t, "_upstream_health")  # telemetry's internals moved: stay correct
        ):
            self.full += 1
            t.set_view(view)
            return
        t._revision.set(view.config_revision)
        t._etcd_revision.set(view.revision)
        t._stale.set(1 if view.stale else 0)
        t._view_updates.labels("success").inc()
        new_rejections = sum(1 for r in view.rejected if r.revision > t._last_revision)
        if new_rejections:
            t._view_updates.labels("rejected").inc(new_rejections)
        t._last_revision = max(t._last_revision, view.revision)
        changed: set[tuple[str, str]] = set()
        if view.services is not before.services:  # a config change: the services it touched
            old_services = before.services
            for name, service in view.services.items():
                if old_services.get(name) is not service:
                    changed.update((name, c) for c in service.clusters)
                    gone = old_services.get(name)
                    if gone is not None:
                        self._drop(name, [c for c in gone.clusters if c not in service.clusters])
            for name, gone in old_services.items():
                if name not in view.services:
                    self._drop(name, list(gone.clusters))
        if view.health is not before.health:
            old = before.health
            changed.update(k for k, h in view.health.items() if old.get(k) is not h)
            changed.update(k for k in old if k not in view.health)
        if view.endpoints is not before.endpoints:
            old_eps = before.endpoints
            changed.update(k for k, e in view.endpoints.items() if old_eps.get(k) is not e)
            changed.update(k for k in old_eps if k not in view.endpoints)
        value = self._value
        for service_name, cluster in changed:
            runs = view.services.get(service_name)
            if runs is None or cluster not in runs.clusters:
                continue  # not a pair of the view: set_view never wrote it either
            self.pairs += 1
            h = view.health.get((service_name, cluster))
            state = h.state if h is not None else HealthState.UNKNOWN
            t._upstream_health.labels(service_name, cluster).set(value[state])
            t._upstream_score.labels(service_name, cluster).set(h.score if h is not None else 0.0)
            eps = view.endpoints.get((service_name, cluster), ())
            routable = sum(1 for ep in eps if ep.routable)
            healthy = h.healthy_endpoints if h is not None else routable
            total = max(h.total_endpoints if h is not None else 0, len(eps))
            t._upstream_endpoints.labels(service_name, cluster, "healthy").set(healthy)
            t._upstream_endpoints.labels(service_name, cluster, "total").set(total)

    def _drop(self, service: str, clusters: list[str]) -> None:
        """Forget the gauges of pairs that left the view (``set_view`` clears them)."""
        t = self._t
        for cluster in clusters:
            for gauge, labels in (
                (t._upstream_health, (service, cluster)),
                (t._upstream_score, (service, cluster)),
                (t._upstream_endpoints, (service, cluster, "healthy")),
                (t._upstream_endpoints, (service, cluster, "total")),
            ):
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
