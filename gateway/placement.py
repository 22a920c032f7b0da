"""Which cluster serves a request: locality, tiers, health scores, local ejection, panic, failback.

The decision for one service over one routing view is computed once (cached by view
identity and service name) as a short list of *groups* tried in order:

1. the gateway's own cluster, when it runs the service, is healthy or degraded, has
   routable endpoints and is not ejected locally;
2. then the usable clusters of each tier, lowest tier first, weighted by capacity
   (healthy endpoints x score).

With the ``ordered`` failover policy the groups are the clusters in the operator's order.
A group takes a request with probability ``accept`` (1 unless every member is ramping back
after a recovery), else the request falls through to the next group; inside a group the
cluster is a weighted random pick with the injected rng. So the per-request work is one
or two random numbers and a bisect.

*Panic*: when no cluster is usable, requests spread over every reachable candidate rather
than failing closed. *Failback*: a cluster seen down by this gateway and usable again gets
a share ramping linearly from ~0 to full over ``Failover.failback_window`` (longer when it
flaps), so traffic returns gradually and does not oscillate; a cluster this gateway has
only seen absent so far (no live gateway there yet: its view is still filling in) gets its
full share when it first appears usable: nothing recovered. *Local ejection*: passive and
immediate, ``consecutive_failures`` failed tries in a row take a cluster out for this
gateway only (``eject_for``, doubling on repeat up to ``max_eject``); after that one
failure sends it out again until a success clears it. Local probe results
(:meth:`Placement.local_endpoints`) override the shared view for the own cluster, so a
local outage takes effect without a round trip through etcd. Until they report (a gateway
just started), the own cluster is judged by its own evidence only: its summary's endpoint
counts, else its routable endpoints; other clusters voting it unreachable is no reason
for this gateway, which reaches its endpoints without them, to send its traffic away.

Remote clusters without any live gateway (no :class:`GatewayRecord` in the view) are not
candidates at all: nobody would answer there.
"""

from __future__ import annotations

import math
import random
import time
from bisect import bisect_right
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from federation.model import HealthState, RoutingView, Service, ServiceHealth

Key = tuple[str, str]

RAMP_FLOOR = 0.02  # the share a recovered cluster gets right after it came back
RAMP_STEP = 0.25  # seconds between recomputations of a ramp
FLAP_MEMORY = 60.0  # seconds during which repeated downs lengthen the failback ramp
MAX_RAMP_FACTOR = 4.0
UNKNOWN_SCORE = 0.5
MIN_SCORE = 0.01

_USABLE_STATES = (HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNKNOWN)


@dataclass(slots=True)
class _Local:
    """This gateway's own passive verdict on one (service, cluster)."""

    failures: int = 0
    ejected_until: float = 0.0
    ejections: int = 0
    probation: bool = False


@dataclass(slots=True)
class _Track:
    """What this gateway saw of a (service, cluster) over time, for failback ramps."""

    usable: bool = True
    seen: bool = True  # False while this gateway has only seen it absent (view filling in)
    seen_down: bool = False
    confirmed: bool = True  # a try succeeded since it came back: the ramp runs
    down_at: float = 0.0
    up_at: float = 0.0
    downs: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Candidate:
    cluster: str
    tier: int
    state: HealthState
    score: float
    capacity: int
    usable: bool
    ramp: float  # 0..1: share of its weight while ramping back
    ejected_for: float  # seconds left of a local ejection, 0 if none
    reason: str  # why it is not usable ("" when usable)
    local: bool

    @property
    def weight(self) -> float:
        return self.capacity * max(self.score, MIN_SCORE) * max(self.ramp, RAMP_FLOOR)


@dataclass(frozen=True, slots=True)
class _Group:
    clusters: tuple[str, ...]
    cumulative: tuple[float, ...]
    accept: float  # probability the group takes the request (1.0 for the last group)
    label: str

    def members(self) -> tuple[tuple[str, float], ...]:
        """(cluster, weight) of every member, in the group's order."""
        return tuple(zip(self.clusters, _weights(self.cumulative), strict=True))

    def pick(self, rng: random.Random) -> str:
        if len(self.clusters) == 1:
            return self.clusters[0]
        x = rng.random() * self.cumulative[-1]
        return self.clusters[min(bisect_right(self.cumulative, x), len(self.clusters) - 1)]


