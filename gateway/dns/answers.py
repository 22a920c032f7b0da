"""Which clusters a DNS answer names: the request path's placement, read by a strategy.

The answers come from a :class:`~gateway.placement.Placement` of their own with no own
cluster (a resolver is no cluster's client), over the same routing view as the request
path: the same tiers, federation health (majority of live observers), liveness of each
cluster's gateways, capacity weights and failback ramps. So DNS never names a cluster
the request path would not send traffic to, and every gateway answers alike.

Strategies (``Service.dns.strategy``), over the plan's groups (a tier, or one cluster
each with the ordered policy) restricted to clusters with a public entry:

``healthiest``  every cluster of the preferred group, the highest weight first (a group
                ramping back after a recovery takes a query with its ramp's probability,
                as it takes a request);
``weighted``    one cluster of that group per answer, drawn by weight, so a population
                of resolvers splits like the requests do;
``ordered``     the first usable cluster in ``dns.order`` (else ``failover.order``, else
                the service's clusters): failover;
``nearest``     the first usable cluster of the longest ``dns.nearest`` network holding
                the client (EDNS Client Subnet, else the resolver's address); no match
                or none usable: ``healthiest``.

When no cluster is reachable at all the answer names every cluster with a public entry
(failing open: a stale answer is no worse than none).
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from federation.model import Cluster, RoutingView, Service
from gateway.dns.names import NameIndex, build_index
from gateway.placement import Placement

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Selection:
    """What DNS answers for one service's host, and why."""

    service: str
    strategy: str
    clusters: tuple[str, ...]  # named by the answer, preferred first
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]
    cname: str  # a hostname public entry: the answer is a CNAME to it ("" when none)
    ttl: int
    reason: str
    scope: int = 0  # EDNS Client Subnet scope prefix length (the nearest rule's), else 0
    # the same object answers every client until the plan changes (not weighted, not
    # nearest, no ramp): the listener may reuse the packed response while it is current
    fixed: bool = False


def _entries(
    clusters: list[str], view: RoutingView
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str]:
    """(clusters named, IPv4, IPv6, cname) of ``clusters`` in order."""
    named: list[str] = []
    v4: list[str] = []
    v6: list[str] = []
    for name in clusters:
        c: Cluster | None = view.clusters.get(name)
        entry = c.public_entry if c is not None else None
        if entry is None:
            continue
        if entry.hostname:
            if not named:  # a CNAME stands alone: the preferred cluster's name
                return (name,), (), (), entry.hostname
            continue
        named.append(name)
        for a in entry.addresses:
            bucket = v6 if ":" in a else v4
            if a not in bucket:
                bucket.append(a)
    return tuple(named), tuple(v4), tuple(v6), ""


