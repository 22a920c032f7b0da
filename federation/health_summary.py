"""One cluster's health, agreed by its gateways: local views -> the cluster's summary.

Every gateway of a cluster sees the same things (federation/health.py): its cluster's
endpoints, the other clusters' gateways, its own traffic. Its *local view* is a list of
:class:`Observation` (own services, cluster-wide exceptions, traffic lines, the marker).
The cluster's health leader (``federation/health_leader.py``) folds the local views of
the cluster's live gateways into the *summary* with :func:`combine`, one vote of the
cluster per fact, by the same rules the federation applies between clusters:

- a service of the cluster: endpoint counts from the gateway that sees most (a broken or
  lying gateway cannot hide the others' endpoints); ``unhealthy`` when nobody sees a
  healthy endpoint or a strict majority of the gateways says so, ``degraded`` when a
  minority says so or some endpoints are down; error rate and latency the median of the
  gateways with traffic;
- another cluster: unreachable (a cluster-wide exception) only when a strict majority of
  the gateways with an opinion cannot reach it, ``unknown`` when none has one yet;
  reachable otherwise (the summary's marker: a silent healthy vote);
- a (service, other cluster) with real traffic: the majority of the gateways' opinions
  of it (their own line, else their exception, else their marker), median statistics.

The summary is split by key (:func:`summary_name`): one key per own service and one
cluster-wide key (``*``: exceptions, traffic lines, marker), so a change of one
service's health is one small key for every watcher to decode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import median

from federation.model import ANY, HealthState, Observation

Summary = dict[str, tuple[Observation, ...]]  # key name -> its observations


def summary_name(obs: Observation) -> str:
    """The summary key an observation belongs in: its service (own), else ``*``."""
    if obs.service != ANY and obs.cluster == obs.observer_cluster:
        return obs.service
    return ANY


def fully_healthy(obs: Observation) -> bool:
    """An own service seen healthy with every endpoint up and no traffic statistics."""
    return (
        obs.cluster == obs.observer_cluster
        and obs.service != ANY
        and obs.state is HealthState.HEALTHY
        and obs.healthy == obs.total
        and obs.error_rate == 0.0
        and obs.latency_ms == 0.0
    )


def compact(view: Iterable[Observation]) -> list[Observation]:
    """A local view as a report: what is fully healthy is left out (:func:`combine` reads
    a missing own service as healthy with every endpoint up), so a steady cluster's
    reports hold its exceptions and marker, not one line per service."""
    return [o for o in view if not fully_healthy(o)]


def content(observations: Iterable[Observation]) -> tuple[object, ...]:
    """What is worth a write: every field but the observer and the time."""
    return tuple(
        (o.service, o.cluster, str(o.state), o.healthy, o.total, o.error_rate, o.latency_ms)
        for o in observations
    )


@dataclass(frozen=True, slots=True)
class _Votes:
    voters: int
    down: int

    def state(self) -> HealthState | None:
        """UNHEALTHY by strict majority, DEGRADED by a minority, None when nobody is down."""
        if not self.voters:
            return HealthState.UNKNOWN
        if 2 * self.down > self.voters:
            return HealthState.UNHEALTHY
        return HealthState.DEGRADED if self.down else None


def _votes(states: Iterable[HealthState]) -> _Votes:
    known = [s for s in states if s is not HealthState.UNKNOWN]
    return _Votes(len(known), sum(1 for s in known if s is HealthState.UNHEALTHY))


def _stats(lines: Sequence[Observation]) -> tuple[float, float]:
    traffic = [o for o in lines if o.error_rate > 0.0 or o.latency_ms > 0.0]
    if not traffic:
        return 0.0, 0.0
    return (
        round(median(o.error_rate for o in traffic), 4),
        round(median(o.latency_ms for o in traffic), 2),
    )


def combine(
    cluster: str, leader: str, views: Mapping[str, Sequence[Observation]], now: float
) -> Summary:
    """The cluster's summary from its live gateways' local views (gateway id -> view)."""

    def obs(service: str, of: str, state: HealthState, healthy: int, total: int) -> Observation:
        return Observation(leader, cluster, service, of, state, healthy, total, at=now)

    own: dict[str, list[Observation]] = {}
    lines: dict[tuple[str, str], dict[str, Observation]] = {}
    wide: dict[str, dict[str, HealthState]] = {}  # remote cluster -> gateway -> exception
    markers: dict[str, Observation] = {}
    for gateway, view in views.items():
        for o in view:
            if o.service == ANY and o.cluster == ANY:
                markers[gateway] = o
            elif o.service == ANY:
                wide.setdefault(o.cluster, {})[gateway] = o.state
            elif o.cluster == cluster:
                own.setdefault(o.service, []).append(o)
            else:
                lines.setdefault((o.service, o.cluster), {})[gateway] = o

    out: Summary = {}
    for service, seen in sorted(own.items()):
        # a gateway that lists no line for the service reports it fully healthy
        # (compact); its endpoint count is the largest any other gateway reports
        silent = [g for g in views if not any(o.observer == g for o in seen)]
        if silent:
            full = max(o.total for o in seen)
            seen = seen + [
                Observation(g, cluster, service, cluster, HealthState.HEALTHY, full, full)
                for g in silent
            ]
        known = [o for o in seen if o.state is not HealthState.UNKNOWN]
        if not known:
            continue  # nobody has probed every endpoint yet: no opinion
        seen = known
        best = max(seen, key=lambda o: (o.healthy, o.total))
        healthy, total = best.healthy, max(best.total, best.healthy)
        voted = _votes(o.state for o in seen).state()
        if total == 0 or healthy == 0:
            state = HealthState.UNHEALTHY  # nobody sees a healthy endpoint
        elif voted is not None and voted is not HealthState.UNKNOWN:
            state = voted
        elif healthy < total or any(o.state is HealthState.DEGRADED for o in seen):
            state = HealthState.DEGRADED
        else:
            state = HealthState.HEALTHY
        err, ms = _stats(seen)
        out[service] = (
            Observation(leader, cluster, service, cluster, state, healthy, total, err, ms, now),
        )

    def opinion(gateway: str, remote: str) -> HealthState:
        """A gateway's cluster-wide opinion of another cluster (UNKNOWN: none)."""
        listed = wide.get(remote, {}).get(gateway)
        if listed is not None:
            return listed
        return HealthState.HEALTHY if gateway in markers else HealthState.UNKNOWN

    cluster_wide: list[Observation] = []
    unreachable = 0
    for remote in sorted(wide):
        votes = _votes(opinion(g, remote) for g in views)
        if not votes.voters:
            cluster_wide.append(obs(ANY, remote, HealthState.UNKNOWN, 0, 0))
        elif 2 * votes.down > votes.voters:
            cluster_wide.append(obs(ANY, remote, HealthState.UNHEALTHY, 0, 1))
            unreachable += 1
    for (service, remote), by_gateway in sorted(lines.items()):
        states = [by_gateway[g].state if g in by_gateway else opinion(g, remote) for g in views]
        voted = _votes(states).state()
        state = voted if voted is not None else HealthState.HEALTHY
        err, ms = _stats(list(by_gateway.values()))
        up = 0 if state is HealthState.UNHEALTHY else 1
        cluster_wide.append(
            Observation(leader, cluster, service, remote, state, up, 1, err, ms, now)
        )
    if markers:
        pinged = max(m.total for m in markers.values())
        reachable = max(0, pinged - unreachable)
        cluster_wide.append(obs(ANY, ANY, HealthState.HEALTHY, reachable, pinged))
    if cluster_wide:
        out[ANY] = tuple(cluster_wide)
    return out
