"""Failover end to end: real gateway processes, real etcd, real backends, steady load.

Three regions on distinct loopback addresses: two clouds at tier 0 (aws, gcp) and an
on-prem site at tier 1, one ``fedgate serve`` per region. Clients send >= 100 GETs per
second to the aws gateway over keep-alive connections; each test injects one fault and
checks what clients saw (failed requests, who answered, how long a request took) and
what the gateways decided (the explain API).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest

from federation import codec
from federation.etcd import EtcdClient
from federation.keys import KeyLayout
from federation.liveness import GatewayLease
from federation.model import GatewayRecord, HealthState, Observation
from tests.e2e.conftest import (
    AWS,
    GCP,
    ONPREM,
    PER_TRY_TIMEOUT,
    Drill,
    FailoverFederation,
    Load,
    Result,
    analyse,
    describe,
    served_share,
    windows,
)
from tests.support.wait import async_wait_for, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

RATE = 150.0
SLOW = 0.25  # a GET slower than this was held up by a failed try


@pytest.fixture
def federation(federation: FailoverFederation) -> FailoverFederation:
    """A drill starts from a converged federation: every gateway plans with every
    cluster live and healthy. Each gateway answering ``/readyz`` is not that: under a
    CPU hog the first drill began while the entry gateway had no live gateway of gcp in
    its view yet (which placement then took for a recovery: gcp at the floor share,
    then the failback ramp, before traffic settled on it)."""
    last: list[str] = []
    try:
        wait_for(lambda: converged(federation, last), timeout=30.0, interval=0.1,
                 what="every gateway sees every cluster live and healthy")  # fmt: skip
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {last}") from None
    return federation


def converged(fed: FailoverFederation, last: list[str]) -> bool:
    """Every gateway's plan has every cluster live, healthy and usable (``last``: what
    was not, the last time)."""
    last.clear()
    for entry in fed.gateways:
        candidates = fed.explain(entry).get("candidates", [])
        if len(candidates) != len(fed.topology):
            last.append(f"{entry}: {len(candidates)} candidates")
        for c in candidates:
            reason = str(c.get("reason", ""))
            if c.get("state") != "healthy" or reason.startswith(("excluded", "not usable")):
                last.append(f"{entry} -> {c.get('cluster')}: {c.get('state')}, {reason}")
    return not last


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Admin calls are blocking urllib: keep them off the event loop the load runs on."""
    return await asyncio.to_thread(fn, *args)


async def steady_on(load: Load, cluster: str, n: int = 40, timeout: float = 15.0) -> None:
    """Wait until the last ``n`` requests were all answered by ``cluster``."""

    def ok() -> bool:
        last = load.results[-n:]
        return len(last) == n and all(r.ok and r.cluster == cluster for r in last)

    try:
        await async_wait_for(
            ok, timeout=timeout, interval=0.05, what=f"steady traffic on {cluster}"
        )
    except AssertionError as exc:  # say what the traffic did instead
        seen = collections.Counter(
            (r.cluster, r.status, r.error[:60]) for r in load.results[-4 * n :]
        )
        raise AssertionError(
            f"{exc}; last {4 * n} requests by (cluster, status, error): {seen}"
        ) from None


async def plan_avoids(
    fed: FailoverFederation, entry: str, cluster: str, *, timeout: float, why: str = ""
) -> float:
    """Seconds until the entry gateway gives ``cluster`` no first tries (and, if given,
    the reason says ``why``)."""
    start = time.monotonic()

    async def check() -> bool:
        explained = await call(fed.explain, entry)
        for c in explained.get("candidates", []):
            if c["cluster"] == cluster:
                return bool(c.get("share", 0) == 0 and why in str(c.get("reason", "")))
        return cluster not in explained.get("plan", [])

    await async_wait_for(check, timeout=timeout, interval=0.05, what=f"{entry} avoids {cluster}")
    return time.monotonic() - start


def report(name: str, drill: Drill, **figures: object) -> None:
    """One line of figures per drill (shown with ``pytest -s``)."""

    def fmt(v: object) -> str:
        if isinstance(v, list):
            return str([round(x, 2) for x in v])
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    extra = " ".join(f"{k}={fmt(v)}" for k, v in figures.items())
    print(
        f"\n[failover] {name}: requests={drill.requests} failed={drill.failed} "
        f"shift={drill.shift} max_latency={drill.max_latency:.3f} {extra}"
    )


