"""Circuit breakers, retry rules, the retry budget and backoff (fake time)."""

from __future__ import annotations

import pytest

from federation.model import RETRY_CONDITIONS, CircuitBreaker
from gateway.resilience import (
    IDEMPOTENT_METHODS,
    Breaker,
    CircuitBreakers,
    FailureKind,
    RetryBudget,
    retryable,
)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kw: int | float) -> Breaker:
    cfg = CircuitBreaker(**{"max_pending": 100, "consecutive_failures": 3, "open_for": 10.0, **kw})  # type: ignore[arg-type]
    return Breaker(cfg, clock=clock)


def fail(b: Breaker, n: int = 1) -> None:
    for _ in range(n):
        assert b.try_acquire()
        b.release(ok=False)


# --------------------------------------------------------------------------- breaker


def test_closed_breaker_opens_after_consecutive_failures() -> None:
    b = breaker(Clock())
    assert b.state == "closed"
    fail(b, 2)
    assert b.state == "closed"
    fail(b, 1)
    assert b.state == "open"
    assert not b.try_acquire()


def test_a_success_resets_the_run_of_failures() -> None:
    b = breaker(Clock())
    for _ in range(5):
        fail(b, 2)
        assert b.try_acquire()
        b.release(ok=True)
    assert b.state == "closed"


def test_open_rejects_for_open_for_then_half_open_lets_one_probe() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 9.99
    assert not b.try_acquire()
    assert b.state == "open"
    clock.now += 0.01
    assert b.state == "half-open"
    assert b.try_acquire()  # the probe
    assert not b.try_acquire()  # exactly one
    assert not b.try_acquire()
    assert b.state == "half-open"
    b.release(ok=True)
    assert b.state == "closed"
    assert all(b.try_acquire() for _ in range(10))


def test_failed_probe_opens_again_for_a_full_period() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 10.0
    assert b.try_acquire()
    b.release(ok=False)
    assert b.state == "open"
    clock.now += 9.0
    assert not b.try_acquire()
    clock.now += 1.0
    assert b.try_acquire()  # the next probe
    b.release(ok=True)
    assert b.state == "closed"


def test_late_answers_while_open_change_nothing() -> None:
    clock = Clock()
    b = breaker(clock)
    held = [b.try_acquire() for _ in range(3)]
    assert all(held)
    fail(b, 3)
    assert b.state == "open"
    b.release(ok=True)  # a try from before it opened
    assert b.state == "open"
    assert b.pending == 2


def test_max_pending_limits_concurrent_acquisitions() -> None:
    b = breaker(Clock(), max_pending=3)
    assert [b.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert b.state == "closed"  # overflow is not a failure
    b.release(ok=True)
    assert b.try_acquire()
    assert not b.try_acquire()


def test_half_open_probe_is_subject_to_max_pending() -> None:
    clock = Clock()
    b = breaker(clock, max_pending=1, consecutive_failures=1)
    fail(b, 1)
    clock.now += 10.0
    assert b.try_acquire()  # the probe takes the only slot
    assert not b.try_acquire()
    b.release(ok=True)
    assert b.state == "closed"
    assert b.try_acquire()


def test_breakers_registry_keeps_one_per_pair_and_renews_on_config_change() -> None:
    clock = Clock()
    seen: list[tuple[str, str, str]] = []
    reg = CircuitBreakers(clock=clock, on_change=lambda s, c, st: seen.append((s, c, st)))
    cfg = CircuitBreaker(consecutive_failures=1, open_for=5.0)
    a = reg.get("svc", "c1", cfg)
    assert reg.get("svc", "c1", cfg) is a
    assert reg.get("svc", "c1", CircuitBreaker(consecutive_failures=1, open_for=5.0)) is a
    other = reg.get("svc", "c2", cfg)
    assert other is not a
    fail(a, 1)
    assert reg.states() == {("svc", "c1"): "open", ("svc", "c2"): "closed"}
    clock.now += 5.0
    assert reg.states()[("svc", "c1")] == "half-open"
    assert a.try_acquire()
    a.release(ok=True)
    assert ("svc", "c1", "open") in seen and ("svc", "c1", "half-open") in seen
    assert seen[-1] == ("svc", "c1", "closed")
    changed = reg.get("svc", "c1", CircuitBreaker(consecutive_failures=9))
    assert changed is not a and changed.config.consecutive_failures == 9
    reg.retain(lambda s, c: c == "c1")
    assert set(reg.states()) == {("svc", "c1")}


# --------------------------------------------------------------------------- retryable

ALL = RETRY_CONDITIONS
DEFAULT = frozenset({"connect-failure", "reset", "502", "503", "504"})
K = FailureKind


@pytest.mark.parametrize(
    ("method", "kind", "status", "conditions", "sent", "expected"),
    [
        # idempotent methods: whatever the conditions allow
        (b"GET", K.CONNECT, None, DEFAULT, False, True),
        (b"GET", K.RESET, None, DEFAULT, True, True),
        (b"GET", K.TIMEOUT, None, DEFAULT, True, False),  # timeout not in the default
        (b"GET", K.TIMEOUT, None, ALL, True, True),
        (b"GET", K.STATUS, 502, DEFAULT, True, True),
        (b"GET", K.STATUS, 503, DEFAULT, True, True),
        (b"GET", K.STATUS, 504, DEFAULT, True, True),
        (b"GET", K.STATUS, 500, DEFAULT, True, False),
        (b"GET", K.STATUS, 500, frozenset({"5xx"}), True, True),
        (b"GET", K.STATUS, 599, frozenset({"5xx"}), True, True),
        (b"GET", K.STATUS, 404, ALL, True, False),
        (b"GET", K.STATUS, 429, ALL, True, False),
        (b"GET", K.STATUS, None, ALL, True, False),
        (b"GET", K.RESET, None, frozenset({"5xx"}), True, True),  # Envoy: 5xx covers resets
        (b"GET", K.CONNECT, None, frozenset({"503"}), False, False),
        (b"GET", K.CONNECT, None, frozenset(), False, False),
        (b"HEAD", K.RESET, None, DEFAULT, True, True),
        (b"OPTIONS", K.STATUS, 503, DEFAULT, True, True),
        (b"TRACE", K.STATUS, 503, DEFAULT, True, True),
        (b"PUT", K.RESET, None, DEFAULT, True, True),
        (b"DELETE", K.STATUS, 502, DEFAULT, True, True),
        # non-idempotent: only when nothing reached the upstream
        (b"POST", K.CONNECT, None, DEFAULT, False, True),
        (b"POST", K.CONNECT, None, DEFAULT, True, True),
        (b"POST", K.RESET, None, DEFAULT, False, True),
        (b"POST", K.RESET, None, DEFAULT, True, False),
        (b"POST", K.TIMEOUT, None, ALL, True, False),
        (b"POST", K.TIMEOUT, None, ALL, False, True),
        (b"POST", K.STATUS, 503, DEFAULT, True, False),
        (b"PATCH", K.STATUS, 502, ALL, True, False),
        (b"PATCH", K.CONNECT, None, ALL, False, True),
        (b"PATCH", K.CONNECT, None, frozenset({"reset"}), False, False),
        (b"get", K.RESET, None, DEFAULT, True, False),  # methods are case-sensitive
    ],
)
def test_retryable_matrix(
    method: bytes,
    kind: FailureKind,
    status: int | None,
    conditions: frozenset[str],
    sent: bool,
    expected: bool,
) -> None:
    got = retryable(
        method=method, kind=kind, status=status, conditions=conditions, request_sent=sent
    )
    assert got is expected


def test_idempotent_methods() -> None:
    assert frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"}) == (
        IDEMPOTENT_METHODS
    )


