"""The codec's fast path (compiled decoders, compiled bounds) against the reference path.

The fast path (``json.loads``, a decoder written per class, ``federation.boundcheck``)
must accept exactly what the reference path accepts (``limits.parse_json``, the generic
``codec._from_plain``, ``limits.check_model``), decode it to an equal object, and leave
every refusal to the reference, so the error names the same field. Each hostile value
below is checked both ways.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from federation import codec, limits
from federation.devstack.shape import Shape, health_value
from federation.model import (
    Cluster,
    Endpoint,
    GatewayRecord,
    HealthState,
    Observation,
    RateLimit,
    Route,
    RouteConditions,
    Service,
    ValueMatch,
)
from tests.federation.test_view import cluster, service


def reference(cls: type, data: bytes) -> Any:
    """The path as it was before the fast one: generic walk and check_model."""

    def one(raw: Any, path: str) -> Any:
        obj = codec._from_plain(cls, raw, path)
        limits.check_model(obj, path)
        return obj

    try:
        raw = limits.parse_json(data)
    except ValueError as exc:
        raise codec.CodecError(str(exc)) from None
    if cls is Observation or cls is Endpoint:
        if not isinstance(raw, list):
            raise codec.CodecError("expected a JSON list")
        limit, what = limits.list_limit(cls)
        if len(raw) > limit:
            raise codec.CodecError(f"{len(raw)} {what} in one key (at most {limit})")
        return tuple(codec._guarded(one, item, f"[{i}]") for i, item in enumerate(raw))
    return codec._guarded(one, raw, "")


def fast(cls: type, data: bytes) -> Any:
    if cls is Observation or cls is Endpoint:
        return codec.decode_list(cls, data)
    return codec.decode(cls, data)


def same(cls: type, data: bytes) -> None:
    try:
        want = reference(cls, data)
    except codec.CodecError as exc:
        with pytest.raises(codec.CodecError) as got:
            fast(cls, data)
        assert str(got.value) == str(exc)
        return
    assert fast(cls, data) == want


def _plain(obj: object, **changes: object) -> dict[str, Any]:
    plain: dict[str, Any] = codec.to_plain(obj)
    for path, value in changes.items():
        node = plain
        *parents, last = path.split("__")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[last] = value
    return plain


def test_good_values_decode_alike_and_fast() -> None:
    shape = Shape(clusters=30)
    rich = dataclasses.replace(
        service("shop", ("a", "b")),
        rate_limit=RateLimit(average=2.5, burst=3),
        routes=(
            Route(
                host="*.shop.example.com",
                path_prefix="/api",
                match=RouteConditions(
                    methods=frozenset({"GET", "POST"}), headers=(ValueMatch("x-a", "prefix", "v"),)
                ),
                timeout=3.0,
            ),
        ),
    )
    for svc in (rich, *(shape.service(i) for i in range(50))):
        same(Service, codec.encode(svc))
        assert codec.decode(Service, codec.encode(svc)) == svc
    same(Cluster, codec.encode(cluster("a")))
    same(GatewayRecord, codec.encode(GatewayRecord(id="g", cluster="a", cert_not_after=1.5)))
    same(Observation, health_value("c0001", "g1", [f"s{i:05d}" for i in range(40)], at=3.0))
    eps = [Endpoint(f"10.0.0.{i}:80", "a", "shop", source="k8s", zone="z") for i in range(9)]
    same(Endpoint, codec.encode(eps))


HOSTILE_SERVICE: list[dict[str, object]] = [
    {"port": "80"},
    {"port": True},
    {"port": 70000},
    {"port": 1.0},
    {"name": "Not A Label"},
    {"name": None},
    {"routes": {"host": "x"}},
    {"routes": []},
    {"routes__0__host": "bad host!"},
    {"routes__0__path_prefix": "no-slash"},
    {"routes__0__timeout": -1.0},
    {"routes__0__tls": "moon"},
    {"timeouts__request": -1.0},
    {"timeouts__idle": 0.0},
    {"timeouts__connect": "1"},
    {"retries__attempts": True},
    {"retries__attempts": 1000},
    {"retries__on": ["nonsense"]},
    {"retries__on": ["502", 7]},
    {"retries__grpc_status": [14, "x"]},
    {"circuit_breaker__max_pending": 0},
    {"health_check__healthy_after": 0},
    {"endpoints": {"a": ["10.0.0.1"]}},
    {"endpoints": {"a": "10.0.0.1:80"}},
    {"clusters": []},
    {"clusters": ["a", 3]},
    {"protocol": "smtp"},
    {"rate_limit": {"average": -5.0, "burst": 1, "per": "client-ip", "scope": "gateway"}},
    {"rate_limit": {"average": 5.0, "burst": 0, "per": "client-ip", "scope": "gateway"}},
    {"rate_limit": {"average": 5.0, "burst": 1, "per": "client-ip", "scope": "x"}},
    {"dns__ttl": -3.0},
    {"admin": True},
]


@pytest.mark.parametrize("changes", HOSTILE_SERVICE, ids=[str(c)[:40] for c in HOSTILE_SERVICE])
def test_hostile_services_refused_alike(changes: dict[str, object]) -> None:
    same(Service, json.dumps(_plain(service("shop", ("a",)), **changes)).encode())


def test_missing_fields_non_finite_numbers_and_raw_garbage_refused_alike() -> None:
    plain = _plain(service("shop", ("a",)))
    del plain["port"]
    same(Service, json.dumps(plain).encode())
    good = json.dumps(_plain(service("shop", ("a",)), timeouts__request=1.5)).encode()
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"):
        same(Service, good.replace(b"1.5", literal))
    for raw in (b"", b"{", b"[]", b"null", b"\xff\xfe", b"[" * 40 + b"]" * 40, b"1" * 5000):
        same(Service, raw)
        same(Observation, raw)
    same(Service, b'{"name": "' + b"x" * (limits.MAX_VALUE_BYTES + 1) + b'"}')


def test_hostile_observations_and_endpoints_refused_alike() -> None:
    obs = Observation("g", "a", "shop", "a", HealthState.HEALTHY, healthy=3, total=3, at=1.0)
    for changes in (
        {"error_rate": 7.0},
        {"latency_ms": -1.0},
        {"healthy": -3},
        {"state": "sideways"},
        {"state": 3},
        {"at": "now"},
        {"total": 2.5},
        {"observer": None},
    ):
        same(Observation, json.dumps([_plain(obj=obs), _plain(obs, **changes)]).encode())
    same(Observation, json.dumps([_plain(obs)] * (limits.MAX_ITEMS_PER_KEY + 1)).encode())
    ep = Endpoint("10.0.0.1:80", "a", "shop", source="k8s")
    for changes in ({"address": "10.0.0.1"}, {"ready": 1}, {"zone": 5}):
        same(Endpoint, json.dumps([_plain(ep, **changes)]).encode())
    many = [_plain(ep, address=f"10.0.{i // 256}.{i % 256}:80") for i in range(1001)]
    same(Endpoint, json.dumps(many).encode())


def test_names_are_interned() -> None:
    a = codec.decode_list(Observation, health_value("c0001", "gw", ["s00001"], at=1.0))[0]
    b = codec.decode_list(Observation, health_value("c0001", "gw", ["s00001"], at=2.0))[0]
    assert a.service is b.service and a.observer_cluster is b.observer_cluster


def test_large_lists_parsed_item_by_item_alike() -> None:
    """A list value over 64 kB is parsed one item at a time (the event loop may take the
    interpreter lock between items); every malformed variant is refused alike."""
    services = [f"s{i:05d}" for i in range(600)]
    big = health_value("c0001", "g1", services, at=3.0)
    assert len(big) > codec._CHUNKED
    same(Observation, big)
    assert len(codec.decode_list(Observation, big)) == 600
    spaced = b" \n[ " + big[1:-1].replace(b"},{", b"} ,\n\t{") + b" ]\r\n"
    same(Observation, spaced)
    for bad in (
        big + b"x",
        big[:-1],
        big[:-1] + b",]",
        b"[," + big[1:],
        big.replace(b"},{", b"}{", 1),
        big.replace(b'"healthy"', b'"sick"', 1),
        b"\xef\xbb\xbf" + big,
        big.decode().encode("utf-16"),
        b"{" + big[1:-1] + b"}",
    ):
        same(Observation, bad)


def test_small_values_scanned_directly_decode_alike() -> None:
    """A value under 64 kB is scanned with no encoding detection nor whitespace pass when
    nothing surrounds it; whatever else json.loads takes goes the reference way, alike."""
    obs = health_value("c0001", "g1", ["s00001", "s00002"], at=3.0)
    svc = codec.encode(service("shop", ("a",)))
    for cls, good in ((Observation, obs), (Service, svc)):
        same(cls, good)
        for variant in (
            b" " + good,
            good + b"\n",
            b"\t" + good + b" \r\n",
            b"\xef\xbb\xbf" + good,  # a UTF-8 BOM: json.loads(bytes) takes it
            good.decode().encode("utf-16"),
            good.decode().encode("utf-32"),
            good + b"x",
            good + b" []",
            good[:-1],
            good.replace(b'"', b'"\xed\xa0\x80', 1),  # a UTF-8-encoded lone surrogate
            b"\x00" + good,
        ):
            same(cls, variant)


def test_optional_fields_left_out_decode_to_their_defaults() -> None:
    """The compiled decoders build objects positionally: a field left out takes its
    default (or its factory's value), as the constructor would."""
    minimal = {"observer": "g", "observer_cluster": "a", "service": "s", "cluster": "a",
               "state": "healthy"}  # fmt: skip
    same(Observation, json.dumps([minimal]).encode())
    got = codec.decode_list(Observation, json.dumps([minimal]).encode())[0]
    assert got == Observation("g", "a", "s", "a", HealthState.HEALTHY)
    plain = _plain(service("shop", ("a",)))
    for name in ("endpoints", "rate_limit", "access", "timeouts", "dns", "health_check"):
        plain.pop(name, None)
        same(Service, json.dumps(plain).encode())
    record = {"id": "g", "cluster": "a"}
    same(GatewayRecord, json.dumps(record).encode())
    assert codec.decode(GatewayRecord, json.dumps(record).encode()) == GatewayRecord("g", "a")