class DnsAnswers:
    """The DNS side of placement: names, and the clusters each answer names."""

    def __init__(
        self,
        *,
        own_cluster: str = "",
        own_address: str | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.placement = Placement("", clock=clock, rng=rng)
        self._rng = rng if rng is not None else random.Random()
        self._own = (own_cluster, own_address) if own_cluster and own_address else None
        self._view: RoutingView | None = None
        self._index_key: tuple[object, ...] = ()
        self._index: NameIndex = build_index(RoutingView())
        self._fixed: dict[str, tuple[object, Selection]] = {}  # service -> (groups, selection)
        self._seen: dict[str, object] = {}  # service -> the groups last confirmed

    def set_own(self, cluster: str, address: str) -> None:
        """This gateway's cluster and advertised DNS address: an NS of its own zones even
        before (or without) its gateway record in the view."""
        self._own = (cluster, address) if cluster and address else None
        self._view, self._index_key = None, ()

    # ------------------------------------------------------------------ names
    def index(self, view: RoutingView) -> NameIndex:
        """The name index of ``view`` (rebuilt only when the configuration or the set of
        live DNS listeners changed, not per health change)."""
        if view is self._view:
            return self._index
        self._view = view
        key = (
            view.config_revision,
            view.source,
            view.zones,
            id(view.services) if view.source == "manifest" else 0,
            frozenset((g.cluster, g.dns) for g in view.gateways.values() if g.dns),
        )
        if key != self._index_key:
            self._index_key = key
            self._index = build_index(view, own=self._own)
            self._fixed.clear()
        return self._index

    # ------------------------------------------------------------------ selection
    def _groups(self, view: RoutingView, service: Service) -> tuple[Any, ...]:
        groups = self.placement.groups(view, service)
        if self._seen.get(service.name) is groups:
            return groups
        # a recovered cluster ramps back once a try there succeeded; for DNS the
        # federation's verdict is that success (nobody tries through this placement), so
        # every usable cluster of a new plan is confirmed at once (a no-op for the others)
        for g in groups:
            for c in g.clusters:
                self.placement.local_success(service.name, c)
        groups = self.placement.groups(view, service)
        self._seen[service.name] = groups
        return groups

    def select(
        self, view: RoutingView, service: Service, client: IPAddress | None = None
    ) -> Selection:
        service = self.index(view).services.get(service.name, service)  # as DNS plans it
        strategy = service.dns.strategy
        groups = self._groups(view, service)
        if strategy == "nearest" and client is not None:
            found = self._nearest(view, service, groups, client)
            if found is not None:
                return found
        cached = self._fixed.get(service.name)
        if cached is not None and cached[0] is groups:
            return cached[1]
        eligible = []
        for g in groups:
            members = [
                (c, w)
                for c, w in g.members()
                if (cl := view.clusters.get(c)) is not None and cl.public_entry is not None
            ]
            if members:
                eligible.append((g, members))
        ttl = int(service.dns.ttl)
        if not eligible:
            everyone = list(service.clusters)
            named, v4, v6, cname = _entries(everyone, view)
            why = "no cluster is reachable: every public entry (failing open)"
            if not named:
                why = "no cluster of the service has a public entry"
            sel = Selection(
                service.name,
                strategy,
                named,
                v4,
                v6,
                cname,
                ttl,
                why,
                fixed=strategy != "nearest",
            )
            self._fixed[service.name] = (groups, sel)
            return sel
        # the same answer for every query: the first group always takes it, no draw
        fixed = (eligible[0][0].accept >= 1.0 or len(eligible) == 1) and strategy != "weighted"
        chosen, members = eligible[-1]
        for g, m in eligible:
            if g is chosen or g.accept >= 1.0 or self._rng.random() < g.accept:
                chosen, members = g, m
                break
        if strategy == "weighted":
            pick = members[0][0]
            if len(members) > 1:
                x = self._rng.random() * sum(w for _, w in members)
                for c, w in members:
                    pick = c
                    x -= w
                    if x < 0:
                        break
            names = [pick]
            why = f"{chosen.label}: one cluster drawn by capacity weight"
        elif strategy == "ordered":
            names = [members[0][0]]
            why = f"{chosen.label}: the first usable cluster in order"
        else:
            names = [c for c, _ in sorted(members, key=lambda m: -m[1])]
            why = f"{chosen.label}: every cluster of the preferred group, heaviest first"
        if chosen.label == "panic":
            why = "panic: no cluster is usable, spreading over every reachable one"
        named, v4, v6, cname = _entries(names, view)
        sel = Selection(
            service.name,
            strategy,
            named,
            v4,
            v6,
            cname,
            ttl,
            why,
            fixed=fixed and strategy != "nearest",
        )
        if fixed:
            self._fixed[service.name] = (groups, sel)
        return sel

    def _nearest(
        self, view: RoutingView, service: Service, groups: tuple[Any, ...], client: IPAddress
    ) -> Selection | None:
        best = None
        for rule in service.dns.nearest:
            net = rule.network
            if (
                client.version == net.version
                and client in net
                and (best is None or net.prefixlen > best.network.prefixlen)
            ):
                best = rule
        if best is None:
            return None
        usable = {c for g in groups if g.label != "panic" for c in g.clusters}
        for c in best.clusters:
            if c in usable:
                named, v4, v6, cname = _entries([c], view)
                if named:
                    why = f"nearest: {best.network} prefers {', '.join(best.clusters)}"
                    if c != best.clusters[0]:
                        why += f"; {c} is the first usable"
                    return Selection(
                        service.name,
                        "nearest",
                        named,
                        v4,
                        v6,
                        cname,
                        int(service.dns.ttl),
                        why,
                        scope=best.network.prefixlen,
                    )
        return None
