"""Observations -> the federation's opinion of every (service, cluster).

Every gateway sees its own cluster's endpoints (active probes), the other clusters'
gateways (east-west pings) and the error rate and latency of its real traffic
(``federation.health``); each cluster's health leader folds its gateways' views into
the cluster's summary (``federation.health_summary``), signed by the leader's gateway
id. :func:`aggregate` folds the opinions of the *live* observers (summaries whose
leader has a :class:`GatewayRecord`, i.e. a lease) into one :class:`ServiceHealth` per
(service, cluster), one vote per cluster:

- the own-cluster observers are authoritative for endpoint counts: when they see no
  healthy endpoint the service is ``unhealthy`` there;
- otherwise a cluster is ``unhealthy`` for the federation only when a strict majority of
  the live observers that have an opinion say so: one lying or partitioned observer
  cannot take a cluster out;
- ``degraded`` when some endpoints are down, the recent error rate is above
  :data:`DEGRADED_ERROR_RATE`, or a minority votes down;
- ``unknown`` when nobody has an opinion (yet): usable, with a lower score;
- ``since`` is kept from the previous result while the state is unchanged, so placement
  can ramp traffic back to a recovered cluster.

Pure and cheap: called by the view builder on every view change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from statistics import median
from types import MappingProxyType

from federation.model import (
    ANY,
    Cluster,
    Endpoint,
    GatewayRecord,
    HealthState,
    Observation,
    Service,
    ServiceHealth,
)

DEGRADED_ERROR_RATE = 0.05  # above this recent error rate a cluster is degraded
UNKNOWN_SCORE = 0.5  # the score factor of a cluster nobody has observed yet
LATENCY_SCALE_MS = 250.0  # latency at which the latency factor of the score halves

Key = tuple[str, str]


def aggregate(
    *,
    services: Mapping[str, Service],
    clusters: Mapping[str, Cluster],
    endpoints: Mapping[tuple[str, str], tuple[Endpoint, ...]],
    gateways: Mapping[str, GatewayRecord],
    observations: Sequence[Observation],
    previous: Mapping[tuple[str, str], ServiceHealth],
    now: float,
) -> Mapping[tuple[str, str], ServiceHealth]:
    """The aggregated health of every service in every cluster it runs in.

    The same rules as the incremental view (``federation.viewstate``) applies pair by
    pair; this is the whole-federation form (tests, one-shot tools).
    """
    live = {g.id for g in gateways.values()}
    by_key: dict[Key, list[Observation]] = {}
    markers: dict[str, str] = {}
    for obs in observations:
        if obs.observer not in live:
            continue
        if obs.service == ANY and obs.cluster == ANY:
            markers[obs.observer] = obs.observer_cluster
        else:
            by_key.setdefault((obs.service, obs.cluster), []).append(obs)
    per_cluster: dict[str, int] = {}
    for cluster in markers.values():
        per_cluster[cluster] = per_cluster.get(cluster, 0) + 1
    result: dict[Key, ServiceHealth] = {}
    for service in services.values():
        for cluster in service.clusters:
            if cluster not in clusters:
                continue
            key = (service.name, cluster)
            opinions, extra = pair_opinions(
                service.name,
                cluster,
                explicit=by_key.get(key, ()),
                cluster_wide=by_key.get((ANY, cluster), ()),
                markers=markers,
                outside=len(markers) - per_cluster.get(cluster, 0),
            )
            result[key] = assess_pair(
                service.name,
                cluster,
                endpoints=endpoints.get(key, ()),
                observations=opinions,
                previous=previous.get(key),
                now=now,
                extra_voters=extra,
            )
    return MappingProxyType(result)


def pair_opinions(
    service: str,
    cluster: str,
    *,
    explicit: Iterable[Observation],
    cluster_wide: Iterable[Observation],
    markers: Mapping[str, str],
    outside: int,
) -> tuple[list[Observation], int]:
    """The opinions on one (service, cluster): (observations, silent healthy voters).

    An observer's opinion is, by priority: its observation of the pair; its cluster-wide
    exception for the cluster (``service="*"``: unreachable, or ``unknown`` = no
    opinion); else, when it publishes the marker (``"*"/"*"``: it pings every other
    cluster) and is not of that cluster, a silent healthy vote. ``outside`` is the
    number of live markers of other clusters.
    """
    opinions = list(explicit)
    seen = {o.observer for o in opinions}
    for o in cluster_wide:
        if o.observer in seen:
            continue
        seen.add(o.observer)
        if o.state is not HealthState.UNKNOWN:
            opinions.append(dataclasses.replace(o, service=service))
    silent = outside - sum(1 for o in seen if markers.get(o, cluster) != cluster)
    return opinions, max(0, silent)


def assess_pair(
    service: str,
    cluster: str,
    *,
    endpoints: Sequence[Endpoint],
    observations: Sequence[Observation],
    previous: ServiceHealth | None,
    now: float,
    extra_voters: int = 0,
) -> ServiceHealth:
    """One (service, cluster) from its live observers, ``since`` carried from ``previous``.

    What the incremental view (``federation.viewstate``) calls for each pair a change
    touched; :func:`aggregate` is the same over every pair.
    """
    health = assess(
        service, cluster, endpoints=endpoints, observations=observations, extra_voters=extra_voters
    )
    same = previous is not None and previous.state is health.state
    return _with_since(health, previous.since if same and previous is not None else now)


def assess(
    service: str,
    cluster: str,
    *,
    endpoints: Sequence[Endpoint],
    observations: Sequence[Observation],
    extra_voters: int = 0,
) -> ServiceHealth:
    """One (service, cluster) from the live observers' opinions (``since`` left at 0).

    ``extra_voters`` are silent healthy voters (other clusters' gateways that ping this
    one and did not report it unreachable): they count as voters, carry no statistics.
    """
    # one opinion per observer: the newest
    latest: dict[str, Observation] = {}
    for obs in observations:
        seen = latest.get(obs.observer)
        if seen is None or obs.at >= seen.at:
            latest[obs.observer] = obs
    opinions = list(latest.values())
    own = [o for o in opinions if o.observer_cluster == cluster]
    routable = sum(1 for e in endpoints if e.routable)

    own_degraded = False
    if own:
        # the cluster's summary (federation/health_summary.py); were there several
        # opinions of the cluster, trust the one that sees most (a broken or lying
        # gateway cannot make the others' endpoints vanish)
        best = max(own, key=lambda o: (o.healthy, o.total))
        healthy, total = best.healthy, max(best.total, best.healthy)
        own_degraded = best.state is HealthState.DEGRADED  # e.g. a minority of its gateways
    else:
        healthy, total = routable, len(endpoints)

    voters = [o for o in opinions if o.state is not HealthState.UNKNOWN]
    n_voters = len(voters) + extra_voters
    down = sum(1 for o in voters if o.state is HealthState.UNHEALTHY)
    traffic = [o for o in opinions if o.error_rate > 0.0 or o.latency_ms > 0.0]
    error_rate = median(o.error_rate for o in traffic) if traffic else 0.0
    latency_ms = median(o.latency_ms for o in traffic) if traffic else 0.0

    if total == 0:
        state = HealthState.UNHEALTHY  # nowhere to send a request
    elif own and healthy == 0:
        state = HealthState.UNHEALTHY  # the cluster's own gateways see no healthy endpoint
    elif n_voters and 2 * down > n_voters:
        state = HealthState.UNHEALTHY  # a majority of live observers agree
    elif not n_voters:
        state = HealthState.UNKNOWN
    elif down or healthy < total or error_rate > DEGRADED_ERROR_RATE or own_degraded:
        state = HealthState.DEGRADED
    else:
        state = HealthState.HEALTHY

    return ServiceHealth(
        service=service,
        cluster=cluster,
        state=state,
        score=score(
            state,
            healthy=healthy,
            total=total,
            error_rate=error_rate,
            latency_ms=latency_ms,
            down_share=down / n_voters if n_voters else 0.0,
        ),
        healthy_endpoints=healthy,
        total_endpoints=total,
        error_rate=error_rate,
        latency_ms=latency_ms,
        observers=len(opinions) + extra_voters,
        down_votes=down,
    )


def score(
    state: HealthState,
    *,
    healthy: int,
    total: int,
    error_rate: float,
    latency_ms: float,
    down_share: float = 0.0,
) -> float:
    """0..1, higher is healthier: healthy share x success rate^2 x latency factor."""
    if state is HealthState.UNHEALTHY or total <= 0:
        return 0.0
    share = min(1.0, healthy / total)
    success = max(0.0, 1.0 - min(1.0, error_rate))
    latency = 1.0 / (1.0 + max(0.0, latency_ms) / LATENCY_SCALE_MS)
    value = share * success * success * latency * (1.0 - 0.5 * down_share)
    if state is HealthState.UNKNOWN:
        value *= UNKNOWN_SCORE
    return round(max(0.0, min(1.0, value)), 4)


def _with_since(h: ServiceHealth, since: float) -> ServiceHealth:
    return ServiceHealth(
        service=h.service,
        cluster=h.cluster,
        state=h.state,
        score=h.score,
        healthy_endpoints=h.healthy_endpoints,
        total_endpoints=h.total_endpoints,
        error_rate=h.error_rate,
        latency_ms=h.latency_ms,
        observers=h.observers,
        down_votes=h.down_votes,
        since=since,
    )
