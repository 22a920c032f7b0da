"""What changed in the snapshot's part of the view, in proportion to what changed.

The snapshot holds the routing facts (clusters, services, endpoints, gateways,
rejections, zones), not the runtime health. The writer process keeps a copy of them as
blocks of lines, one block per item (an endpoint block: the lines of one (service,
cluster)); the gateway tells it which blocks changed since the view it holds.

The incremental view keeps the *same* objects for what did not change
(:mod:`federation.viewstate`), so "changed" is an identity test, and where to look
follows the keys of the update:

- clusters and services: only when the view's mapping is a new object (a config change,
  rare): every entry of it compared by identity (O(config));
- gateways: the ids whose keys were written or deleted;
- endpoints: the (service, cluster) pairs whose keys were written or deleted, and the
  pairs of static endpoints of every service that changed (the only pairs the view
  recomputes);
- rejections and zones: one block each, when the tuple is another one.

A health write (most of the churn) touches none of these: it costs nothing here.
Without the keys (a full reload: every object is new) or without a previous copy
(a new writer process) every part is compared whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from federation.keys import KeyLayout, Kind
from federation.manifest_view import static_endpoints
from federation.model import RoutingView, Service

Pair = tuple[str, str]
BlockKey = str | Pair
# one changed block: (tag, key, the view's value; None when the item is gone)
Change = tuple[str, BlockKey, object | None]


@dataclasses.dataclass
class Touched:
    """The runtime items the updates since the last hand-over wrote or deleted."""

    gateways: set[str] = dataclasses.field(default_factory=set)
    pairs: set[Pair] = dataclasses.field(default_factory=set)

    def add(self, layout: KeyLayout, keys: Iterable[str]) -> None:
        """Note the gateways and endpoint pairs of these keys (others are skipped on a
        prefix test: a health key costs one ``startswith``)."""
        gateways, endpoints = layout.folder(Kind.GATEWAY), layout.folder(Kind.ENDPOINTS)
        for key in keys:
            if not key.startswith((gateways, endpoints)):
                continue
            parsed = layout.parse(key)
            if parsed is None:
                continue
            if parsed.kind is Kind.GATEWAY:
                self.gateways.add(parsed.parts[1])
            elif parsed.kind is Kind.ENDPOINTS:
                self.pairs.add((parsed.parts[0], parsed.parts[1]))


def changes(
    sent: RoutingView | None, view: RoutingView, touched: Touched | None
) -> Iterator[Change]:
    """The blocks of ``view`` that differ from ``sent`` (the copy the writer holds).

    ``touched`` names the runtime items written since ``sent``; ``None`` compares every
    part whole (``sent is None``: everything is new)."""
    before = sent if sent is not None else RoutingView()
    whole = sent is None or touched is None
    yield from _mapping("cluster", before.clusters, view.clusters)
    services = list(_mapping("service", before.services, view.services))
    yield from services
    if whole:
        yield from _mapping("endpoint", before.endpoints, view.endpoints)
        yield from _mapping("gateway", before.gateways, view.gateways)
    else:
        assert touched is not None
        pairs = set(touched.pairs)
        for _, name, _ in services:
            assert isinstance(name, str)
            pairs.update(_static_pairs(before.services.get(name)))
            pairs.update(_static_pairs(view.services.get(name)))
        yield from _entries("endpoint", before.endpoints, view.endpoints, pairs)
        yield from _entries("gateway", before.gateways, view.gateways, touched.gateways)
    if view.rejected is not before.rejected and view.rejected != before.rejected:
        yield ("rejected", "", view.rejected or None)
    if view.zones is not before.zones and view.zones != before.zones:
        yield ("zone", "", view.zones or None)


def _static_pairs(service: Service | None) -> Iterable[Pair]:
    return static_endpoints(service) if service is not None and service.endpoints else ()


def _mapping(tag: str, old: Mapping[Any, object], new: Mapping[Any, object]) -> Iterator[Change]:
    if old is new:
        return
    for key, value in new.items():
        if old.get(key) is not value:
            yield (tag, key, value)
    for key in old:
        if key not in new:
            yield (tag, key, None)


def _entries(
    tag: str, old: Mapping[Any, object], new: Mapping[Any, object], keys: Iterable[BlockKey]
) -> Iterator[Change]:
    if old is new:
        return
    for key in keys:
        value = new.get(key)
        if old.get(key) is not value:
            yield (tag, key, value)
