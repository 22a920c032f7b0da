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
from collections.abc import Callable, Iterable, Mapping, Sequence
from statistics import median
from types import MappingProxyType

from federation.frozen import builder
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

# ServiceHealth(*fields), at half the cost
_SERVICE_HEALTH: Callable[..., ServiceHealth] = builder(ServiceHealth)

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
    silent = outside
    for observer in seen:
        if markers.get(observer, cluster) != cluster:
            silent -= 1
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
    return judge(service, cluster, endpoints, observations, extra_voters, previous, now)


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
    return judge(service, cluster, endpoints, observations, extra_voters, None, 0.0)


def _median(values: list[float]) -> float:
    return values[0] if len(values) == 1 else median(values)


def judge(
    service: str,
    cluster: str,
    endpoints: Sequence[Endpoint],
    observations: Sequence[Observation],
    extra_voters: int,
    previous: ServiceHealth | None,
    now: float,
) -> ServiceHealth:
    """:func:`assess_pair` with positional arguments (the view state calls it per pair):
    ``since`` = ``previous.since`` while the state is unchanged, else ``now``.

    Built once per pair (40,000 pairs at 1,000 clusters): the common pair has one
    opinion, its cluster's summary, so nothing here costs more than a pass, and that
    case makes no intermediate list."""
    # one opinion per observer: the newest
    opinions: Sequence[Observation]
    if len(observations) <= 1:
        opinions = observations
    else:
        latest: dict[str, Observation] = {}
        for obs in observations:
            seen = latest.get(obs.observer)
            if seen is None or obs.at >= seen.at:
                latest[obs.observer] = obs
        opinions = list(latest.values())
    own: Sequence[Observation]
    if len(opinions) == 1:
        own = opinions if opinions[0].observer_cluster == cluster else ()
    else:
        own = [o for o in opinions if o.observer_cluster == cluster]

    own_degraded = False
    if own:
        # the cluster's summary (federation/health_summary.py); were there several
        # opinions of the cluster, trust the one that sees most (a broken or lying
        # gateway cannot make the others' endpoints vanish)
        best = own[0] if len(own) == 1 else max(own, key=lambda o: (o.healthy, o.total))
        healthy, total = best.healthy, max(best.total, best.healthy)
        own_degraded = best.state is HealthState.DEGRADED  # e.g. a minority of its gateways
    else:
        healthy, total = sum(1 for e in endpoints if e.routable), len(endpoints)

    n_voters = extra_voters
    down = 0
    errors: list[float] = []
    latencies: list[float] = []
    for o in opinions:
        if o.state is not HealthState.UNKNOWN:
            n_voters += 1
            if o.state is HealthState.UNHEALTHY:
                down += 1
        if o.error_rate > 0.0 or o.latency_ms > 0.0:
            errors.append(o.error_rate)
            latencies.append(o.latency_ms)
    error_rate = _median(errors) if errors else 0.0
    latency_ms = _median(latencies) if latencies else 0.0

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

    return _SERVICE_HEALTH(
        service,
        cluster,
        state,
        _score(
            state,
            healthy,
            total,
            error_rate,
            latency_ms,
            down / n_voters if n_voters else 0.0,
        ),
        healthy,
        total,
        error_rate,
        latency_ms,
        len(opinions) + extra_voters,
        down,
        previous.since if previous is not None and previous.state is state else now,
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
    return _score(state, healthy, total, error_rate, latency_ms, down_share)


def _score(
    state: HealthState,
    healthy: int,
    total: int,
    error_rate: float,
    latency_ms: float,
    down_share: float,
) -> float:
    """:func:`score`, positional (once per assessed pair)."""
    if state is HealthState.UNHEALTHY or total <= 0:
        return 0.0
    share = min(1.0, healthy / total)
    success = max(0.0, 1.0 - min(1.0, error_rate))
    latency = 1.0 / (1.0 + max(0.0, latency_ms) / LATENCY_SCALE_MS)
    value = share * success * success * latency * (1.0 - 0.5 * down_share)
    if state is HealthState.UNKNOWN:
        value *= UNKNOWN_SCORE
    if value >= 1.0:
        return 1.0  # round(1.0, 4): the common case, without round's decimal conversion
    if value <= 0.0:
        return 0.0
    return round(max(0.0, min(1.0, value)), 4)
