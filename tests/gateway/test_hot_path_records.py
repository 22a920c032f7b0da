"""The request path's bookkeeping kept cheap: what each shortcut must still give.

A plan whose first cluster is certain is returned without a random draw; passive stats
count the current second in plain attributes and still slide their window; the fast
path's upstream head keeps its header block by what makes it (never by the target).
"""

from __future__ import annotations

import random

import pytest

from gateway import hygiene
from gateway.passive import PassiveStats
from gateway.placement import Placement
from tests.gateway.test_placement import ALL_HEALTHY, Clock, service, view


class CountingRandom(random.Random):
    draws = 0

    def random(self) -> float:
        self.draws += 1
        return super().random()


def test_a_certain_first_cluster_costs_no_draw_and_the_same_plan() -> None:
    rng = CountingRandom(1)
    p = Placement("aws", clock=Clock(), rng=rng)
    v, svc = view(ALL_HEALTHY), service()
    plans = {p.plan(v, svc) for _ in range(50)}
    assert rng.draws == 0
    assert len(plans) == 1
    (plan,) = plans
    assert plan[0] == "aws" and set(plan) == {"aws", "gcp", "onprem"}


def test_an_ejection_in_the_plan_still_expires_by_the_clock() -> None:
    clock = Clock()
    p = Placement("aws", clock=clock, rng=random.Random(1), consecutive_failures=1, eject_for=2.0)
    v, svc = view(ALL_HEALTHY), service()
    assert p.plan(v, svc)[0] == "aws"
    p.local_failure("web", "aws")
    assert p.plan(v, svc)[0] != "aws"
    assert {p.plan(v, svc)[0] for _ in range(200)} == {"gcp"}
    clock.t += 2.5  # the plan's deadline is read from the clock: back, ramping
    assert "aws" in {p.plan(v, svc)[0] for _ in range(500)}


def test_passive_window_slides_with_the_current_second_in_attributes() -> None:
    t = [100.0]
    s = PassiveStats(clock=lambda: t[0], window=3.0)
    s.record("web", "a", False, 0.01)
    assert s.snapshot()[("web", "a")][2] == 1
    s.record("web", "a", True, 0.01)  # same second, after a snapshot
    assert s.snapshot()[("web", "a")][:3:2] == (0.5, 2)
    t[0] += 1
    s.record("web", "a", True, 0.01)
    t[0] += 1
    rate, _, n = s.snapshot()[("web", "a")]
    assert n == 3 and rate == pytest.approx(1 / 3)
    t[0] += 1  # the first second leaves the 3 s window
    assert s.snapshot()[("web", "a")][2] == 1
    t[0] += 2
    assert ("web", "a") not in s.snapshot()
    t[0] += 100  # a long pause: nothing old comes back
    s.record("web", "a", True, 0.01)
    assert s.snapshot()[("web", "a")][:3:2] == (0.0, 1)


def _head(target: bytes, headers: list[tuple[bytes, bytes]], **kw: object) -> bytes:
    args: dict[str, object] = {
        "client_ip": "127.0.0.9", "scheme": "http", "trust_forwarded": False,
        "traceparent": None, "hops": 1,
    }  # fmt: skip
    args.update(kw)
    return hygiene.upstream_head(b"GET", target, b"a.test", headers, **args)  # type: ignore[arg-type]


def _expected(target: bytes, headers: list[tuple[bytes, bytes]], **kw: object) -> bytes:
    args: dict[str, object] = {
        "client_ip": "127.0.0.9", "scheme": "http", "trust_forwarded": False,
        "traceparent": None, "hops": 1,
    }  # fmt: skip
    args.update(kw)
    out = hygiene.request_headers(headers, host=b"a.test", **args)  # type: ignore[arg-type]
    block = b"".join(n + b": " + v + b"\r\n" for n, v in out if n != b"host")
    return b"GET " + target + b" HTTP/1.1\r\nhost: a.test\r\n" + block + b"\r\n"


def test_upstream_head_block_kept_by_what_makes_it_never_the_target() -> None:
    hygiene._BLOCKS.clear()
    headers = [(b"host", b"a.test"), (b"user-agent", b"wrk")]
    for i in range(5):
        target = b"/?n=%d" % i
        assert _head(target, headers) == _expected(target, headers)
    assert len(hygiene._BLOCKS) == 1
    # another client, another header value, another trust: each its own block
    other = _head(b"/x", headers, client_ip="127.0.0.7")
    assert other == _expected(b"/x", headers, client_ip="127.0.0.7")
    assert b"x-forwarded-for: 127.0.0.7" in other
    changed = [(b"host", b"a.test"), (b"user-agent", b"curl")]
    assert _head(b"/x", changed) == _expected(b"/x", changed)
    xff = [*headers, (b"x-forwarded-for", b"10.0.0.1")]
    assert b"10.0.0.1, 127.0.0.9" in _head(b"/x", xff, trust_forwarded=True)
    assert b"10.0.0.1" not in _head(b"/x", xff)
    assert len(hygiene._BLOCKS) == 5
    # a traceparent differs per request: never kept; nor a large head
    tp = b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"
    assert _head(b"/t", headers, traceparent=tp) == _expected(b"/t", headers, traceparent=tp)
    big = [*headers, (b"cookie", b"c" * 3000)]
    assert _head(b"/b", big) == _expected(b"/b", big)
    assert len(hygiene._BLOCKS) == 5
