"""build_view (facts -> RoutingView, rejections) and the snapshot file, without etcd."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import pytest

from federation import codec
from federation.etcd import KV
from federation.keys import KeyLayout
from federation.model import (
    Cluster,
    Endpoint,
    GatewayRecord,
    HealthState,
    Observation,
    Route,
    RoutingView,
    Service,
)
from federation.snapshot import (
    decode_view,
    encode_view,
    load_snapshot,
    write_snapshot,
)
from federation.snapshot_writer import SnapshotWriter
from federation.view import DecodeCache, build_view, same_content

LAYOUT = KeyLayout("/fedgate/")


def cluster(name: str, *, tier: int = 0, region: str = "eu-west-1") -> Cluster:
    return Cluster(
        name=name,
        region=region,
        cloud="aws",
        environment="prod",
        tier=tier,
        east_west=f"https://{name}.example.net:15443",
        labels=MappingProxyType({"zone": "eu"}),
    )


def service(name: str, clusters: tuple[str, ...], **kw: object) -> Service:
    return Service(
        name=name,
        routes=(Route(host=f"{name}.example.com", path_prefix="/"),),
        port=8080,
        clusters=clusters,
        **kw,  # type: ignore[arg-type]
    )


class Facts:
    """A growing {key: KV} as etcd would hold it, one revision per put."""

    def __init__(self) -> None:
        self.kvs: dict[str, KV] = {}
        self.revision = 1

    def put(self, key: str, value: bytes | object) -> None:
        data = value if isinstance(value, bytes) else codec.encode(value)
        self.revision += 1
        old = self.kvs.get(key)
        create = old.create_revision if old else self.revision
        self.kvs[key] = KV(key, data, self.revision, create, 0)

    def delete(self, key: str) -> None:
        self.revision += 1
        del self.kvs[key]

    def view(self, previous: RoutingView | None = None, **kw: object) -> RoutingView:
        return build_view(
            self.kvs,
            layout=LAYOUT,
            revision=self.revision,
            previous=previous,
            now=1000.0,
            **kw,  # type: ignore[arg-type]
        )


def base_facts() -> Facts:
    f = Facts()
    f.put(LAYOUT.federation(), {"name": "acme"})
    f.put(LAYOUT.cluster("a"), cluster("a"))
    f.put(LAYOUT.cluster("b"), cluster("b", tier=1))
    f.put(
        LAYOUT.service("shop"),
        service("shop", ("a", "b"), endpoints=MappingProxyType({"b": ("10.0.0.5:8080",)})),
    )
    return f


def test_builds_the_view() -> None:
    f = base_facts()
    f.put(
        LAYOUT.endpoints("shop", "a", "kubernetes"),
        [Endpoint("10.1.0.1:8080", "a", "shop", source="kubernetes")],
    )
    f.put(LAYOUT.gateway("a", "gw-a"), GatewayRecord(id="gw-a", cluster="a"))
    f.put(
        LAYOUT.health_summary("a", "shop"),
        [Observation("gw-a", "a", "shop", "a", HealthState.HEALTHY, healthy=1, total=1)],
    )
    config_rev = f.kvs[LAYOUT.service("shop")].mod_revision
    view = f.view()
    assert view.federation == "acme"
    assert set(view.clusters) == {"a", "b"} and set(view.services) == {"shop"}
    assert [e.address for e in view.endpoints_of("shop", "a")] == ["10.1.0.1:8080"]
    static = view.endpoints_of("shop", "b")
    assert [(e.address, e.source) for e in static] == [("10.0.0.5:8080", "static")]
    assert set(view.gateways) == {"gw-a"}
    assert view.revision == f.revision and view.config_revision == config_rev
    assert view.rejected == () and view.source == "etcd" and not view.stale
    health = view.health_of("shop", "a")
    assert health is not None and health.state is HealthState.HEALTHY


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        (LAYOUT.service("shop"), b"{not json", "not valid JSON"),
        (LAYOUT.service("shop"), b'{"name": "shop"}', "missing field"),
        (LAYOUT.service("shop"), service("other", ("a",)), "does not match its key"),
        (LAYOUT.service("shop"), service("shop", ("a", "zz")), "unknown cluster 'zz'"),
        (LAYOUT.cluster("a"), b'{"name": "a", "region": 1}', "region"),
        (LAYOUT.federation(), b'{"title": "x"}', "expected"),
    ],
)
def test_an_invalid_item_is_rejected_and_the_previous_value_kept(
    key: str, value: bytes | object, error: str
) -> None:
    f = base_facts()
    good = f.view()
    f.put(key, value)
    f.put(LAYOUT.cluster("c"), cluster("c"))  # the rest of the update applies
    view = f.view(previous=good)
    assert len(view.rejected) == 1
    rejection = view.rejected[0]
    assert rejection.key == key and error in rejection.error
    assert rejection.revision == f.kvs[key].mod_revision
    assert view.services == good.services
    assert view.federation == good.federation
    assert view.clusters["a"] == good.clusters["a"]
    assert "c" in view.clusters


def test_unknown_keys_are_rejected_reserved_ones_ignored() -> None:
    f = base_facts()
    f.put("/fedgate/nonsense/x", b"{}")
    f.put("/fedgate/clusters/a/extra", b"{}")
    f.put("/fedgate/ratelimit/shop", b"{}")
    view = f.view()
    assert sorted(r.key for r in view.rejected) == [
        "/fedgate/clusters/a/extra",
        "/fedgate/nonsense/x",
    ]


def test_rejected_discovered_endpoints_keep_their_previous_value() -> None:
    f = base_facts()
    key = LAYOUT.endpoints("shop", "a", "kubernetes")
    f.put(key, [Endpoint("10.1.0.1:8080", "a", "shop", source="kubernetes")])
    good = f.view()
    f.put(key, [Endpoint("10.1.0.2:8080", "b", "shop")])  # wrong cluster for its key
    view = f.view(previous=good)
    assert [r.key for r in view.rejected] == [key]
    assert view.endpoints_of("shop", "a") == good.endpoints_of("shop", "a")


def test_config_revision_ignores_runtime_keys_and_keeps_its_floor() -> None:
    f = base_facts()
    config_rev = f.view().config_revision
    f.put(LAYOUT.gateway("a", "gw"), GatewayRecord(id="gw", cluster="a"))
    assert f.view().config_revision == config_rev
    f.delete(LAYOUT.service("shop"))
    assert f.view(config_floor=f.revision).config_revision == f.revision


def test_decode_cache_reuses_items() -> None:
    f = base_facts()
    cache = DecodeCache()
    a = f.view(cache=cache)
    b = f.view(previous=a, cache=cache)
    assert a.services["shop"] is b.services["shop"]


def test_snapshot_round_trip(tmp_path: Path) -> None:
    f = base_facts()
    f.put(
        LAYOUT.endpoints("shop", "a", "kubernetes"),
        [Endpoint("10.1.0.1:8080", "a", "shop", source="kubernetes", zone="z1")],
    )
    f.put(LAYOUT.gateway("a", "gw-a"), GatewayRecord(id="gw-a", cluster="a", cert_serial="01"))
    f.put(LAYOUT.service("bad"), b"{")
    view = f.view()
    back = decode_view(encode_view(view))
    assert back.source == "snapshot" and back.stale
    assert back.revision == view.revision and back.config_revision == view.config_revision
    assert same_content(back, view)

    path = tmp_path / "state" / "view.json"
    write_snapshot(path, view)
    loaded = load_snapshot(path)
    assert loaded is not None and same_content(loaded, view)
    assert [p.name for p in path.parent.iterdir()] == ["view.json"]  # no temp file left


def test_load_snapshot_missing_or_corrupt(tmp_path: Path) -> None:
    assert load_snapshot(tmp_path / "none.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert load_snapshot(bad) is None
    bad.write_text(json.dumps({"format": "something-else"}))
    assert load_snapshot(bad) is None


async def test_snapshot_writer_debounces(tmp_path: Path) -> None:
    f = base_facts()
    path = tmp_path / "view.json"
    writer = SnapshotWriter(path, debounce=0.05)
    views = []
    for i in range(20):
        f.put(LAYOUT.cluster(f"x{i}"), cluster(f"x{i}"))
        views.append(f.view())
        writer.schedule(views[-1])
    await writer.close()
    loaded = load_snapshot(path)
    assert loaded is not None and loaded.revision == views[-1].revision
    assert writer.writes <= 2
    # routing facts only: the runtime health is not kept (stale when read, most of the bytes)
    assert views[-1].health and not loaded.health and not loaded.observations
    assert loaded.services == views[-1].services and loaded.clusters == views[-1].clusters


def test_gateways_of_one_cluster_reporting_the_same_pods_give_one_endpoint_each() -> None:
    """Two gateways discover the same pods: one endpoint per address, freshest report wins."""
    f = base_facts()
    f.put(
        LAYOUT.endpoints("shop", "a", "gw-a1"),
        [
            Endpoint("10.1.0.1:8080", "a", "shop", source="kubernetes"),
            Endpoint("10.1.0.2:8080", "a", "shop", source="kubernetes"),
        ],
    )
    f.put(
        LAYOUT.endpoints("shop", "a", "gw-a2"),
        [
            Endpoint("10.1.0.1:8080", "a", "shop", source="kubernetes", terminating=True),
            Endpoint("10.1.0.2:8080", "a", "shop", source="kubernetes"),
        ],
    )
    eps = {e.address: e for e in f.view().endpoints_of("shop", "a")}
    assert sorted(eps) == ["10.1.0.1:8080", "10.1.0.2:8080"]
    assert eps["10.1.0.1:8080"].terminating  # gw-a2 wrote last: its report is the freshest


def test_acme_challenges_reach_the_view_and_hostile_ones_are_rejected() -> None:
    f = base_facts()
    f.put(LAYOUT.acme_challenge("tok-1"), b"tok-1.thumbprint")
    f.put(LAYOUT.acme_lock("shop.example.com"), b"gw-1")
    f.put(LAYOUT.acme_challenge("bad"), b"\xff\xfe")
    f.put(LAYOUT.acme_challenge("long"), b"x" * 600)
    f.put("/fedgate/acme/other/x", b"y")
    view = f.view()
    assert dict(view.acme_challenges) == {"tok-1": "tok-1.thumbprint"}
    assert sorted(r.key for r in view.rejected) == [
        "/fedgate/acme/challenge/bad",
        "/fedgate/acme/challenge/long",
        "/fedgate/acme/other/x",
    ]
    f.delete(LAYOUT.acme_challenge("tok-1"))
    assert not f.view(view).acme_challenges
