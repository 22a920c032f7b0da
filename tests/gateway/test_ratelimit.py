"""Token buckets, the federation share and bucket keys (fake time)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.model import GatewayRecord, RateLimit, RoutingView, Service
from federation.ratelimit_share import live_gateway_count
from gateway.ratelimit import RateLimiter, limit_key


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def svc(average: float, burst: int, *, scope: str = "gateway", name: str = "svc") -> Service:
    rl = RateLimit(average=average, burst=burst, scope=scope)  # type: ignore[arg-type]
    return Service(name=name, routes=(), port=80, clusters=("c1",), rate_limit=rl)


def allowed(limiter: RateLimiter, service: Service, key: str, n: int) -> int:
    return sum(limiter.check(service, key) == 0.0 for _ in range(n))


def test_no_rate_limit_always_allows() -> None:
    limiter = RateLimiter(clock=Clock())
    s = Service(name="open", routes=(), port=80, clusters=("c1",))
    assert all(limiter.check(s, "k") == 0.0 for _ in range(1000))
    assert len(limiter) == 0


def test_burst_then_average() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    s = svc(10, 5)
    assert allowed(limiter, s, "a", 10) == 5  # a new bucket starts full
    clock.now += 0.5  # 5 tokens back
    assert allowed(limiter, s, "a", 10) == 5
    clock.now += 0.05
    assert allowed(limiter, s, "a", 10) == 0  # half a token
    clock.now += 0.05
    assert allowed(limiter, s, "a", 10) == 1


def test_refill_never_exceeds_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    s = svc(100, 20)
    allowed(limiter, s, "a", 20)
    clock.now += 3600
    assert allowed(limiter, s, "a", 100) == 20


def test_sustained_rate_matches_average() -> None:
    clock = Clock(0.0)
    limiter = RateLimiter(clock=clock)
    s = svc(50, 10)
    ok = 0
    for i in range(10_000):  # 1000 requests/s offered for 10 s
        clock.now = i / 1000.0
        ok += limiter.check(s, "k") == 0.0
    assert ok == pytest.approx(10 + 50 * 10, abs=2)


@pytest.mark.parametrize(
    ("average", "burst", "spent_after", "expected"),
    [
        (1.0, 1, 0.0, 1.0),  # empty: one whole token away
        (0.5, 1, 0.0, 2.0),
        (2.0, 1, 0.25, 0.25),  # half a token refilled already
        (100.0, 3, 0.0, 0.01),
    ],
)
def test_retry_after_is_the_time_until_a_token(
    average: float, burst: int, spent_after: float, expected: float
) -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    s = svc(average, burst)
    allowed(limiter, s, "k", burst)
    clock.now += spent_after
    wait = limiter.check(s, "k")
    assert wait == pytest.approx(expected)
    assert math.ceil(wait) >= 1  # what the proxy sends as Retry-After
    clock.now += wait
    assert limiter.check(s, "k") == 0.0  # and then a token is there


def test_keys_and_services_have_their_own_buckets() -> None:
    limiter = RateLimiter(clock=Clock())
    a, b = svc(1, 2, name="a"), svc(1, 2, name="b")
    assert allowed(limiter, a, "1.1.1.1", 5) == 2
    assert allowed(limiter, a, "2.2.2.2", 5) == 2
    assert allowed(limiter, b, "1.1.1.1", 5) == 2


def test_config_change_applies_to_existing_buckets() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    assert allowed(limiter, svc(1, 100), "k", 10) == 10
    smaller = svc(1, 5)  # new view: burst cut to 5, the bucket's 90 tokens are capped
    assert allowed(limiter, smaller, "k", 10) == 5


# --------------------------------------------------------------------------- federation


def test_federation_scope_takes_a_share_by_live_count() -> None:
    limiter = RateLimiter(clock=Clock())
    s = svc(100, 40, scope="federation")
    assert limiter.params(s) == (100.0, 40.0)
    limiter.set_live_gateways(4)
    assert limiter.params(s) == (25.0, 10.0)
    limiter.set_live_gateways(0)  # never below one
    assert limiter.params(s) == (100.0, 40.0)
    g = svc(100, 40, scope="gateway")
    limiter.set_live_gateways(4)
    assert limiter.params(g) == (100.0, 40.0)  # scope gateway: every gateway the full limit


def test_federation_burst_share_is_at_least_one_token() -> None:
    limiter = RateLimiter(clock=Clock())
    limiter.set_live_gateways(10)
    assert limiter.params(svc(5, 3, scope="federation")) == (0.5, 1.0)


@pytest.mark.parametrize("gateways", [1, 2, 3, 5])
def test_sum_over_gateways_equals_the_configured_limit(gateways: int) -> None:
    """N gateways, traffic spread evenly: together they allow burst + average * t."""
    clock = Clock(0.0)
    limiters = [RateLimiter(clock=clock) for _ in range(gateways)]
    for limiter in limiters:
        limiter.set_live_gateways(gateways)
    s = svc(60, 30, scope="federation")
    ok = 0
    for i in range(12_000):  # 2000 requests/s for 6 s, round robin over the gateways
        clock.now = i / 2000.0
        ok += limiters[i % gateways].check(s, "client") == 0.0
    assert ok == pytest.approx(30 + 60 * 6, rel=0.02)


def test_share_is_recomputed_when_gateways_come_and_go() -> None:
    clock = Clock(0.0)
    limiter = RateLimiter(clock=clock)
    s = svc(100, 100, scope="federation")
    limiter.set_live_gateways(2)
    assert allowed(limiter, s, "k", 200) == 50
    limiter.set_live_gateways(1)  # the other gateway's lease expired: full limit here
    clock.now += 1.0
    assert allowed(limiter, s, "k", 200) == 100
    limiter.set_live_gateways(4)  # two more came: the full bucket is cut to the new share
    clock.now += 10.0
    assert allowed(limiter, s, "k", 200) == 25
    clock.now += 1.0
    assert allowed(limiter, s, "k", 200) == 25


def test_live_gateway_count_of_views() -> None:
    def view(*ids: str) -> RoutingView:
        return RoutingView(gateways={i: GatewayRecord(id=i, cluster="c1") for i in ids})

    assert live_gateway_count(RoutingView()) == 1
    assert live_gateway_count(view("g1")) == 1
    assert live_gateway_count(view("g1", "g2", "g3")) == 3


# --------------------------------------------------------------------------- memory


def test_idle_buckets_are_evicted() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    s = svc(10, 10)
    for i in range(1000):
        limiter.check(s, f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 1000
    clock.now += 1.0  # every bucket has refilled
    for i in range(200):  # each new bucket drops two idle ones
        limiter.check(s, f"new-{i}")
    assert len(limiter) == 1000 - 2 * 200 + 200
    limiter.check(s, "active")
    clock.now += 1.0  # the new ones have refilled too
    for _ in range(64 * 100):  # no new keys: every 64th check drops up to 8 idle ones
        limiter.check(s, "active")
    assert len(limiter) == 1  # only the one in use is left
    # a bucket still refilling is not forgotten (that would hand out a fresh burst)
    assert allowed(limiter, s, "active", 1) == 0


def test_key_flood_is_bounded_by_max_keys() -> None:
    limiter = RateLimiter(clock=Clock(), max_keys=500)
    s = svc(1, 1)
    for i in range(5000):
        limiter.check(s, str(i))
    assert len(limiter) == 500


# --------------------------------------------------------------------------- keys

HEADERS = [(b"host", b"shop"), (b"x-api-key", b"k-123"), (b"x-api-key", b"second")]


@pytest.mark.parametrize(
    ("per", "peer", "headers", "expected"),
    [
        ("client-ip", None, HEADERS, "192.0.2.7"),
        ("client-ip", "spiffe://acme/ns/a", HEADERS, "192.0.2.7"),
        ("peer-identity", "spiffe://acme/ns/a", HEADERS, "spiffe://acme/ns/a"),
        ("peer-identity", None, HEADERS, "192.0.2.7"),  # no identity: the address
        ("header:X-Api-Key", None, HEADERS, "k-123"),  # first value, any case
        ("header:x-api-key", None, HEADERS, "k-123"),
        ("header:X-API-KEY", None, [(b"X-Api-Key", b"upper")], "upper"),
        ("header:X-Api-Key", None, [(b"host", b"shop")], "-"),  # missing: shared key
        ("header:X-Api-Key", None, [], "-"),
    ],
)
def test_limit_key(
    per: str, peer: str | None, headers: list[tuple[bytes, bytes]], expected: str
) -> None:
    rl = RateLimit(average=1, burst=1, per=per)
    assert limit_key(rl, client_ip="192.0.2.7", headers=headers, peer_id=peer) == expected


def test_limit_key_bounds_a_huge_header_value() -> None:
    rl = RateLimit(average=1, burst=1, per="header:x-user")
    key = limit_key(rl, client_ip="192.0.2.7", headers=[(b"x-user", b"u" * 10_000)], peer_id=None)
    assert len(key) == 256


def test_retain_drops_services_that_left_the_view() -> None:
    limiter = RateLimiter(clock=Clock())
    a, b = svc(1, 1, name="a"), svc(1, 1, name="b")
    for i in range(10):
        limiter.check(a, str(i))
        limiter.check(b, str(i))
    assert len(limiter) == 20
    limiter.retain(lambda name: name == "a")
    assert len(limiter) == 10
    assert limiter.check(b, "0") == 0.0  # back with a fresh, full bucket


# --------------------------------------------------------------------------- properties

STEPS = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=2.0), st.integers(min_value=0, max_value=30)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(
    STEPS,
    st.floats(min_value=0.5, max_value=200.0),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=1, max_value=6),
)
def test_bucket_never_allows_more_than_burst_plus_rate(
    steps: list[tuple[float, int]], average: float, burst: int, gateways: int
) -> None:
    """Over any run: allowed <= burst + average * elapsed; and Retry-After is exact."""
    clock = Clock(0.0)
    limiter = RateLimiter(clock=clock)
    limiter.set_live_gateways(gateways)
    s = svc(average, burst, scope="federation")
    rate, cap = limiter.params(s)  # type: ignore[misc]
    ok = 0
    for dt, n in steps:
        clock.now += dt
        for _ in range(n):
            wait = limiter.check(s, "k")
            if wait == 0.0:
                ok += 1
            else:
                assert 0.0 < wait <= 1.0 / rate + 1e-9
        assert ok <= cap + rate * clock.now + 1e-6
    # waiting what it says always gives a token
    if limiter.check(s, "k") == 0.0:
        return
    clock.now += limiter.check(s, "k")
    assert limiter.check(s, "k") == 0.0