@dataclass(frozen=True, slots=True)
class _Plan:
    epoch: int
    expires: float
    groups: tuple[_Group, ...]
    order: tuple[str, ...]  # every reachable candidate, best first: the retry order
    candidates: tuple[Candidate, ...]  # every candidate, reachable or not
    unreachable: dict[str, str]  # cluster -> why it is no candidate at all
    panic: bool
    by_first: dict[str, tuple[str, ...]]  # the whole plan for each possible first cluster
    fixed: tuple[str, ...] | None  # the plan when its first cluster is certain (no draw)


class Placement:
    """Chooses the cluster of each request over the current routing view."""

    def __init__(
        self,
        local_cluster: str,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        consecutive_failures: int = 3,
        eject_for: float = 2.0,
        max_eject: float = 30.0,
    ) -> None:
        if consecutive_failures < 1:
            raise ValueError("consecutive_failures must be at least 1")
        self.local_cluster = local_cluster
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._threshold = consecutive_failures
        self._eject_for = eject_for
        self._max_eject = max_eject
        self._view: RoutingView | None = None
        self._plans: dict[str, _Plan] = {}
        self._epoch = 0
        self._local: dict[Key, _Local] = {}
        self._tracks: dict[Key, _Track] = {}
        self._awaiting: set[Key] = set()  # usable again, waiting for a first success
        self._probes: dict[str, tuple[int, int]] = {}  # service -> own cluster (healthy, total)

    # ------------------------------------------------------------------ request path
    def plan(
        self, view: RoutingView, service: Service, *, exclude: AbstractSet[str] = frozenset()
    ) -> tuple[str, ...]:
        """Clusters to try: the first is where the request goes, the rest where retries go."""
        p = self._plan_for(view, service)
        if not exclude:
            if p.fixed is not None:
                return p.fixed
            first = self._first(p.groups)
            if first is None:
                return p.order
            return p.by_first[first]
        groups = []
        for g in p.groups:
            kept = [(c, w) for c, w in zip(g.clusters, _weights(g.cumulative), strict=True)]
            kept = [(c, w) for c, w in kept if c not in exclude]
            if kept:
                groups.append(_group([c for c, _ in kept], [w for _, w in kept], g.accept, ""))
        order = [c for c in p.order if c not in exclude]
        first = self._first(groups)
        if first is None:
            return tuple(order)
        return (first, *[c for c in order if c != first])

    def groups(self, view: RoutingView, service: Service) -> tuple[_Group, ...]:
        """The plan's groups, preferred first, as :meth:`plan` draws from them; the same
        tuple object while the plan holds, so a caller may cache what it derives from it.
        The authoritative DNS (``gateway/dns``) answers from them."""
        return self._plan_for(view, service).groups

    def _first(self, groups: tuple[_Group, ...] | list[_Group]) -> str | None:
        last = len(groups) - 1
        for i, g in enumerate(groups):
            if i == last or g.accept >= 1.0 or self._rng.random() < g.accept:
                return g.pick(self._rng)
        return None

    def local_failure(self, service: str, cluster: str) -> None:
        """A failed try (connect failure, reset, timeout, 5xx) to ``cluster`` for ``service``."""
        key = (service, cluster)
        st = self._local.get(key)
        if st is None:
            st = self._local[key] = _Local()
        st.failures += 1
        now = self._clock()
        if st.ejected_until > now:
            return
        if st.failures >= self._threshold or st.probation:
            st.ejections += 1
            st.ejected_until = now + min(
                self._max_eject, self._eject_for * 2 ** min(st.ejections - 1, 16)
            )
            st.probation = True
            self._epoch += 1

    def local_success(self, service: str, cluster: str) -> None:
        if not self._local and not self._awaiting:
            return  # nothing ejected nor awaiting its first success: the common case
        key = (service, cluster)
        if key in self._awaiting:
            self._confirm(key)
        st = self._local.get(key)
        if st is None:
            return
        st.failures = 0
        if st.ejected_until <= self._clock():
            del self._local[(service, cluster)]  # probation passed: forgiven
            if st.probation:
                self._epoch += 1

    def _confirm(self, key: Key) -> None:
        """A recovered cluster answered a try: its failback ramp starts now."""
        self._awaiting.discard(key)
        tr = self._tracks.get(key)
        if tr is not None and tr.usable and not tr.confirmed:
            tr.confirmed = True
            tr.up_at = self._clock()
            self._epoch += 1

    def local_endpoints(self, service: str, *, healthy: int, total: int) -> None:
        """The own cluster's endpoints of ``service`` as this gateway's probes see them now."""
        value = (healthy, total)
        if self._probes.get(service) != value:
            self._probes[service] = value
            self._epoch += 1

    # ------------------------------------------------------------------ explain
    def explain(self, view: RoutingView, service: Service) -> list[dict[str, object]]:
        """Every candidate cluster: tier, state, score, share of first tries, chosen, reason."""
        p = self._plan_for(view, service)
        shares = _shares(p.groups)
        chosen = max(shares, key=lambda c: shares[c]) if shares else None
        rank = {c: i for i, c in enumerate(p.order)}
        out: list[dict[str, object]] = []
        for cand in p.candidates:
            share = shares.get(cand.cluster, 0.0)
            reason = self._reason(cand, share, p, chosen)
            voted = view.health_of(service.name, cand.cluster) if cand.local else None
            if cand.usable and voted is not None and voted.state is HealthState.UNHEALTHY:
                own = (
                    "its own probes decide here"
                    if service.name in self._probes
                    else "its probes have not reported yet"
                )
                reason += (
                    f"; the federation says unhealthy ({voted.down_votes}/{voted.observers}"
                    f" observers report down), not this gateway's evidence: {own}"
                )
            out.append(
                {
                    "cluster": cand.cluster,
                    "tier": cand.tier,
                    "state": str(cand.state),
                    "score": cand.score,
                    "capacity": cand.capacity,
                    "share": round(share, 4),
                    "retry_rank": rank.get(cand.cluster),
                    "chosen": cand.cluster == chosen,
                    "reason": reason,
                }
            )
        return out

    def _reason(self, cand: Candidate, share: float, p: _Plan, chosen: str | None) -> str:
        if cand.cluster in p.unreachable:
            return f"excluded: {p.unreachable[cand.cluster]}"
        if p.panic:
            return f"panic mode: no usable cluster, spreading ({cand.reason}); share {share:.0%}"
        if not cand.usable:
            return f"not usable: {cand.reason}; retry only"
        parts = []
        if cand.local:
            parts.append("own cluster")
        parts.append(f"{cand.state}, tier {cand.tier}, capacity {cand.capacity}")
        if cand.ramp < 1.0:
            parts.append(f"ramping back after recovery ({cand.ramp:.0%} of its share)")
        if share <= 0.0:
            parts.append("a preferred cluster takes the traffic")
        elif cand.cluster == chosen:
            parts.append(f"chosen: share {share:.0%}")
        else:
            parts.append(f"share {share:.0%}")
        return "; ".join(parts)

    # ------------------------------------------------------------------ computation
    def _plan_for(self, view: RoutingView, service: Service) -> _Plan:
        if view is not self._view:
            self._view = view
            self._plans = {}
        p = self._plans.get(service.name)
        if p is not None and p.epoch == self._epoch:
            expires = p.expires
            if expires == math.inf or self._clock() < expires:
                return p  # a plan with no deadline is not held against the clock
        now = self._clock()
        p = self._plans[service.name] = self._compute(view, service, now)
        return p

    def _compute(self, view: RoutingView, service: Service, now: float) -> _Plan:
        candidates: list[Candidate] = []
        unreachable: dict[str, str] = {}
        expires = math.inf
        for name in service.clusters:
            cand, why = self._candidate(view, service, name, now)
            candidates.append(cand)
            if why:
                unreachable[name] = why
            if cand.ejected_for > 0:
                expires = min(expires, now + cand.ejected_for)
            if cand.usable and cand.ramp < 1.0:
                expires = min(expires, now + RAMP_STEP)
            if not cand.local:
                expires = min(expires, east_west_problem(view, name, now)[1])
        reachable = [c for c in candidates if c.cluster not in unreachable]
        usable = [c for c in reachable if c.usable]

        groups: list[_Group] = []
        if service.failover.policy == "ordered":
            pos = {name: i for i, name in enumerate(service.failover.order)}
            by_pref = sorted(usable, key=lambda c: (pos.get(c.cluster, len(pos)), c.tier))
            for c in by_pref:
                groups.append(_group([c.cluster], [c.weight], c.ramp, f"ordered {c.cluster}"))
        else:
            by_pref = []
            local = [c for c in usable if c.local]
            if local:
                groups.append(_group([local[0].cluster], [1.0], local[0].ramp, "own cluster"))
                by_pref.extend(local)
            remote = [c for c in usable if not c.local]
            for tier in sorted({c.tier for c in remote}):
                members = sorted(
                    (c for c in remote if c.tier == tier), key=lambda c: (-c.weight, c.cluster)
                )
                by_pref.extend(members)
                groups.append(
                    _group(
                        [c.cluster for c in members],
                        [c.weight for c in members],
                        max(c.ramp for c in members),
                        f"tier {tier}",
                    )
                )
        panic = not groups and bool(reachable)
        rest = sorted(
            (c for c in reachable if not c.usable),
            key=lambda c: (c.ejected_for > 0, c.tier, -c.capacity, c.cluster),
        )
        if panic:
            groups.append(
                _group(
                    [c.cluster for c in rest],
                    [float(max(c.capacity, 1)) for c in rest],
                    1.0,
                    "panic",
                )
            )
        order = tuple(c.cluster for c in (*by_pref, *rest))
        by_first = {first: (first, *[c for c in order if c != first]) for first in order}
        fixed: tuple[str, ...] | None = None
        if not groups:
            fixed = order
        elif (len(groups) == 1 or groups[0].accept >= 1.0) and len(groups[0].clusters) == 1:
            fixed = by_first[groups[0].clusters[0]]  # what ``_first`` gives, drawing nothing
        return _Plan(
            epoch=self._epoch,
            expires=expires,
            groups=tuple(groups),
            order=order,
            candidates=tuple(candidates),
            unreachable=unreachable,
            panic=panic,
            by_first=by_first,
            fixed=fixed,
        )

    def _candidate(
        self, view: RoutingView, service: Service, name: str, now: float
    ) -> tuple[Candidate, str]:
        cluster = view.clusters.get(name)
        tier = cluster.tier if cluster is not None else 0
        is_local = name == self.local_cluster
        health = view.health_of(service.name, name)
        endpoints = view.endpoints_of(service.name, name)
        routable = sum(1 for e in endpoints if e.routable)
        unreachable = ""
        if cluster is None:
            unreachable = "cluster not registered"
        elif not is_local and (problem := east_west_problem(view, name, now)[0]):
            unreachable = problem
        elif is_local and routable == 0:
            unreachable = "no routable endpoint in the own cluster"

        state, score, capacity, why = self._assess(service.name, name, is_local, health, routable)
        st = self._local.get((service.name, name))
        ejected_for = max(0.0, st.ejected_until - now) if st is not None else 0.0
        if ejected_for > 0 and not why:
            why = f"ejected locally for {ejected_for:.1f}s after consecutive failures"
        usable = not unreachable and not why and state in _USABLE_STATES and capacity > 0
        ramp = self._ramp(service, name, usable, now, present=not unreachable)
        cand = Candidate(
            cluster=name,
            tier=tier,
            state=state,
            score=score,
            capacity=capacity,
            usable=usable,
            ramp=ramp if usable else 0.0,
            ejected_for=ejected_for,
            reason=why or unreachable,
            local=is_local,
        )
        return cand, unreachable

    def _assess(
        self,
        service: str,
        cluster: str,
        is_local: bool,
        health: ServiceHealth | None,
        routable: int,
    ) -> tuple[HealthState, float, int, str]:
        """(state, score, capacity, why-not-usable) of one candidate, before ejection."""
        probe = self._probes.get(service) if is_local else None
        if probe is not None:
            healthy, total = probe
            if total == 0 or healthy == 0:
                return HealthState.UNHEALTHY, 0.0, 0, f"local probes: {healthy}/{total} healthy"
            state = HealthState.HEALTHY if healthy >= total else HealthState.DEGRADED
            if health is not None and health.state is HealthState.DEGRADED:
                state = HealthState.DEGRADED
            score = health.score if health is not None and health.score > 0 else healthy / total
            return state, score, healthy, ""
        if health is None:
            if routable == 0:
                return HealthState.UNKNOWN, 0.0, 0, "no routable endpoint"
            return HealthState.UNKNOWN, UNKNOWN_SCORE, routable, ""
        if is_local and health.state is HealthState.UNHEALTHY and health.healthy_endpoints > 0:
            # not probed here yet (a gateway just started): the own cluster is judged by
            # its own evidence, the endpoint counts of its summary. A majority of other
            # clusters voting it down says that *they* cannot reach its gateways (or that
            # they answered them 5xx): this gateway serves it without them, so it stays
            # first, unknown, until its own probes report (healthy until proven otherwise)
            return HealthState.UNKNOWN, UNKNOWN_SCORE, health.healthy_endpoints, ""
        if health.state is HealthState.UNHEALTHY:
            if health.total_endpoints and health.healthy_endpoints == 0:
                why = f"no healthy endpoint (0/{health.total_endpoints})"
            else:
                why = f"unhealthy: {health.down_votes}/{health.observers} observers report down"
            return health.state, 0.0, 0, why
        capacity = health.healthy_endpoints if health.total_endpoints else routable
        if capacity <= 0:
            return health.state, health.score, 0, "no healthy endpoint"
        return health.state, health.score, capacity, ""

    def _ramp(
        self, service: Service, cluster: str, usable: bool, now: float, present: bool
    ) -> float:
        """``present``: the cluster is in this gateway's view (for a remote one: a live
        gateway there); ``usable``: it may take first tries."""
        key = (service.name, cluster)
        tr = self._tracks.get(key)
        if tr is None:
            tr = self._tracks[key] = _Track(usable=usable, seen=usable or present)
            if not usable and present:
                tr.seen_down, tr.down_at = True, now
                tr.downs.append(now)
            return 1.0
        if not tr.seen:
            # only seen absent so far (no live gateway there yet: this gateway's view was
            # still filling in), now present: nothing recovered, no ramp, no flap
            if not present:
                return 0.0
            tr.seen = True
            if usable:
                tr.usable = True
                return 1.0
            tr.seen_down, tr.down_at = True, now
            tr.downs.append(now)
        if not usable:
            if tr.usable:
                tr.downs = [t for t in tr.downs if now - t < FLAP_MEMORY]
                tr.downs.append(now)
            tr.usable, tr.seen_down, tr.down_at = False, True, now
            return 0.0
        if not tr.usable:
            # usable again: it gets the floor share until a try succeeds there (a circuit
            # breaker may still be open, a blackhole may still swallow requests), then
            # ramps; the federation's ``since`` is not used: the cluster may have been
            # healthy but unreachable or ejected here
            tr.usable, tr.confirmed, tr.up_at = True, False, now
            self._awaiting.add(key)
        if not tr.seen_down:
            return 1.0
        if not tr.confirmed:
            return RAMP_FLOOR
        flaps = sum(1 for t in tr.downs if now - t < FLAP_MEMORY)
        window = service.failover.failback_window * min(MAX_RAMP_FACTOR, float(max(1, flaps)))
        if window <= 0:
            return 1.0
        ramp = (now - tr.up_at) / window
        if ramp >= 1.0:
            tr.seen_down = False
            return 1.0
        return max(RAMP_FLOOR, ramp)


