"""Balancer: least-request with power of two choices, passive outlier ejection (fake time)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.model import Endpoint
from gateway.balancer import Balancer


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def eps(n: int, **kw: bool) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"10.0.0.{i}:8080", "c1", "svc", **kw) for i in range(n))


def balancer(clock: Clock, **kw: float) -> Balancer:
    return Balancer(rng=random.Random(7), clock=clock, **kw)  # type: ignore[arg-type]


def fail(b: Balancer, address: str, times: int) -> None:
    for _ in range(times):
        b.started(address)
        b.finished(address, ok=False)


def picks(b: Balancer, pool: tuple[Endpoint, ...], n: int, **kw: object) -> Counter[str]:
    out: Counter[str] = Counter()
    for _ in range(n):
        ep = b.pick("svc", "c1", pool, **kw)  # type: ignore[arg-type]
        out[ep.address if ep else None] += 1  # type: ignore[index]
    return out


# --------------------------------------------------------------------------- P2C


def test_equal_load_uses_every_endpoint_evenly() -> None:
    b = balancer(Clock())
    pool = eps(5)
    got = picks(b, pool, 5000)
    assert set(got) == {e.address for e in pool}
    for count in got.values():
        assert 800 < count < 1200, got


def test_least_loaded_is_preferred_by_rank() -> None:
    """Active 0,1,2,3: P2C picks rank k with probability (n-1-k)/C(n,2) = 3/6, 2/6, 1/6, 0."""
    b = balancer(Clock())
    pool = eps(4)
    for i, ep in enumerate(pool):
        for _ in range(i):
            b.started(ep.address)
    got = picks(b, pool, 6000)
    assert got[pool[3].address] == 0  # the busiest is never chosen over a lighter one
    assert 2700 < got[pool[0].address] < 3300
    assert 1700 < got[pool[1].address] < 2300
    assert 700 < got[pool[2].address] < 1300


def test_slow_endpoint_gets_less_traffic_in_a_simulation() -> None:
    """Requests finish after 1 tick, except on the slow endpoint (10 ticks)."""
    b = balancer(Clock())
    pool = eps(4)
    slow = pool[0].address
    inflight: list[tuple[int, str]] = []
    sent: Counter[str] = Counter()
    for tick in range(500):
        done = [x for x in inflight if x[0] <= tick]
        inflight = [x for x in inflight if x[0] > tick]
        for _, addr in done:
            b.finished(addr, ok=True)
        for _ in range(8):
            ep = b.pick("svc", "c1", pool)
            assert ep is not None
            b.started(ep.address)
            sent[ep.address] += 1
            inflight.append((tick + (10 if ep.address == slow else 1), ep.address))
    share = sent[slow] / sum(sent.values())
    assert share < 0.08, sent  # round robin would give it 25% (this run: about 4%)
    assert all(sent[e.address] > 0 for e in pool)


def test_single_candidate_and_empty_pool() -> None:
    b = balancer(Clock())
    one = eps(1)
    assert b.pick("svc", "c1", one) == one[0]
    assert b.pick("svc", "c1", ()) is None
    assert b.pick("svc", "c1", one, exclude={one[0].address}) is None


def test_only_routable_endpoints_are_picked() -> None:
    b = balancer(Clock())
    pool = (
        Endpoint("10.0.0.1:80", "c1", "svc"),
        Endpoint("10.0.0.2:80", "c1", "svc", ready=False),
        Endpoint("10.0.0.3:80", "c1", "svc", terminating=True),
        Endpoint("10.0.0.4:80", "c1", "svc", serving=False),
        Endpoint("10.0.0.5:80", "c1", "svc"),
    )
    assert set(picks(b, pool, 300)) == {"10.0.0.1:80", "10.0.0.5:80"}
    assert b.pick("svc", "c1", eps(3, ready=False)) is None


def test_exclude_skips_tried_endpoints() -> None:
    b = balancer(Clock())
    pool = eps(3)
    got = picks(b, pool, 300, exclude=frozenset({pool[0].address}))
    assert set(got) == {pool[1].address, pool[2].address}
    assert b.pick("svc", "c1", pool, exclude={e.address for e in pool}) is None


def test_active_counts_follow_started_and_finished() -> None:
    b = balancer(Clock())
    b.started("a:1")
    b.started("a:1")
    assert b.active("a:1") == 2
    b.finished("a:1", ok=True)
    b.finished("a:1", ok=True)
    b.finished("a:1", ok=True)  # one too many: never negative, never an error
    b.finished("unknown:1", ok=False)
    assert b.active("a:1") == 0
    assert b.tracked() == 0  # an address in no pool with nothing in flight is forgotten


def test_state_of_addresses_gone_from_the_view_is_dropped() -> None:
    b = balancer(Clock())
    first = eps(50)
    picks(b, first, 10)
    assert b.tracked() == 50
    second = tuple(Endpoint(f"10.1.0.{i}:8080", "c1", "svc") for i in range(3))
    picks(b, second, 10)
    assert b.tracked() == 3


def test_same_content_new_tuple_keeps_state() -> None:
    b = balancer(Clock())
    pool = eps(3)
    b.pick("svc", "c1", pool)
    fail(b, pool[0].address, 4)
    again = eps(3)  # a new view with equal endpoints: equal, not identical
    assert again == pool and again is not pool
    b.pick("svc", "c1", again)
    fail(b, pool[0].address, 1)
    assert b.is_ejected(pool[0].address)


# --------------------------------------------------------------------------- ejection


def test_consecutive_failures_eject_until_expiry() -> None:
    clock = Clock()
    b = balancer(clock, consecutive_failures=5, base_ejection=30.0)
    pool = eps(4)
    b.pick("svc", "c1", pool)
    bad = pool[1].address
    fail(b, bad, 4)
    assert not b.is_ejected(bad)
    fail(b, bad, 1)
    assert b.is_ejected(bad)
    assert b.ejected() == {bad: pytest.approx(30.0)}
    assert bad not in picks(b, pool, 500)
    clock.now += 29.9
    assert bad not in picks(b, pool, 500)
    clock.now += 0.2
    assert not b.is_ejected(bad)
    assert picks(b, pool, 500)[bad] > 50


def test_success_resets_the_failure_counter() -> None:
    b = balancer(Clock(), consecutive_failures=3)
    pool = eps(3)
    b.pick("svc", "c1", pool)
    addr = pool[0].address
    for _ in range(5):
        fail(b, addr, 2)
        b.started(addr)
        b.finished(addr, ok=True)
    assert not b.is_ejected(addr)


def test_back_after_ejection_needs_a_full_run_of_failures_again() -> None:
    clock = Clock()
    b = balancer(clock, consecutive_failures=3, base_ejection=10.0)
    pool = eps(3)
    b.pick("svc", "c1", pool)
    addr = pool[0].address
    fail(b, addr, 3)
    assert b.is_ejected(addr)
    fail(b, addr, 2)  # late answers of requests in flight while it was ejected
    clock.now += 10.0
    assert b.pick("svc", "c1", pool) is not None
    fail(b, addr, 1)  # one failure after coming back: the counter restarted
    assert not b.is_ejected(addr)
    b.started(addr)
    b.finished(addr, ok=True)
    fail(b, addr, 2)
    assert not b.is_ejected(addr)
    fail(b, addr, 1)
    assert b.is_ejected(addr)


def test_ejection_time_grows_with_repeats_up_to_the_cap_and_decays() -> None:
    clock = Clock()
    b = balancer(clock, consecutive_failures=1, base_ejection=30.0, max_ejection=100.0)
    pool = eps(2)
    b.pick("svc", "c1", pool)
    addr = pool[0].address
    expected = [30.0, 60.0, 90.0, 100.0, 100.0]
    for want in expected:
        fail(b, addr, 1)
        assert b.ejected()[addr] == pytest.approx(want)
        clock.now += want  # comes back and fails at once
        b.pick("svc", "c1", pool)
    # healthy for a long time: the multiplier decays back to the first step
    clock.now += 30.0 * 10
    fail(b, addr, 1)
    assert b.ejected()[addr] == pytest.approx(30.0)


def test_ejection_cap_keeps_a_share_of_the_pool_in() -> None:
    b = balancer(Clock(), consecutive_failures=2, max_ejected_percent=50.0)
    pool = eps(4)
    b.pick("svc", "c1", pool)
    for ep in pool:
        fail(b, ep.address, 2)
    ejected = [e.address for e in pool if b.is_ejected(e.address)]
    assert len(ejected) == 2
    remaining = set(picks(b, pool, 300))
    assert remaining == {e.address for e in pool} - set(ejected)


@pytest.mark.parametrize(
    ("size", "percent", "most"),
    [
        (1, 50, 0),
        (2, 50, 1),
        (2, 100, 1),
        (3, 50, 1),
        (10, 50, 5),
        (10, 10, 1),
        (10, 0, 0),
        (5, 100, 4),
    ],
)
def test_at_least_one_endpoint_always_stays_in(size: int, percent: float, most: int) -> None:
    b = balancer(Clock(), consecutive_failures=1, max_ejected_percent=percent)
    pool = eps(size)
    b.pick("svc", "c1", pool)
    for ep in pool:
        fail(b, ep.address, 3)
    assert sum(b.is_ejected(e.address) for e in pool) == most
    assert b.pick("svc", "c1", pool) is not None


def test_cap_frees_up_when_an_ejection_expires() -> None:
    clock = Clock()
    b = balancer(clock, consecutive_failures=1, base_ejection=10.0, max_ejected_percent=50.0)
    pool = eps(2)
    b.pick("svc", "c1", pool)
    fail(b, pool[0].address, 1)
    fail(b, pool[1].address, 1)
    assert b.is_ejected(pool[0].address) and not b.is_ejected(pool[1].address)
    clock.now += 10.0
    fail(b, pool[1].address, 1)  # pool[0] is back: now pool[1] may go
    assert b.is_ejected(pool[1].address) and not b.is_ejected(pool[0].address)
    assert set(picks(b, pool, 50)) == {pool[0].address}


def test_panic_when_the_pool_shrank_to_ejected_endpoints_only() -> None:
    b = balancer(Clock(), consecutive_failures=1)
    pool = eps(4)
    b.pick("svc", "c1", pool)
    fail(b, pool[0].address, 1)
    assert b.is_ejected(pool[0].address)
    shrunk = pool[:1]  # the view now has only the ejected one
    assert b.pick("svc", "c1", shrunk) == pool[0]


def test_pick_without_ejections_or_exclusions_is_cheap() -> None:
    """Not a benchmark, a guard: 20k picks over 10 endpoints stay well under a second."""
    import time

    b = balancer(Clock())
    pool = eps(10)
    t0 = time.perf_counter()
    for _ in range(20_000):
        b.pick("svc", "c1", pool)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("size", [3, 9, 60])
def test_exclusions_and_ejections_in_small_and_large_pools(size: int) -> None:
    """The sampling path (large pools) and the scanning path (small) agree on who may go."""
    b = balancer(Clock(), consecutive_failures=1, max_ejected_percent=50.0)
    pool = eps(size)
    b.pick("svc", "c1", pool)
    fail(b, pool[0].address, 1)
    assert b.is_ejected(pool[0].address)
    excluded = frozenset({pool[-1].address})
    got = picks(b, pool, 200 * size, exclude=excluded)
    assert set(got) == {e.address for e in pool[1:-1]}
    # and least-request still rules among the eligible ones
    busy = pool[1].address
    for _ in range(5):
        b.started(busy)
    got = picks(b, pool, 100 * size, exclude=excluded)
    if size == 3:
        assert set(got) == {busy}  # the only eligible one, however busy
    else:
        assert got[busy] == 0, got  # any other candidate has fewer in flight
        assert len(got) == size - 3


def test_retain_forgets_pools_gone_from_the_view() -> None:
    b = balancer(Clock())
    a = eps(3)
    other = tuple(Endpoint(f"10.9.0.{i}:80", "c2", "other") for i in range(4))
    b.pick("svc", "c1", a)
    b.pick("other", "c2", other)
    b.started(other[0].address)  # in flight: kept until it finishes
    assert b.tracked() == 7
    b.retain(lambda service, cluster: service == "svc")
    assert b.tracked() == 4
    b.finished(other[0].address, ok=True)
    assert b.tracked() == 3
    assert b.pick("svc", "c1", a) is not None


# --------------------------------------------------------------------------- properties

OPS = st.lists(
    st.tuples(
        st.sampled_from(["pick", "pick-excl", "ok", "fail", "tick", "view"]),
        st.integers(min_value=0, max_value=11),
        st.floats(min_value=0.0, max_value=40.0),
    ),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(OPS, st.integers(min_value=1, max_value=12), st.sampled_from([0.0, 34.0, 50.0, 100.0]))
def test_invariants_under_random_operations(
    ops: list[tuple[str, int, float]], size: int, percent: float
) -> None:
    """Whatever happens: a pick is eligible, the cap holds, counts never go negative."""
    clock = Clock()
    b = Balancer(
        rng=random.Random(1),
        clock=clock,
        consecutive_failures=2,
        base_ejection=10.0,
        max_ejected_percent=percent,
    )
    pool = eps(size, ready=True)
    for op, n, dt in ops:
        if op == "tick":
            clock.now += dt
        elif op == "view":  # a new view: some endpoints stop being routable
            pool = tuple(
                Endpoint(e.address, "c1", "svc", ready=(i + n) % 4 != 0)
                for i, e in enumerate(eps(size))
            )
        elif op in ("ok", "fail"):
            addr = f"10.0.0.{n % size}:8080"
            b.started(addr)
            b.finished(addr, ok=op == "ok")
        else:
            exclude = frozenset({f"10.0.0.{n % size}:8080"}) if op == "pick-excl" else frozenset()
            ep = b.pick("svc", "c1", pool, exclude=exclude)
            routable = [e for e in pool if e.routable]
            eligible = [e for e in routable if e.address not in exclude]
            ejected = [e for e in routable if b.is_ejected(e.address)]
            if ep is None:
                assert all(b.is_ejected(e.address) for e in eligible)
                assert len(ejected) < len(routable) or not eligible
            else:
                assert ep.routable and ep.address not in exclude
                panic = len(ejected) == len(routable)
                assert panic or not b.is_ejected(ep.address)
        routable = [e for e in pool if e.routable]
        ejected = sum(b.is_ejected(e.address) for e in routable)
        if routable and b.tracked():
            # the cap counts the pool as the balancer last saw it; a "view" op may have
            # shrunk it since, so check against the largest allowed share
            assert ejected <= max(1, int(size * percent / 100)) if percent else ejected == 0
        assert all(b.active(f"10.0.0.{i}:8080") >= 0 for i in range(size))


def test_failures_of_requests_in_flight_during_ejection_do_not_count() -> None:
    """No pick notices the expiry; late failures during the ejection must not carry over."""
    clock = Clock()
    b = balancer(clock, consecutive_failures=3, base_ejection=10.0)
    pool = eps(3)
    b.pick("svc", "c1", pool)
    addr = pool[0].address
    for _ in range(5):
        b.started(addr)  # five in flight
    for _ in range(3):
        b.finished(addr, ok=False)
    assert b.is_ejected(addr)
    b.finished(addr, ok=False)  # late answers while it is out
    clock.now += 10.0
    b.finished(addr, ok=False)  # first failure after the ejection ended
    assert not b.is_ejected(addr)
    fail(b, addr, 1)
    assert not b.is_ejected(addr)
    fail(b, addr, 1)
    assert b.is_ejected(addr)
    assert b.ejected()[addr] == pytest.approx(20.0)  # second ejection: twice as long
