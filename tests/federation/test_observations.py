"""``view.observations`` and ``view.health``: shared between views, not rebuilt per write."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from federation import codec
from federation.cowmap import BUCKETS, CowMap, FrozenMap
from federation.model import GatewayRecord, HealthState, Observation
from federation.observations import ObservationStore, ObservationTable
from federation.view import same_content
from federation.viewstate import ViewState
from tests.federation.test_view import cluster, service
from tests.federation.test_viewstate import CLUSTERS, LAYOUT, Store

Keyed = dict[str, list[Observation]]


def _obs(cluster: str, name: str, state: HealthState = HealthState.HEALTHY) -> Observation:
    return Observation(f"gw-{cluster}", cluster, name, cluster, state, 1, 1, at=1.0)


def _remote(observer_cluster: str, cluster: str) -> Observation:
    """A cluster's opinion of another's service (its ``*`` summary holds those)."""
    o = observer_cluster
    return Observation(f"gw-{o}", o, "svc-0000", cluster, HealthState.UNHEALTHY, 0, 1, at=1.0)


def _expected(by_key: Keyed) -> tuple[Observation, ...]:
    """What the view held before: every key's observations, in key order."""
    return tuple(o for key in sorted(by_key) for o in by_key[key])


def _put(store: Store, by_key: Keyed, cluster: str, name: str, value: list[Observation]) -> str:
    key = LAYOUT.health_summary(cluster, name)
    store.put(key, value)
    by_key[key] = value
    return key


def _loaded(n: int) -> tuple[Store, Keyed, ViewState]:
    store, by_key = Store(), {}
    for i in range(n):
        c = CLUSTERS[i % len(CLUSTERS)]
        _put(store, by_key, c, f"svc-{i:04d}", [_obs(c, f"svc-{i:04d}")])
    return store, by_key, ViewState(LAYOUT)


def test_a_health_write_shares_every_untouched_bucket_and_builds_no_tuple() -> None:
    """Before: each write rebuilt the whole tuple (sort of every key; 18 ms at 40,000)."""
    store, by_key, state = _loaded(2_000)
    first = state.apply(store.take(), revision=store.revision, now=1.0)
    _put(store, by_key, "b", "svc-0001", [_obs("b", "svc-0001", HealthState.UNHEALTHY)])
    second = state.apply(store.take(), revision=store.revision, now=2.0)
    a, b = first.observations, second.observations
    assert isinstance(a, ObservationTable) and isinstance(b, ObservationTable)
    assert a._flat is None and b._flat is None  # nothing flattened on the write path
    assert a.source is not None and b.source is not None
    shared = sum(x is y for x, y in zip(a.source.buckets(), b.source.buckets(), strict=True))
    assert shared == BUCKETS - 1
    assert b == _expected(by_key) and len(b) == 2_000


def test_a_reader_of_an_old_view_never_sees_a_later_write() -> None:
    store, by_key, state = _loaded(600)
    views = [state.apply(store.take(), revision=store.revision, now=1.0)]
    truths = [_expected(by_key)]
    steps = [
        lambda: _put(store, by_key, "a", "svc-0000", [_obs("a", "svc-0000", HealthState.DEGRADED)]),
        lambda: _put(store, by_key, "c", "*", [_remote("c", "a"), _remote("c", "b")]),
        lambda: (
            store.delete(LAYOUT.health_summary("b", "svc-0001")),
            by_key.pop(LAYOUT.health_summary("b", "svc-0001")),
        ),
        lambda: _put(store, by_key, "a", "svc-0000", []),
    ]
    for i, step in enumerate(steps):
        step()
        views.append(state.apply(store.take(), revision=store.revision, now=2.0 + i))
        truths.append(_expected(by_key))
    # every view read only now, after all the writes: each still holds its own content
    for view, truth in zip(views, truths, strict=True):
        assert tuple(view.observations) == truth and view.observations == truth
    assert len({len(t) for t in truths}) > 1 and not any(v.rejected for v in views)


def test_a_view_with_no_health_write_keeps_the_same_table() -> None:
    store, _, state = _loaded(10)
    first = state.apply(store.take(), revision=store.revision, now=1.0)
    store.put(LAYOUT.cluster("a"), b"{broken")  # no health key touched
    second = state.apply(store.take(), revision=store.revision, now=2.0)
    assert second.observations is first.observations


def test_the_store_publishes_what_changed_and_the_table_reads_like_a_tuple() -> None:
    store = ObservationStore()
    one, two = (_obs("a", "x"),), (_obs("b", "y"), _obs("b", "z"))
    source = {"k2": two, "k1": one}
    table = store.table(source, ["k1", "k2"])
    assert store.table(source, []) is table  # nothing changed: the same table
    assert table == one + two and table[0] == one[0] and table[1:] == two
    assert list(table) == [*one, *two] and table != ObservationTable()
    del source["k1"]
    source["k0"] = two
    later = store.table(source, ["k1", "k0"])  # k1 gone, k0 new
    assert table == one + two and later == two + two  # the old table unchanged
    assert store.get("k1") is None and "k0" in store and len(store) == 2
    with pytest.raises(TypeError):
        hash(table)


def test_a_table_encodes_compares_and_pickles_like_a_tuple() -> None:
    store, by_key, state = _loaded(20)
    view = state.apply(store.take(), revision=store.revision, now=1.0)
    as_tuple = dataclasses.replace(view, observations=_expected(by_key))
    assert codec.to_plain(view) == codec.to_plain(as_tuple)  # bench/coldbuild.py --dump
    assert same_content(view, as_tuple)
    assert pickle.loads(pickle.dumps(view.observations)) == as_tuple.observations


def test_a_health_write_shares_the_health_map_and_an_old_view_keeps_its_own() -> None:
    """Before: each changed assessment copied the whole map (40,000 pairs: ~1 ms)."""
    store = Store()
    for name in CLUSTERS:
        store.put(LAYOUT.cluster(name), cluster(name))
    for i in range(300):
        store.put(LAYOUT.service(f"s{i}"), service(f"s{i}", CLUSTERS))
    store.put(LAYOUT.gateway("a", "gw-a"), GatewayRecord(id="gw-a", cluster="a"))
    state = ViewState(LAYOUT)
    first = state.apply(store.take(), revision=store.revision, now=1.0)
    before = dict(first.health)
    store.put(LAYOUT.health_summary("a", "s7"), [_obs("a", "s7", HealthState.UNHEALTHY)])
    second = state.apply(store.take(), revision=store.revision, now=2.0)
    a, b = first.health, second.health
    assert isinstance(a, FrozenMap) and isinstance(b, FrozenMap)
    assert sum(x is y for x, y in zip(a.buckets(), b.buckets(), strict=True)) == BUCKETS - 1
    assert dict(a) == before and len(a) == len(b) == 900  # the old view: unchanged
    assert b["s7", "a"] != a["s7", "a"] and ("s7", "a") in b
    assert b.get(("nope", "a")) is None and b == {**before, ("s7", "a"): b["s7", "a"]}


def test_a_cow_map_reads_and_writes_like_a_dict() -> None:
    m: CowMap[str, int] = CowMap()
    m["a"], m["b"] = 1, 2
    frozen = m.freeze()
    assert m.freeze() is frozen  # nothing changed: the same map
    m["a"] = 3
    assert m.pop("b") == 2 and m.pop("b", None) is None and len(m) == 1
    with pytest.raises(KeyError):
        m.pop("b")
    assert dict(frozen) == {"a": 1, "b": 2} and len(frozen) == 2
    assert dict(m.freeze()) == {"a": 3} and "a" in m and m.get("z", 0) == 0
