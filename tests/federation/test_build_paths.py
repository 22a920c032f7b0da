"""The cold build's cheaper paths give what the plain ones gave (issue #11)."""

from __future__ import annotations

import itertools
import math

import pytest

from federation.aggregate import LATENCY_SCALE_MS, UNKNOWN_SCORE, score
from federation.codec import encode
from federation.etcd import KV
from federation.keys import KeyLayout, parsed_view_skips, view_skips
from federation.model import HealthState, Observation
from federation.viewkeys import KeyTable

LAYOUT = KeyLayout("/p/")


def _reference_score(
    state: HealthState,
    healthy: int,
    total: int,
    error_rate: float,
    latency_ms: float,
    down_share: float,
) -> float:
    """score() as it was before its fast paths."""
    if state is HealthState.UNHEALTHY or total <= 0:
        return 0.0
    share = min(1.0, healthy / total)
    success = max(0.0, 1.0 - min(1.0, error_rate))
    latency = 1.0 / (1.0 + max(0.0, latency_ms) / LATENCY_SCALE_MS)
    value = share * success * success * latency * (1.0 - 0.5 * down_share)
    if state is HealthState.UNKNOWN:
        value *= UNKNOWN_SCORE
    return round(max(0.0, min(1.0, value)), 4)


def test_score_equals_the_reference_everywhere() -> None:
    numbers = (0.0, -0.0, 1e-9, 0.2, 0.5, 1.0, 1.5, -1.0, math.inf, math.nan)
    for state, healthy, total, error, latency, down in itertools.product(
        HealthState, (0, 1, 3, 5), (0, 3, 4), numbers, (0.0, 12.5, math.inf), numbers
    ):
        got = score(
            state,
            healthy=healthy,
            total=total,
            error_rate=error,
            latency_ms=latency,
            down_share=down,
        )
        want = _reference_score(state, healthy, total, error, latency, down)
        assert (got == want and math.copysign(1, got) == math.copysign(1, want)) or (
            math.isnan(got) and math.isnan(want)
        ), (state, healthy, total, error, latency, down)


def test_a_parsed_key_is_skipped_exactly_as_view_skips_says() -> None:
    rests = [
        "health/a/report/gw",
        "health/a/lock/leader",
        "health/a/summary/shop",
        "health/a/report/",
        "health/a/report/gw/x",
        "health//report/gw",
        "health/a/other/x",
        "ratelimit/shop",
        "ratelimit/",
        "services/shop",
        "gateways/a/gw",
        "endpoints/a/shop/k8s",
        "nonsense",
        "",
    ]
    for rest in rests:
        parsed = LAYOUT.parse(LAYOUT.prefix + rest)
        if parsed is not None:
            assert parsed_view_skips(parsed) == view_skips(rest), rest


def test_the_key_table_hands_each_changed_key_parsed_once() -> None:
    table = KeyTable(LAYOUT)
    obs = Observation("gw", "a", "shop", "a", HealthState.HEALTHY, 1, 1)
    delta: dict[str, KV | None] = {
        LAYOUT.health_summary("a", "shop"): KV("", encode([obs]), 2, 2, 0),
        LAYOUT.health_report("a", "gw"): KV("", b"[]", 3, 3, 0),
        LAYOUT.prefix + "nope/x": KV("", b"1", 4, 4, 0),
        "/elsewhere": KV("", b"1", 5, 5, 0),
    }
    changes = table.take(delta)
    assert set(changes.parsed) == {
        LAYOUT.health_summary("a", "shop"),
        LAYOUT.prefix + "nope/x",
        "/elsewhere",
    }
    assert changes.parsed[LAYOUT.health_summary("a", "shop")] == LAYOUT.parse(
        LAYOUT.health_summary("a", "shop")
    )
    assert changes.parsed["/elsewhere"] is None
    assert changes.unknown == ["/elsewhere", LAYOUT.prefix + "nope/x"]


def test_a_remembered_validator_still_refuses_what_it_refused() -> None:
    from federation import boundcheck

    calls: list[object] = []

    def only_short(value: object) -> None:
        calls.append(value)
        if not isinstance(value, str) or len(value) > 3:
            raise ValueError("too long")

    check = boundcheck._remembered(only_short)
    check("abc")
    check("abc")  # remembered: not asked again
    assert calls == ["abc"]
    for _ in range(2):  # a refusal is never remembered
        with pytest.raises(ValueError):
            check("abcd")
    assert calls == ["abc", "abcd", "abcd"]
    with pytest.raises(ValueError):
        check(12)  # not a string: asked every time
    long = "x" * (boundcheck._REMEMBER_MAX_LEN + 1)
    with pytest.raises(ValueError):
        check(long)


def test_a_service_naming_a_bad_cluster_is_refused_after_good_ones() -> None:
    from federation.codec import CodecError, decode
    from federation.devstack.shape import Shape
    from federation.model import Service

    good = Shape(30).service(1)
    assert decode(Service, encode(good)) == good  # its cluster names remembered
    bad = encode(good).replace(b'"c0008"', b'"C0008"')
    with pytest.raises(CodecError, match="clusters"):
        decode(Service, bad)