# --------------------------------------------------------------------------- budget


def test_budget_limits_retries_to_a_share_of_requests_under_load() -> None:
    clock = Clock()
    budget = RetryBudget(clock=clock)
    for _ in range(1000):
        budget.on_request("svc")
    granted = sum(budget.try_retry("svc", 20.0) for _ in range(500))
    assert granted == 200
    assert budget.usage("svc") == (1000, 200)
    assert not budget.try_retry("svc", 20.0)
    assert budget.try_retry("other", 20.0)  # per service


def test_budget_keeps_a_minimum_for_low_traffic() -> None:
    budget = RetryBudget(clock=Clock())
    budget.on_request("svc")
    assert [budget.try_retry("svc", 20.0) for _ in range(5)] == [True, True, True, False, False]
    assert [budget.try_retry("idle", 0.0) for _ in range(4)] == [True, True, True, False]


def test_budget_window_slides() -> None:
    clock = Clock(0.0)
    budget = RetryBudget(clock=clock, window=10.0, buckets=10)
    for _ in range(100):
        budget.on_request("svc")
    assert sum(budget.try_retry("svc", 10.0) for _ in range(50)) == 10
    clock.now = 5.0
    for _ in range(100):
        budget.on_request("svc")
    assert sum(budget.try_retry("svc", 10.0) for _ in range(50)) == 10  # 200 req: 20 in all
    clock.now = 10.5  # the first second's bucket (100 req, 10 retries) left the window
    assert budget.usage("svc") == (100, 10)
    assert not budget.try_retry("svc", 10.0)
    clock.now = 100.0  # long idle: all gone, the minimum applies again
    assert budget.usage("svc") == (0, 0)
    assert sum(budget.try_retry("svc", 10.0) for _ in range(10)) == 3


def test_budget_under_a_failure_storm_retry_ratio_stays_bounded() -> None:
    """Every request fails and asks to retry twice: retries stay at ~budget of requests."""
    clock = Clock(0.0)
    budget = RetryBudget(clock=clock)
    requests = retries = 0
    for tick in range(3000):  # 30 s at 100 requests/s
        clock.now = tick / 100.0
        budget.on_request("svc")
        requests += 1
        for _ in range(2):
            if budget.try_retry("svc", 20.0):
                retries += 1
    assert retries <= 0.2 * requests + 3 * 3
    assert retries >= 0.18 * requests


# --------------------------------------------------------------------------- backoff


def test_budget_retain_forgets_services() -> None:
    budget = RetryBudget(clock=Clock())
    budget.on_request("a")
    budget.on_request("b")
    budget.retain(lambda name: name == "a")
    assert budget.usage("a") == (1, 0)
    assert budget.usage("b") == (0, 0)


def test_a_lost_probe_is_replaced_after_open_for() -> None:
    """A probe whose answer never comes (a caller bug) must not wedge the breaker."""
    clock = Clock()
    b = breaker(clock, consecutive_failures=1)
    fail(b, 1)
    clock.now += 10.0
    assert b.try_acquire()  # the probe, never released
    clock.now += 9.0
    assert not b.try_acquire()
    clock.now += 1.0
    assert b.try_acquire()  # another probe
    b.release(ok=True)
    assert b.state == "closed"
