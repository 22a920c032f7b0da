"""The routing view as indexed state: a change costs what it touches, not what exists.

:class:`ViewState` holds every key under the prefix, decoded once, and the structures
each kind feeds, indexed per service and per (service, cluster):

==============  =======================================  ===============================
kind            feeds                                    recomputed on a change of it
==============  =======================================  ===============================
federation      the name                                 the name
clusters        clusters; validity of every service      clusters, all services (rare)
services        services; static endpoints; health pairs that service's pairs
gateways        gateways; who is a live observer         gateways; pairs that gateway
                                                         observes (only when it comes
                                                         or goes, not on a record update)
endpoints       endpoints of one (service, cluster)      that pair and its health
health          observations of one observer             the pairs it observes
==============  =======================================  ===============================

:meth:`ViewState.apply` takes one delta (``{key: KV or None}``, ``None`` a deletion)
and returns a new immutable :class:`RoutingView` whose unchanged parts are the *same*
objects as the previous view's: a health or endpoint change keeps ``view.services``
(so the route table is not rebuilt: its listener compares identities), a config change
re-assesses only the pairs of the services it touched.

Rejection is exactly :func:`federation.view.build_view`'s (that function is this
class applied to a whole prefix): an item that does not decode, whose name does not
match its key, a service that names an unknown cluster, or a key the layout does not
know is listed in ``view.rejected`` and the previous good value of that key keeps
serving. The barrier keys (``applying``, ``generation``) are the watcher's business
and feed no part of the view.

The summaries' indexes (by pair, by observer, markers) are ``federation.obsindex``'s.
Health and endpoint values are held decoded only (``federation.viewkeys``: their
bytes are dropped once applied, a fingerprint recognises a replay).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from federation.acme_view import AcmeChallenges
from federation.aggregate import judge, pair_opinions
from federation.cowmap import CowMap
from federation.etcd import KV
from federation.health_summary import summary_name
from federation.keys import KeyLayout, Kind, ParsedKey
from federation.logging import get_logger
from federation.manifest_view import static_endpoints
from federation.model import (
    ANY,
    Cluster,
    Endpoint,
    GatewayRecord,
    Observation,
    Rejection,
    RoutingView,
    Service,
    ServiceHealth,
    Zone,
)
from federation.observations import ObservationStore
from federation.obsindex import live_opinions, reindex
from federation.view import DecodeCache, Item, decode_parsed
from federation.viewkeys import KeyTable

log = get_logger(__name__)

Pair = tuple[str, str]
Delta = Mapping[str, KV | None]

_EMPTY = RoutingView()
_RANK = {kind: i for i, kind in enumerate(Kind)}
_VIEW_KINDS = frozenset(
    {
        Kind.FEDERATION,
        Kind.CLUSTER,
        Kind.SERVICE,
        Kind.GATEWAY,
        Kind.ENDPOINTS,
        Kind.HEALTH,
        Kind.ACME,
    }
)


@dataclasses.dataclass
class ApplyStats:
    """What the updates cost, by part (the watcher exposes them in its stats)."""

    config_rebuilds: int = 0  # updates that replaced clusters/services (route table rebuilt)
    endpoint_pairs: int = 0  # (service, cluster) endpoint lists recomputed
    health_pairs: int = 0  # (service, cluster) health assessments recomputed
    decoded: int = 0  # items decoded


def _sort_key(layout: KeyLayout, r: Rejection) -> tuple[int, str]:
    parsed = layout.parse(r.key)
    return (-1 if parsed is None else _RANK[parsed.kind], r.key)


def _unknown_clusters(service: Service, clusters: Mapping[str, Cluster]) -> list[str]:
    named = [*service.clusters, *service.failover.order, *service.endpoints]
    return sorted({c for c in named if c not in clusters})


def _pairs(service: Service | None, clusters: Mapping[str, Cluster]) -> set[Pair]:
    if service is None:
        return set()
    return {(service.name, c) for c in service.clusters if c in clusters}


class ViewState:
    """Every fact under the prefix, indexed by what it feeds; one delta -> one view."""

    def __init__(
        self,
        layout: KeyLayout,
        *,
        previous: RoutingView | None = None,
        cache: DecodeCache | None = None,
    ) -> None:
        self.layout = layout
        self.stats = ApplyStats()
        self._cache = cache
        prev = previous if previous is not None else RoutingView()
        # the previous view: fallback values for items rejected before this state saw them
        self._fallback = prev
        self._keys = KeyTable(layout)  # every key (runtime values slimmed once decoded)
        self.kvs: dict[str, KV] = self._keys.kvs
        self._rejected: dict[str, Rejection] = {}
        # config
        self.federation = ""
        self.zones: tuple[Zone, ...] = ()  # the DNS zones, carried by the federation key
        self._service_items: dict[str, Item] = {}
        self.clusters: dict[str, Cluster] = {}
        self.services: dict[str, Service] = {}
        # runtime
        self._gateway_values: dict[str, GatewayRecord] = {}
        self.gateways: dict[str, GatewayRecord] = {}
        self._ep_values: dict[str, tuple[int, tuple[Endpoint, ...]]] = {}
        self._ep_keys: dict[Pair, set[str]] = {}
        self.endpoints: dict[Pair, tuple[Endpoint, ...]] = {}
        self._obs_values: dict[str, tuple[Observation, ...]] = {}
        self._obs_out = ObservationStore()  # what views hold of _obs_values (shared)
        self._obs_by_pair: dict[Pair, dict[str, list[Observation]]] = {}
        # health key -> (observer, cluster) of the "*"/"*" marker it holds
        self._markers: dict[str, tuple[str, str]] = {}
        self._obs_keys: dict[str, set[str]] = {}  # observer id -> the health keys it signs
        self.health: dict[Pair, ServiceHealth] = {}
        self._health_out: CowMap[Pair, ServiceHealth] = CowMap()  # what views hold of it
        self.config_revision = 0
        self.acme = AcmeChallenges()  # answered by every gateway (gateway/acme_*.py)
        self._parsed: dict[str, ParsedKey | None] = {}  # the keys being applied, parsed
        self._view = _EMPTY

    # ------------------------------------------------------------------ reading
    @property
    def view(self) -> RoutingView:
        return self._view

    def kinds(self, kind: Kind) -> Iterable[KV]:
        folder = self.layout.folder(kind)
        return (kv for key, kv in self.kvs.items() if key.startswith(folder))

    def heavy(self, delta: Delta) -> bool:
        """Whether applying ``delta`` may re-assess every pair (a gateway comes or goes)."""
        folder = self.layout.folder(Kind.GATEWAY)
        return any(
            key.startswith(folder) and ((kv is None) == (key in self.kvs))
            for key, kv in delta.items()
        )

    # ------------------------------------------------------------------ applying
    def apply(
        self, delta: Delta, *, revision: int, now: float, config_floor: int = 0
    ) -> RoutingView:
        """Apply one delta (``None`` = deleted) and return the new view at ``revision``."""
        changes = self._keys.take(delta)
        touched, unknown = changes.by_kind, changes.unknown
        self._parsed = changes.parsed  # each changed key, parsed once (for _decode)
        self.config_revision = max(self.config_revision, self._keys.config_revision, config_floor)
        before = self._view
        for key in unknown:
            self._decode(key)  # keeps the rejection current (or drops it on deletion)
        cluster_set_changed = False
        config_changed = False
        dirty_services: set[str] = set()
        dirty_pairs: set[Pair] = set()
        dirty_health: set[Pair] = set()
        if Kind.FEDERATION in touched:
            config_changed |= self._apply_federation(touched[Kind.FEDERATION])
        if Kind.CLUSTER in touched:
            names_before = set(self.clusters)
            config_changed |= self._apply_clusters(touched[Kind.CLUSTER])
            cluster_set_changed = set(self.clusters) != names_before
        if Kind.SERVICE in touched or cluster_set_changed:
            changed = self._apply_services(
                touched.get(Kind.SERVICE, []), revalidate_all=cluster_set_changed
            )
            config_changed |= bool(changed) or cluster_set_changed
            dirty_services.update(changed)
        for name in dirty_services:
            dirty_pairs |= self._static_pairs(name, before.services.get(name))
            dirty_health |= _pairs(before.services.get(name), before.clusters)
            dirty_health |= _pairs(self.services.get(name), self.clusters)
        if cluster_set_changed:
            dirty_health |= {p for s in self.services.values() for p in _pairs(s, self.clusters)}
            dirty_health |= set(self.health)
        live_changed: set[str] = set()
        if Kind.GATEWAY in touched:
            live_changed = self._apply_gateways(touched[Kind.GATEWAY])
        if Kind.ENDPOINTS in touched:
            dirty_pairs |= self._apply_endpoint_keys(touched[Kind.ENDPOINTS])
        acme_changed = Kind.ACME in touched and self._apply_acme(touched[Kind.ACME])
        markers_before = dict(self._markers)
        if Kind.HEALTH in touched:
            dirty_health |= self._apply_observations(touched[Kind.HEALTH])
        everything = self._markers != markers_before
        voters = {observer for observer, _ in self._markers.values()}
        for gateway_id in live_changed:  # an observer came or went: the pairs it observes
            everything |= gateway_id in voters  # ... every pair, when it votes silently
            for key in self._obs_keys.get(gateway_id, ()):
                dirty_health.update((o.service, o.cluster) for o in self._obs_values[key])
        if everything:
            dirty_health |= {p for s in self.services.values() for p in _pairs(s, self.clusters)}
        dirty_health = self._expand(dirty_health)
        endpoints_changed = self._merge_endpoints(dirty_pairs)
        dirty_health |= endpoints_changed
        health_changed = self._assess(dirty_health, now)
        if config_changed:
            self.stats.config_rebuilds += 1
        self._keys.slim(touched.get(Kind.HEALTH, ()), touched.get(Kind.ENDPOINTS, ()))
        self._fallback = _EMPTY  # from now on the fallback of a key is its current value
        self._parsed = {}
        view = self._publish(
            revision=revision,
            config=config_changed,
            gateways=Kind.GATEWAY in touched,
            endpoints=bool(endpoints_changed),
            observations=Kind.HEALTH in touched,
            health=health_changed,
            acme=acme_changed,
            changed=(dirty_health, touched.get(Kind.HEALTH, ())),
        )
        return view

    def _apply_acme(self, keys: list[str]) -> bool:
        changed = False
        for key in keys:
            parsed = self._parsed[key]
            assert parsed is not None
            form, ident = parsed.parts
            item = self._decode(key)  # records or clears a rejection, whatever the form
            value = item.value if item is not None and item.error is None else None
            changed |= self.acme.update(form, ident, value)
        self.acme.settle()
        return changed

    # -- config
    def _decode(self, key: str) -> Item | None:
        """The current item of ``key`` (None once deleted); records or clears its rejection."""
        kv = self.kvs.get(key)
        if kv is None:
            self._rejected.pop(key, None)
            return None
        cache, parsed = self._cache, self._parsed[key]
        item = cache.get_parsed(kv, parsed) if cache is not None else decode_parsed(kv, parsed)
        self.stats.decoded += 1
        if item.error is not None:
            self._reject(item, item.error)
        else:
            self._rejected.pop(key, None)
        return item

    def _reject(self, item: Item, error: str) -> None:
        self._rejected[item.key] = Rejection(key=item.key, error=error, revision=item.mod_revision)

    def _apply_federation(self, keys: list[str]) -> bool:
        before = (self.federation, self.zones)
        for key in keys:
            item = self._decode(key)
            if item is None:
                self.federation, self.zones = "", ()
            elif item.error is None:
                self.federation, self.zones = item.value
            elif not self.federation:
                self.federation, self.zones = self._fallback.federation, self._fallback.zones
        return (self.federation, self.zones) != before

    def _apply_clusters(self, keys: list[str]) -> bool:
        changed = False
        for key in keys:
            parsed = self._parsed[key]
            assert parsed is not None
            name = parsed.parts[0]
            item = self._decode(key)
            if item is None:
                changed |= self.clusters.pop(name, None) is not None
            elif item.error is None:
                changed |= self.clusters.get(name) != item.value
                self.clusters[name] = item.value
            elif name not in self.clusters and name in self._fallback.clusters:
                self.clusters[name] = self._fallback.clusters[name]
                changed = True
        return changed

    def _apply_services(self, keys: list[str], *, revalidate_all: bool) -> set[str]:
        """Decode these service keys and validate them (every service when the set of
        clusters changed); the names whose served value changed."""
        names: set[str] = set()
        for key in keys:
            parsed = self._parsed[key]
            assert parsed is not None
            name = parsed.parts[0]
            names.add(name)
            item = self._decode(key)
            if item is None:
                self._service_items.pop(name, None)
            else:
                self._service_items[name] = item
        if revalidate_all:
            names.update(self._service_items)
        changed: set[str] = set()
        for name in names:
            item = self._service_items.get(name)
            if item is None:
                if self.services.pop(name, None) is not None:
                    changed.add(name)
                continue
            error = item.error
            if error is None:
                unknown = _unknown_clusters(item.value, self.clusters)
                if unknown:
                    error = f"service {name!r} names unknown cluster {unknown[0]!r}"
            if error is not None:
                self._reject(item, error)
                if name not in self.services and name in self._fallback.services:
                    self.services[name] = self._fallback.services[name]
                    changed.add(name)
            else:
                self._rejected.pop(item.key, None)
                if self.services.get(name) != item.value:
                    self.services[name] = item.value
                    changed.add(name)
        return changed

    def _static_pairs(self, name: str, before: Service | None) -> set[Pair]:
        pairs = set(static_endpoints(before)) if before is not None else set()
        now = self.services.get(name)
        if now is not None:
            pairs |= set(static_endpoints(now))
        return pairs

    # -- runtime
    def _apply_gateways(self, keys: list[str]) -> set[str]:
        """Apply gateway keys; the gateway ids that came or went (liveness changes)."""
        live_before = set(self.gateways)
        for key in keys:
            parsed = self._parsed[key]
            assert parsed is not None
            cluster, gateway_id = parsed.parts
            item = self._decode(key)
            if item is None:
                self._gateway_values.pop(key, None)
            elif item.error is None:
                self._gateway_values[key] = item.value
            elif key not in self._gateway_values:
                old = self._fallback.gateways.get(gateway_id)
                if old is not None and old.cluster == cluster:
                    self._gateway_values[key] = old
        gateways: dict[str, GatewayRecord] = {}
        for key in sorted(self._gateway_values):
            record = self._gateway_values[key]
            gateways[record.id] = record
        self.gateways = gateways
        return live_before ^ set(gateways)

    def _apply_endpoint_keys(self, keys: list[str]) -> set[Pair]:
        pairs: set[Pair] = set()
        for key in keys:
            parsed = self._parsed[key]
            assert parsed is not None
            pair = (parsed.parts[0], parsed.parts[1])
            pairs.add(pair)
            item = self._decode(key)
            if item is None:
                self._ep_values.pop(key, None)
                held = self._ep_keys.get(pair)
                if held is not None:
                    held.discard(key)
                    if not held:
                        del self._ep_keys[pair]
                continue
            self._ep_keys.setdefault(pair, set()).add(key)
            if item.error is None:
                self._ep_values[key] = (item.mod_revision, item.value)
            elif key not in self._ep_values:
                # keep serving what the previous view had for this pair (below any fresh report)
                current = self.endpoints.get(pair) or self._fallback.endpoints.get(pair, ())
                self._ep_values[key] = (0, tuple(e for e in current if e.source != "static"))
        return pairs

    def _merge_endpoints(self, pairs: set[Pair]) -> set[Pair]:
        """Recompute the endpoints of these pairs; the pairs whose list changed."""
        changed: set[Pair] = set()
        for pair in pairs:
            self.stats.endpoint_pairs += 1
            by_address: dict[str, tuple[int, Endpoint]] = {}
            service = self.services.get(pair[0])
            if service is not None:
                for ep in static_endpoints(service).get(pair, ()):
                    by_address[ep.address] = (-1, ep)
            for key in sorted(self._ep_keys.get(pair, ())):
                reported_at, found = self._ep_values.get(key, (0, ()))
                for ep in found:
                    seen = by_address.get(ep.address)
                    if seen is None or seen[0] < reported_at:
                        by_address[ep.address] = (reported_at, ep)
            merged = tuple(ep for _, ep in by_address.values())
            if merged:
                if self.endpoints.get(pair) != merged:
                    self.endpoints[pair] = merged
                    changed.add(pair)
            elif self.endpoints.pop(pair, None) is not None:
                changed.add(pair)
        return changed

    def _apply_observations(self, keys: list[str]) -> set[Pair]:
        pairs: set[Pair] = set()
        obs_values, obs_keys, by_pair = self._obs_values, self._obs_keys, self._obs_by_pair
        for key in keys:
            old = obs_values.get(key, ())
            item = self._decode(key)
            if item is None:
                new: tuple[Observation, ...] = ()
                obs_values.pop(key, None)
            elif item.error is None:
                new = tuple(item.value)
                obs_values[key] = new
            else:
                if key not in obs_values:
                    obs_values[key] = tuple(
                        o
                        for o in self._fallback.observations
                        if self.layout.health_summary(o.observer_cluster, summary_name(o)) == key
                    )
                new = obs_values[key]
            if new is old:
                continue
            reindex(key, old, new, self._markers, obs_keys, by_pair, pairs)
        return pairs

    def _expand(self, pairs: set[Pair]) -> set[Pair]:
        """Cluster-wide opinions ("*", cluster) stand for every pair of that cluster."""
        wide = {c for svc, c in pairs if svc == ANY and c != ANY}
        out = {p for p in pairs if p[0] != ANY}
        if wide:
            for service in self.services.values():
                out.update((service.name, c) for c in service.clusters if c in wide)
        return out

    def _assess(self, pairs: set[Pair], now: float) -> bool:
        """Re-assess these pairs; whether any pair's health changed. What is the same for
        every pair (live markers, cluster-wide opinions) is computed once per call, and
        a pair's own opinions are read without copies beyond the one list it needs: a
        cold build assesses every pair (40,000 at 1,000 clusters)."""
        changed = False
        live = self.gateways
        markers = {o: c for o, c in self._markers.values() if o in live}
        per_cluster: dict[str, int] = {}
        for c in markers.values():
            per_cluster[c] = per_cluster.get(c, 0) + 1
        wide: dict[str, list[Observation]] = {}  # cluster -> its live cluster-wide opinions
        fallback = self._fallback.health
        health, services, clusters = self.health, self.services, self.clusters
        endpoints, by_pair = self.endpoints, self._obs_by_pair
        assessed = 0
        for pair in pairs:
            name, cluster = pair
            service = services.get(name)
            if service is None or cluster not in service.clusters or cluster not in clusters:
                changed |= health.pop(pair, None) is not None
                continue
            assessed += 1
            cluster_wide = wide.get(cluster)
            if cluster_wide is None:
                cluster_wide = wide[cluster] = live_opinions(by_pair.get((ANY, cluster)), live)
            explicit = live_opinions(by_pair.get(pair), live)
            if cluster_wide or markers:
                opinions, silent = pair_opinions(
                    name,
                    cluster,
                    explicit=explicit,
                    cluster_wide=cluster_wide,
                    markers=markers,
                    outside=len(markers) - per_cluster.get(cluster, 0),
                )
            else:  # what pair_opinions returns with no marker and no cluster-wide opinion
                opinions, silent = explicit, 0
            old = health.get(pair)
            assessed_health = judge(
                name,
                cluster,
                endpoints.get(pair, ()),
                opinions,
                silent,
                old or fallback.get(pair),
                now,
            )
            if old is not assessed_health and old != assessed_health:
                health[pair] = assessed_health
                changed = True
        self.stats.health_pairs += assessed
        return changed

    # -- the view
    def _publish(
        self,
        *,
        revision: int,
        config: bool,
        gateways: bool,
        endpoints: bool,
        observations: bool,
        health: bool,
        acme: bool = False,
        changed: tuple[Iterable[Pair], Iterable[str]] = ((), ()),
    ) -> RoutingView:
        before = self._view
        pairs, health_keys = changed  # whose health / observations may have changed
        rejected = tuple(sorted(self._rejected.values(), key=lambda r: _sort_key(self.layout, r)))
        for r in rejected:
            if r not in before.rejected:
                log.warning("view.rejected", revision=r.revision, key=r.key, error=r.error)
        self._view = RoutingView(
            revision=revision,
            config_revision=self.config_revision,
            federation=self.federation,
            clusters=MappingProxyType(dict(self.clusters)) if config else before.clusters,
            services=MappingProxyType(dict(self.services)) if config else before.services,
            endpoints=MappingProxyType(dict(self.endpoints)) if endpoints else before.endpoints,
            gateways=MappingProxyType(dict(self.gateways)) if gateways else before.gateways,
            observations=(
                self._obs_out.table(self._obs_values, health_keys)
                if observations
                else before.observations
            ),
            health=self._health_out.publish(self.health, pairs) if health else before.health,
            rejected=rejected if rejected != before.rejected else before.rejected,
            source="etcd",
            stale=False,
            zones=self.zones if self.zones != before.zones else before.zones,
            acme_challenges=MappingProxyType(dict(self.acme.http))
            if acme
            else before.acme_challenges,
            acme_alpn=MappingProxyType(dict(self.acme.alpn)) if acme else before.acme_alpn,
            acme_txt=MappingProxyType(dict(self.acme.txt)) if acme else before.acme_txt,
        )
        return self._view


def full_delta(kvs: Mapping[str, KV]) -> dict[str, KV | None]:
    """A delta that loads ``kvs`` into an empty state."""
    return dict(kvs)


def replace_delta(state: ViewState, kvs: Mapping[str, KV]) -> dict[str, KV | None]:
    """The delta that turns ``state`` into exactly ``kvs`` (a full reload)."""
    delta: dict[str, KV | None] = {key: None for key in state.kvs if key not in kvs}
    delta.update(kvs)
    return delta


def is_view_kind(kind: Kind) -> bool:
    return kind in _VIEW_KINDS