def ramp_shares(results: list[Result], cluster: str, *, start: float, end: float) -> list[float]:
    return [served_share(g, cluster) for g in windows(results, start=start, end=end, width=0.5)]


def assert_ramped_back_without_flapping(shares: list[float], trace: str) -> None:
    assert shares, trace
    assert min(shares[-2:]) >= 0.95, f"traffic did not come back: {shares}\n{trace}"
    ramping = [s for s in shares if 0.05 < s < 0.9]
    assert len(ramping) >= 2, f"came back as a step, not a ramp: {shares}"
    top = next(i for i, s in enumerate(shares) if s >= 0.95)
    assert min(shares[top:]) >= 0.85, f"flapped after returning: {shares}"
    drops = [(a, b) for a, b in pairwise(shares) if b < a - 0.3]
    assert not drops, f"share fell back while ramping: {shares}"


async def test_local_backends_killed_zero_failures_and_gradual_return(
    federation: FailoverFederation,
) -> None:
    fed = federation
    async with Load(fed.entry(AWS), rate=RATE) as load:
        await steady_on(load, AWS)
        steady_at = fault_at = time.monotonic()
        fed.kill_backends(AWS)
        left_after = await plan_avoids(fed, AWS, AWS, timeout=5.0)
        await asyncio.sleep(max(0.0, fault_at + 3.0 - time.monotonic()))  # load runs on
        restore_at = time.monotonic()
        fed.restore_backends(AWS)
        await async_wait_for(
            lambda: all(r.cluster == AWS for r in load.results[-60:]),
            timeout=15.0,
            interval=0.1,
            what="traffic back on aws",
        )
        await asyncio.sleep(1.5)  # pacing: keep watching, no flapping after the return
        end = time.monotonic()
    results = load.results
    drill = analyse(results, fault_at=fault_at, end=restore_at, bad={AWS}, slow=SLOW)
    trace = describe(drill)
    assert drill.requests >= 0.9 * RATE * 3.0, trace
    assert drill.failed == 0, trace
    assert drill.shift is not None and drill.shift <= 1.0, trace
    assert left_after <= 1.0, f"placement still chose aws {left_after:.2f}s after the fault"
    everyone = analyse(results, fault_at=steady_at, end=end, bad=set(), slow=10.0)
    assert everyone.failed == 0, describe(everyone)
    shares = ramp_shares(results, AWS, start=restore_at, end=end)
    report("local backends killed", drill, left_after=left_after, ramp=shares)
    assert_ramped_back_without_flapping(shares, trace)


async def test_remote_gateway_sigkilled_peers_stop_sending_within_ttl(
    federation: FailoverFederation,
) -> None:
    fed = federation
    fed.kill_backends(AWS)
    await plan_avoids(fed, AWS, AWS, timeout=10.0)  # the aws gateway sends to gcp now
    async with Load(fed.entry(AWS), rate=RATE) as load:
        await steady_on(load, GCP)
        fault_at = time.monotonic()
        fed.kill_gateway(GCP)
        gone_after = await plan_avoids(
            fed, AWS, GCP, timeout=fed.lease_ttl + 4.0, why="no live gateway"
        )
        await asyncio.sleep(max(0.0, fault_at + fed.lease_ttl + 2.5 - time.monotonic()))
        end = time.monotonic()
    drill = analyse(load.results, fault_at=fault_at, end=end, bad={GCP}, slow=SLOW)
    trace = describe(drill)
    assert drill.failed == 0, trace
    assert gone_after <= fed.lease_ttl + 2.0, f"gcp still a candidate after {gone_after:.2f}s"
    assert drill.shift is not None and drill.shift <= 1.0, trace
    report("remote gateway SIGKILL", drill, gone_after=gone_after)
    late = [r for r in load.results if r.sent >= fault_at + 1.0]
    assert late and all(r.cluster == ONPREM for r in late), trace


