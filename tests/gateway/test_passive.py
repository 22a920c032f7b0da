"""gateway.passive: sliding-window error rate and latency EWMA per (service, cluster)."""

from __future__ import annotations

import pytest

from gateway.passive import PassiveStats


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_error_rate_latency_and_count() -> None:
    clock = Clock()
    s = PassiveStats(clock=clock, alpha=0.5)
    for _ in range(8):
        s.record("web", "a", ok=True, latency=0.010)
    s.record("web", "a", ok=False, latency=0.030)
    s.record("web", "a", ok=False, latency=0.030)
    rate, ms, n = s.snapshot()[("web", "a")]
    assert n == 10 and rate == pytest.approx(0.2)
    assert 10.0 < ms < 30.0


def test_old_buckets_leave_the_window() -> None:
    clock = Clock()
    s = PassiveStats(clock=clock, window=10.0)
    for _ in range(5):
        s.record("web", "a", ok=False, latency=0.01)
    clock.t += 5
    for _ in range(5):
        s.record("web", "a", ok=True, latency=0.01)
    assert s.snapshot()[("web", "a")][0] == pytest.approx(0.5)
    clock.t += 6  # the failures are 11 s old now
    rate, _, n = s.snapshot()[("web", "a")]
    assert (rate, n) == (0.0, 5)
    clock.t += 10
    assert ("web", "a") not in s.snapshot()


def test_a_reused_bucket_is_reset() -> None:
    clock = Clock()
    s = PassiveStats(clock=clock, window=3.0)
    s.record("web", "a", ok=False, latency=0.01)
    clock.t += 3  # same ring slot, a new second
    s.record("web", "a", ok=True, latency=0.01)
    assert s.snapshot()[("web", "a")][:1] == (0.0,)


def test_keys_are_separate_and_forgettable() -> None:
    s = PassiveStats(clock=Clock())
    s.record("web", "a", ok=True, latency=0.01)
    s.record("web", "b", ok=False, latency=0.01)
    snap = s.snapshot()
    assert snap[("web", "a")][0] == 0.0 and snap[("web", "b")][0] == 1.0
    s.forget("web", "b")
    assert set(s.snapshot()) == {("web", "a")}


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError):
        PassiveStats(window=0)
    with pytest.raises(ValueError):
        PassiveStats(alpha=0)
