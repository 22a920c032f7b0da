"""The health summaries a view state holds, indexed by what they feed.

``federation.viewstate`` keeps, for every summary key, its observations; these
functions keep the three indexes over them in step with one key's change, and read a
pair's opinions back:

- by (service, cluster): key -> that key's observations of the pair (what
  :func:`federation.aggregate.judge` reads);
- by observer: the keys it signs (a gateway that comes or goes re-assesses them);
- the markers: key -> (observer, its cluster) of the ``"*"/"*"`` marker it holds.

A change costs what that key held and holds, not what the state holds.
"""

from __future__ import annotations

from collections.abc import Mapping

from federation.model import ANY, GatewayRecord, Observation

Pair = tuple[str, str]
ByPair = dict[Pair, dict[str, list[Observation]]]


def reindex(
    key: str,
    old: tuple[Observation, ...],
    new: tuple[Observation, ...],
    markers: dict[str, tuple[str, str]],
    signed_by: dict[str, set[str]],
    by_pair: ByPair,
    pairs: set[Pair],
) -> None:
    """``key`` held ``old`` and now holds ``new``: update the indexes, and add every pair
    either one observes to ``pairs``."""
    marker = None
    for o in new:
        if o.service == ANY and o.cluster == ANY:
            marker = o
            break
    if marker is None:
        markers.pop(key, None)
    else:
        markers[key] = (marker.observer, marker.observer_cluster)
    for o in old:
        signed = signed_by.get(o.observer)
        if signed is not None:
            signed.discard(key)
            if not signed:
                del signed_by[o.observer]
    for o in old:
        pair = (o.service, o.cluster)
        pairs.add(pair)
        by_observer = by_pair.get(pair)
        if by_observer is not None:
            by_observer.pop(key, None)
            if not by_observer:
                del by_pair[pair]
    for o in new:
        signed = signed_by.get(o.observer)
        if signed is None:
            signed_by[o.observer] = {key}
        else:
            signed.add(key)
        pair = (o.service, o.cluster)
        pairs.add(pair)
        by_observer = by_pair.get(pair)
        if by_observer is None:
            by_pair[pair] = {key: [o]}
        else:
            by_observer.setdefault(key, []).append(o)


def live_opinions(
    by_observer: dict[str, list[Observation]] | None, live: Mapping[str, GatewayRecord]
) -> list[Observation]:
    """The observations of live observers, by key (one key: the common case, no sort)."""
    if not by_observer:
        return []
    if len(by_observer) == 1:
        for found in by_observer.values():
            if len(found) == 1:  # one key of one observation: a summary, the common case
                first = found[0]
                return [first] if first.observer in live else []
            return [o for o in found if o.observer in live]
    return [o for key in sorted(by_observer) for o in by_observer[key] if o.observer in live]
