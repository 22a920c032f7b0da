"""Hostile etcd values: every one is rejected and counted, the last good value serves.

Deep nesting, huge values, NaN/Infinity, wrong types, out-of-range numbers, endpoints
without a port, too many endpoints in one key, unknown kinds. Most checks run the
decoder directly (no etcd); the watch test proves with a real etcd that one hostile
key neither stops the watch nor keeps a new gateway from becoming ready.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from federation import codec
from federation.etcd import KV, EtcdClient
from federation.keys import KeyLayout
from federation.limits import MAX_ENDPOINTS_PER_KEY, MAX_VALUE_BYTES
from federation.model import Endpoint, RateLimit, Timeouts
from federation.view import build_view, decode_item
from tests.federation.test_view import cluster, service
from tests.federation.test_watch import running_watcher, seed
from tests.support.etcd import EtcdCluster

LAYOUT = KeyLayout("/fedgate/")
EXAMPLE = Path(__file__).resolve().parents[2] / "clusters.example.yaml"


def _kv(key: str, value: bytes, rev: int = 2) -> KV:
    return KV(key=key, value=value, mod_revision=rev, create_revision=rev, lease=0)


def _error(key: str, value: bytes) -> str:
    item = decode_item(LAYOUT, _kv(key, value))
    assert item.error is not None, f"accepted: {value[:80]!r}"
    assert "\n" not in item.error
    return item.error


def _service_json(**changes: object) -> dict[str, object]:
    plain: dict[str, object] = codec.to_plain(service("shop", ("a",)))
    for path, value in changes.items():
        node = plain
        *parents, last = path.split("__")
        for p in parents:
            node = node[p]  # type: ignore[assignment]
        node[last] = value
    return plain


DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 5_000 + b"1" + b"}" * 5_000


@pytest.mark.parametrize("value", [DEEP, DEEP_OBJECT], ids=["deep-list", "deep-object"])
def test_deep_json_rejected_before_decoding(value: bytes) -> None:
    summary = LAYOUT.health_summary("a", "shop")
    for key in (LAYOUT.service("shop"), LAYOUT.endpoints("shop", "a", "k8s"), summary):
        assert "deep" in _error(key, value)


def test_huge_value_rejected() -> None:
    big = json.dumps({"name": "x" * (MAX_VALUE_BYTES + 1)}).encode()
    assert "too large" in _error(LAYOUT.service("shop"), big)


@pytest.mark.parametrize(
    "path,value",
    [
        ("timeouts__request", "NaN"),
        ("timeouts__connect", "Infinity"),
        ("retries__budget_percent", "-Infinity"),
    ],
)
def test_nan_and_infinity_refused(path: str, value: str) -> None:
    plain = _service_json(**{path: 1.5})
    raw = json.dumps(plain).replace("1.5", value).encode()
    assert "not a finite number" in _error(LAYOUT.service("shop"), raw)


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"timeouts__request": -1.0}, "timeouts.request"),
        ({"timeouts__idle": 0.0}, "timeouts.idle"),
        ({"retries__attempts": 1000}, "retries.attempts"),
        ({"retries__budget_percent": 500.0}, "retries.budget_percent"),
        ({"circuit_breaker__max_pending": 0}, "circuit_breaker.max_pending"),
        ({"rate_limit": {"average": -5.0, "burst": 1, "per": "client-ip", "scope": "gateway"}},
         "rate_limit.average"),
        ({"rate_limit": {"average": 5.0, "burst": 0, "per": "client-ip", "scope": "gateway"}},
         "rate_limit.burst"),
        ({"port": 70000}, "port"),
        ({"name": "Not A Label"}, "name"),
        ({"endpoints": {"a": ["10.0.0.1"]}}, "endpoints"),
        ({"health_check__healthy_after": 0}, "health_check.healthy_after"),
    ],
)  # fmt: skip
def test_out_of_range_values_refused_like_the_manifest(
    changes: dict[str, object], needle: str
) -> None:
    raw = json.dumps(_service_json(**changes)).encode()
    assert needle in _error(LAYOUT.service("shop"), raw)


def test_wrong_types_and_unknown_fields_refused() -> None:
    for changes in ({"port": "80"}, {"routes": {"host": "x"}}, {"retries__attempts": True}):
        raw = json.dumps(_service_json(**changes)).encode()
        _error(LAYOUT.service("shop"), raw)
    plain = _service_json()
    plain["admin"] = True
    assert "unknown field" in _error(LAYOUT.service("shop"), json.dumps(plain).encode())


def test_cluster_tier_and_east_west_checked() -> None:
    plain = codec.to_plain(cluster("a"))
    for field, value in (("tier", -1), ("east_west", "ftp://x"), ("cloud", "moon")):
        bad = dict(plain, **{field: value})
        _error(LAYOUT.cluster("a"), json.dumps(bad).encode())


def test_endpoint_without_port_refused() -> None:
    eps = [Endpoint("10.0.0.1", "a", "shop", source="k8s")]
    err = _error(LAYOUT.endpoints("shop", "a", "k8s"), codec.encode(eps))
    assert "HOST:PORT" in err


def test_endpoint_count_capped_per_key() -> None:
    eps = [
        Endpoint(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:80", "a", "shop", source="k8s")
        for i in range(MAX_ENDPOINTS_PER_KEY + 1)
    ]
    err = _error(LAYOUT.endpoints("shop", "a", "k8s"), codec.encode(eps))
    assert f"at most {MAX_ENDPOINTS_PER_KEY}" in err


def test_unknown_kind_rejected() -> None:
    kvs = {"/fedgate/nosuchkind/x": _kv("/fedgate/nosuchkind/x", b"{}")}
    view = build_view(kvs, layout=LAYOUT, revision=2, previous=None, now=0.0)
    assert [r.key for r in view.rejected] == ["/fedgate/nosuchkind/x"]


def test_good_values_still_decode() -> None:
    svc = dataclasses.replace(
        service("shop", ("a",)),
        rate_limit=RateLimit(average=2.5, burst=3),
        timeouts=Timeouts(connect=0.25, request=5.0, idle=30.0),
    )
    item = decode_item(LAYOUT, _kv(LAYOUT.service("shop"), codec.encode(svc)))
    assert item.error is None and item.value == svc


async def test_one_hostile_key_neither_stops_the_watch_nor_a_new_gateway(
    etcd: EtcdCluster,
) -> None:
    """Before the fix: RecursionError escaped the decoder, the watch restarted and crashed
    again at the same revision; a new gateway stayed empty (/readyz 503)."""
    async with EtcdClient(etcd.endpoints) as client:
        await seed(client)
        async with running_watcher(etcd.endpoints) as run:
            await client.put(LAYOUT.service("evil"), DEEP)
            rev = await client.put(LAYOUT.service("late"), codec.encode(service("late", ("a",))))
            view = await run.reaches(rev)
            assert "late" in view.services and "shop" in view.services
            assert any(r.key == LAYOUT.service("evil") for r in view.rejected)
            assert run.watcher.stats.rejected_items >= 1
        # a gateway started now (the hostile key still there) gets a whole view
        async with running_watcher(etcd.endpoints) as fresh:
            view = await fresh.reaches(rev)
            assert view.source == "etcd" and {"shop", "late"} <= set(view.services)


def test_observations_are_bounded() -> None:
    from federation.model import HealthState, Observation

    for bad in ({"error_rate": 7.0}, {"latency_ms": -1.0}, {"healthy": -3}):
        obs = Observation("g", "a", "shop", "a", HealthState.HEALTHY, **bad)  # type: ignore[arg-type]
        _error(LAYOUT.health_summary("a", "shop"), codec.encode([obs]))


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    from federation.limits import check_json

    check_json(b'["' + b"[" * 100 + b'\\"' + b"{" * 100 + b'"]')  # one level, in a string
    plain = _service_json()
    plain["routes"] = [{"host": "shop.example.com", "path_prefix": "/" + "[" * 60}]
    decode_item(LAYOUT, _kv(LAYOUT.service("shop"), json.dumps(plain).encode()))


async def test_apply_replaces_a_hostile_config_value_without_a_traceback(
    etcd: EtcdCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `fedgate apply` diffing against a `[`x100,000 value died of RecursionError."""
    import asyncio

    from federation.cli import main
    from federation.manifest import load_manifest

    name = load_manifest(EXAMPLE).services[0].name
    example = EXAMPLE
    async with EtcdClient(etcd.endpoints) as client:
        await client.put(LAYOUT.service(name), DEEP)
    code = await asyncio.to_thread(main, ["apply", str(example), "--etcd", etcd.endpoint])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Traceback" not in out.err and "unreadable value replaced" in out.out
