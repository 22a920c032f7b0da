"""Facts in etcd -> one immutable :class:`RoutingView`: decoding one item, and the
whole-prefix build.

:func:`build_view` (the incremental engine ``federation.viewstate`` fed every key at
once) turns every key under the prefix (a ``{key: KV}`` mapping at one
revision) into a view. It never fails as a whole: an item that does not decode, whose
name does not match its key, that names an unknown cluster, or whose key the layout
does not know is *rejected*: a :class:`Rejection` is recorded in ``view.rejected``, the
previous good value of that key (taken from ``previous``) keeps serving, and the
rest is applied (as APISIX and Envoy do with a bad item).

Endpoints of a (service, cluster) are the service's static endpoints from the manifest
(source ``static``) followed by every ``endpoints/{cluster}/{service}/{source}`` key,
by source. Health is :func:`federation.aggregate.aggregate` over the live gateways'
observations. ``config_revision`` is the highest mod revision among the config keys
(federation, clusters, services): what a gateway reports as applied.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from federation import codec, limits
from federation.acme_records import check_acme_challenge
from federation.etcd import KV, EtcdClient
from federation.frozen import builder
from federation.health_summary import summary_name
from federation.keys import HEALTH_SUMMARY, KeyLayout, Kind, ParsedKey
from federation.model import (
    Cluster,
    Endpoint,
    GatewayRecord,
    Observation,
    RoutingView,
    Service,
    Zone,
)


class ItemError(ValueError):
    """One etcd item that cannot be used; the message is one line."""


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    """One decoded etcd item: its parsed key and value (or the reason it is unusable)."""

    key: str
    mod_revision: int
    parsed: ParsedKey | None
    value: Any = None
    error: str | None = None


_ITEM: Callable[[str, int, ParsedKey, Any, None], Item] = builder(Item)  # Item(...), cheaper


def _decode_federation(data: bytes) -> tuple[str, tuple[Zone, ...]]:
    """The federation key: its name and the DNS zones the gateways serve."""
    try:
        raw = limits.parse_json(data)
    except ValueError as exc:
        raise ItemError(str(exc)) from None
    if (
        not isinstance(raw, dict)
        or not {"name"} <= set(raw) <= {"name", "zones"}
        or not isinstance(raw["name"], str)
    ):
        raise ItemError('expected {"name": "...", "zones": [...]}')
    name: str = raw["name"]
    zones: tuple[Zone, ...] = codec.from_plain(tuple[Zone, ...], raw.get("zones", []), "zones")
    return name, zones


def decode_item(layout: KeyLayout, kv: KV) -> Item:
    """Decode one etcd item on its own (no cross-item checks)."""
    return decode_parsed(kv, layout.parse(kv.key))


def decode_parsed(kv: KV, parsed: ParsedKey | None) -> Item:
    """:func:`decode_item` of an item whose key is parsed already (``layout.parse``)."""
    if parsed is None:
        return Item(kv.key, kv.mod_revision, None, error="key not in the layout")
    try:
        value = _decode(parsed, kv.value)
    except (codec.CodecError, ItemError) as exc:
        return Item(kv.key, kv.mod_revision, parsed, error=str(exc).splitlines()[0])
    return _ITEM(kv.key, kv.mod_revision, parsed, value, None)  # Item(..., value=value)


def _decode(parsed: ParsedKey, data: bytes) -> Any:
    kind, parts = parsed.kind, parsed.parts
    if kind is Kind.FEDERATION:
        return _decode_federation(data)
    if kind is Kind.CLUSTER:
        cluster = codec.decode(Cluster, data)
        if cluster.name != parts[0]:
            raise ItemError(f"cluster name {cluster.name!r} does not match its key")
        return cluster
    if kind is Kind.SERVICE:
        service = codec.decode(Service, data)
        if service.name != parts[0]:
            raise ItemError(f"service name {service.name!r} does not match its key")
        return service
    if kind is Kind.GATEWAY:
        record = codec.decode(GatewayRecord, data)
        if (record.cluster, record.id) != parts:
            raise ItemError(f"gateway {record.cluster}/{record.id} does not match its key")
        return record
    if kind is Kind.ENDPOINTS:
        svc_name, cluster_name, source = parts
        endpoints = codec.decode_list(Endpoint, data)
        out = []
        for ep in endpoints:
            if ep.service != svc_name or ep.cluster != cluster_name:
                raise ItemError(
                    f"endpoint {ep.address} of {ep.service}/{ep.cluster} does not match its key"
                )
            out.append(ep if ep.source == source else dataclasses.replace(ep, source=source))
        return tuple(out)
    if kind is Kind.HEALTH:  # only summaries reach here (keys.view_skips)
        of, part, name = parts
        if part != HEALTH_SUMMARY:
            raise ItemError(f"health/{of}/{part}/ feeds no view")
        observations = codec.decode_list(Observation, data)
        for obs in observations:
            if obs.observer_cluster != of or summary_name(obs) != name:
                raise ItemError(
                    f"observation of {obs.service}/{obs.cluster} by cluster "
                    f"{obs.observer_cluster!r} does not match its key"
                )
            if obs.observer != observations[0].observer:
                raise ItemError("a summary holds the observations of one leader")
        return observations
    if kind is Kind.ACME:  # lock/{name}: the holder; challenge/{token}, alpn/{name}:
        # a key authorization; dns/{name}: a TXT value (federation/acme_lock.py)
        if parts[0] not in ("lock", "challenge", "alpn", "dns"):
            raise ItemError(f"unknown acme key kind {parts[0]!r}")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise ItemError("acme value is not ASCII") from None
        if len(text) > 512 or not text.isprintable():
            raise ItemError("acme value is not a short printable string")
        if parts[0] in ("alpn", "dns"):
            try:
                check_acme_challenge(parts[0], parts[1], text)
            except ValueError as exc:
                raise ItemError(str(exc)) from None
        return text
    raise ItemError(f"unknown kind {kind}")  # pragma: no cover - the layout knows them all


def fingerprint(value: bytes) -> tuple[int, int]:
    """Stands for a value once decoded (its bytes need not be kept): length and hash."""
    return len(value), hash(value)


class DecodeCache:
    """Decoded items by key, reused while a key's mod revision and value do not change.

    It keeps a fingerprint of each value, not its bytes."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[int, tuple[int, int], Item]] = {}

    def get(self, layout: KeyLayout, kv: KV) -> Item:
        hit = self._items.get(kv.key)
        if hit is not None and hit[0] == kv.mod_revision and hit[1] == fingerprint(kv.value):
            return hit[2]
        return self.put(kv, decode_item(layout, kv))

    def get_parsed(self, kv: KV, parsed: ParsedKey | None) -> Item:
        """:meth:`get` of an item whose key is parsed already."""
        hit = self._items.get(kv.key)
        if hit is not None and hit[0] == kv.mod_revision and hit[1] == fingerprint(kv.value):
            return hit[2]
        return self.put(kv, decode_parsed(kv, parsed))

    def put(self, kv: KV, item: Item) -> Item:
        self._items[kv.key] = (kv.mod_revision, fingerprint(kv.value), item)
        return item

    def retain(self, keys: Mapping[str, object]) -> None:
        """Forget keys no longer present."""
        if len(self._items) > len(keys):
            for key in [k for k in self._items if k not in keys]:
                del self._items[key]