async def test_blackholed_cluster_bounded_by_per_try_timeout_then_shifted_and_back(
    federation: FailoverFederation,
) -> None:
    fed = federation
    fed.kill_backends(AWS)
    await plan_avoids(fed, AWS, AWS, timeout=10.0)  # the aws gateway sends to gcp now
    async with Load(fed.entry(AWS), rate=RATE) as load:
        await steady_on(load, GCP)
        steady_at = time.monotonic()
        fault_at = time.monotonic()
        fed.pause_gateway(GCP)  # accepts connections, never answers
        await asyncio.sleep(3.0)  # pacing: the blackhole lasts 3 s under load
        restore_at = time.monotonic()
        fed.resume_gateway(GCP)
        await async_wait_for(
            lambda: all(r.cluster == GCP for r in load.results[-60:]),
            timeout=20.0,
            interval=0.1,
            what="traffic back on gcp",
        )
        await asyncio.sleep(1.5)  # pacing: keep watching after the return
        end = time.monotonic()
    drill = analyse(load.results, fault_at=fault_at, end=restore_at, bad={GCP}, slow=SLOW)
    trace = describe(drill)
    assert drill.failed == 0, trace
    # a request caught by the blackhole waits out its per-try timeouts, then is retried
    # elsewhere (the data plane gives a cluster up to two tries before the next one)
    assert drill.max_latency <= 2 * PER_TRY_TIMEOUT + 0.5, trace
    assert drill.shift is not None and drill.shift <= 1.5, trace
    everyone = analyse(load.results, fault_at=steady_at, end=end, bad=set(), slow=10.0)
    assert everyone.failed == 0, describe(everyone)
    shares = ramp_shares(load.results, GCP, start=restore_at, end=end)
    report("blackholed gateway", drill, ramp=shares)
    assert_ramped_back_without_flapping(shares, trace)


async def test_every_tier0_cluster_down_the_onprem_site_serves(
    federation: FailoverFederation,
) -> None:
    fed = federation
    async with Load(fed.entry(AWS), rate=RATE) as load:
        await steady_on(load, AWS)
        fault_at = time.monotonic()
        fed.kill_backends(AWS)
        fed.kill_backends(GCP)
        await plan_avoids(fed, AWS, GCP, timeout=5.0)
        await asyncio.sleep(max(0.0, fault_at + 3.0 - time.monotonic()))
        end = time.monotonic()
    drill = analyse(load.results, fault_at=fault_at, end=end, bad={AWS, GCP}, slow=SLOW)
    trace = describe(drill)
    assert drill.failed == 0, trace
    assert drill.shift is not None and drill.shift <= 1.0, trace
    report("every tier-0 region down", drill)
    late = [r for r in load.results if r.sent >= fault_at + 1.0]
    assert served_share(late, ONPREM) == 1.0, trace


async def test_one_lying_observer_does_not_take_a_cluster_out(
    federation: FailoverFederation,
) -> None:
    fed = federation
    fed.kill_backends(AWS)
    await plan_avoids(fed, AWS, AWS, timeout=10.0)  # the aws gateway sends to gcp now
    assert fed.etcd is not None
    layout = KeyLayout()
    client = EtcdClient([fed.etcd.endpoint])
    lease = GatewayLease(client, ttl=5.0)
    try:
        async with Load(fed.entry(AWS), rate=RATE) as load:
            await steady_on(load, GCP)
            await lease.start()
            # a "gateway" of gcp itself claims gcp has no healthy endpoint for the service:
            # its local view goes, like every follower's, to gcp's health leader
            await lease.put(
                layout.gateway(GCP, "liar"), codec.encode(GatewayRecord(id="liar", cluster=GCP))
            )
            lie = Observation(
                observer="liar",
                observer_cluster=GCP,
                service="shop",
                cluster=GCP,
                state=HealthState.UNHEALTHY,
                healthy=0,
                total=2,
                at=time.time(),
            )
            await lease.put(layout.health_report(GCP, "liar"), codec.encode([lie]))

            async def lie_counted() -> dict[str, Any] | None:
                # gcp's summary folds it in as a minority of gcp's gateways: degraded
                health = await call(fed.global_health, AWS)
                shop = next(s for s in health["services"] if s["name"] == "shop")
                row = next(c for c in shop["clusters"] if c["cluster"] == GCP)
                return row if row["state"] == "degraded" else None

            row = await async_wait_for(lie_counted, timeout=10, interval=0.1, what="the lie")
            counted_at = time.monotonic()
            await asyncio.sleep(3.0)  # pacing: traffic keeps flowing while the liar lies
            end = time.monotonic()
            final = await lie_counted()
    finally:
        await lease.stop(revoke=True)
        await client.close()
    assert row["state"] != "unhealthy", row
    assert final is not None and final["state"] != "unhealthy", final
    assert row["healthy_endpoints"] == 2, row
    after = [r for r in load.results if counted_at <= r.sent < end]
    assert len(after) >= 0.9 * RATE * 3.0
    assert all(r.ok for r in after), [r.error for r in after if not r.ok][:5]
    assert served_share(after, GCP) >= 0.99, {r.cluster for r in after}