def east_west_problem(view: RoutingView, cluster: str, now: float) -> tuple[str, float]:
    """Why no gateway of ``cluster`` can take east-west traffic ("" when one can), and
    the time this answer may change (the last certificate's expiry, else infinity).

    A gateway whose east-west certificate has expired is refused by its peers' mutual
    TLS anyway; counting it out here makes the cluster leave the plan at once instead
    of after a failed try per request."""
    if view.source == "manifest":  # no liveness without etcd: trust the manifest
        c = view.clusters.get(cluster)
        return ("" if c is not None and c.east_west else "no live gateway in the cluster"), math.inf
    expiries = [g.cert_not_after for g in view.gateways.values() if g.cluster == cluster]
    if not expiries:
        return "no live gateway in the cluster", math.inf
    valid = [t for t in expiries if t is None or t > now]
    if not valid:
        return "the east-west certificate of every gateway in the cluster has expired", math.inf
    if any(t is None for t in valid):
        return "", math.inf
    return "", max(t for t in valid if t is not None)


def _group(clusters: list[str], weights: list[float], accept: float, label: str) -> _Group:
    total = 0.0
    cumulative = []
    for w in weights:
        total += max(w, 1e-9)
        cumulative.append(total)
    return _Group(tuple(clusters), tuple(cumulative), min(1.0, max(0.0, accept)), label)


def _weights(cumulative: tuple[float, ...]) -> list[float]:
    out, prev = [], 0.0
    for c in cumulative:
        out.append(c - prev)
        prev = c
    return out


def _shares(groups: tuple[_Group, ...]) -> dict[str, float]:
    """The probability that each cluster gets a request's first try."""
    shares: dict[str, float] = {}
    left = 1.0
    for i, g in enumerate(groups):
        take = left if i == len(groups) - 1 else left * g.accept
        for c, w in zip(g.clusters, _weights(g.cumulative), strict=True):
            shares[c] = shares.get(c, 0.0) + take * w / g.cumulative[-1]
        left -= take
    return shares