def build_view(
    kvs: Mapping[str, KV],
    *,
    layout: KeyLayout,
    revision: int,
    previous: RoutingView | None,
    now: float,
    cache: DecodeCache | None = None,
    config_floor: int = 0,
) -> RoutingView:
    """The routing view of ``kvs`` (every key under the prefix at ``revision``).

    ``cache`` reuses decoded items between builds; ``config_floor`` is a lower bound
    for ``config_revision`` (the revision of the last config key deletion, which leaves
    no mod revision behind).
    """
    from federation.viewstate import ViewState  # the incremental engine, fed everything

    state = ViewState(layout, previous=previous, cache=cache)
    return state.apply(kvs, revision=revision, now=now, config_floor=config_floor)


async def load_view(
    client: EtcdClient, layout: KeyLayout, *, now: Callable[[], float] = time.time
) -> RoutingView:
    """A one-shot view: every key under the prefix in one linearizable read."""
    revision, kvs = await client.get_prefix(layout.prefix)
    return build_view(
        {kv.key: kv for kv in kvs}, layout=layout, revision=revision, previous=None, now=now()
    )


def same_content(a: RoutingView, b: RoutingView) -> bool:
    """Whether two views route alike (everything but revision, source, stale, health.since)."""

    def strip(v: RoutingView) -> tuple[object, ...]:
        return (
            v.federation,
            dict(v.clusters),
            dict(v.services),
            dict(v.endpoints),
            dict(v.gateways),
            v.observations,
            {k: dataclasses.replace(h, since=0.0) for k, h in v.health.items()},
            v.rejected,
            v.zones,
            dict(v.acme_challenges),
            dict(v.acme_alpn),
            dict(v.acme_txt),
        )

    return strip(a) == strip(b)
