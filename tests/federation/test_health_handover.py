"""A change of health leader leaves no gap: the cluster's summary counts at every revision.

Three real processes of cluster ``a`` (``federation.devstack.health_peer``: the gateway
lease, the record, the health leader, as ``fedgate serve`` runs them) against a real
etcd. A watcher applies the rule every gateway's view applies: the summary counts while
its key is there and its signer has a record. The leader is SIGKILLed, then the next one
is stopped with SIGTERM: at no revision does the summary stop counting.

Before: the summary lived under the lock's lease and vanished with it; the next leader
wrote it again after its campaign (a gap at every handover, ``bench/handover.py``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.devstack.health_peer import SummaryWatch
from federation.etcd import EtcdClient
from federation.keys import KeyLayout
from tests.support.etcd import EtcdCluster
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.slow

LAYOUT = KeyLayout("/hh/")
TTL = 3.0  # the devstack's and the e2e tests' gateway lease


def peer(etcd: EtcdCluster, gateway: str, healthy: int, log: Path) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "federation.devstack.health_peer", "--etcd", etcd.endpoint,
        "--prefix", LAYOUT.prefix, "--cluster", "a", "--id", gateway, "--ttl", f"{TTL:g}",
        "--healthy", str(healthy), "--total", "3",
    ]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def peers(etcd: EtcdCluster, tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    shares = (("g1", 3), ("g2", 2), ("g3", 3))  # healthy endpoints of 3, as each sees them
    procs = {g: peer(etcd, g, h, tmp_path / f"{g}.log") for g, h in shares}
    try:
        yield procs
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


async def test_no_summary_gap_when_the_leader_dies_or_stops(
    etcd: EtcdCluster, peers: dict[str, subprocess.Popen[bytes]]
) -> None:
    client = EtcdClient(etcd.endpoints)
    watch = SummaryWatch(client, LAYOUT, "a")
    try:

        async def leader() -> str:
            kv = await client.get(LAYOUT.health_lock("a"))
            return kv.value.decode() if kv is not None else ""

        async def settled() -> str:
            # every peer registered and reporting, one leader, its summary in place
            _, records = await client.get_prefix(LAYOUT.gateway("a", ""))
            _, reports = await client.get_prefix(LAYOUT.health_part("a", "report"))
            who = await leader()
            kv = await client.get(LAYOUT.health_summary("a", "shop"))
            ok = len(records) == 3 and len(reports) == 2 and who and kv is not None
            return who if ok else ""

        first: str = await async_wait_for(settled, timeout=20, what="three peers, one leader")
        await watch.start()
        assert watch.counts, (watch.signer, watch.live)

        # the leader crashes: its lock lapses first, a follower re-signs the summary
        # before the dead leader's record (and its keys) lapse
        peers[first].send_signal(signal.SIGKILL)
        peers[first].wait(timeout=10)

        def taken_over() -> str:
            return watch.signer if watch.signer not in (None, first) else ""  # type: ignore[return-value]

        second: str = await async_wait_for(taken_over, timeout=3 * TTL, what="re-signed")
        await async_wait_for(lambda: first not in watch.live, timeout=3 * TTL, what="record gone")
        assert watch.gaps == [], f"the summary stopped counting: {watch.gaps}"
        assert watch.counts

        # the new leader stops (SIGTERM, as at a rollout): it hands over, then revokes
        peers[second].send_signal(signal.SIGTERM)
        third = next(g for g in peers if g not in (first, second))

        def handed() -> bool:
            return watch.signer == third and second not in watch.live

        await async_wait_for(handed, timeout=3 * TTL, what="handed over and gone")
        assert peers[second].wait(timeout=10) == 0
        assert watch.gaps == [], f"the summary stopped counting: {watch.gaps}"
    finally:
        await watch.close()
        await client.close()
