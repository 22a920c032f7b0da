"""The two halves of the apply barrier together: a real ``fedgate apply`` (a separate
process) writes a manifest change in many transactions to an etcd that allows only a
few operations per transaction, while a :class:`ViewWatcher` watches and runtime facts
keep changing. The watcher must never produce a view holding part of the change, and
must end with all of it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.genmanifest import generate
from federation import codec
from federation.etcd import EtcdClient
from federation.model import GatewayRecord, RoutingView
from federation.view import load_view, same_content
from tests.federation.test_watch import LAYOUT, running_watcher
from tests.support.etcd import EtcdCluster

MAX_OPS = 8


@pytest.fixture
def small_etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(size=1, extra_args=["--max-txn-ops", str(MAX_OPS)]) as cluster:
        yield cluster


async def fedgate_apply(etcd: EtcdCluster, path: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "federation.cli", "apply", str(path), "--etcd", etcd.endpoint,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return out.decode()


def config(view: RoutingView) -> tuple[object, ...]:
    return (view.federation, dict(view.clusters), dict(view.services), view.config_revision)


async def test_a_watcher_never_sees_part_of_a_multi_transaction_apply(
    small_etcd: EtcdCluster, tmp_path: Path
) -> None:
    old_path, new_path = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    old_path.write_text(generate(6, name="acme"))
    # every service changes and clusters and services are added: dozens of operations
    new_path.write_text(generate(9, name="acme").replace("attempts: 2", "attempts: 3"))
    async with EtcdClient(small_etcd.endpoints) as client:
        await fedgate_apply(small_etcd, old_path)
        old_rev, _ = await client.get_prefix(LAYOUT.prefix)
        # no coalescing: every watch response is a view of its own, so that nothing but
        # the barrier keeps the apply's transactions together
        async with running_watcher(small_etcd.endpoints, debounce=0.0, max_delay=0.0) as run:
            old = config(await run.reaches(old_rev))
            apply = asyncio.create_task(fedgate_apply(small_etcd, new_path))
            # runtime facts keep moving during the apply: views are produced behind it
            writes = 0
            while not apply.done() and writes < 500:
                record = GatewayRecord(id="gw1", cluster="c0", applied_revision=writes)
                await client.put(LAYOUT.gateway("c0", "gw1"), codec.encode(record))
                writes += 1
                await asyncio.sleep(0.002)  # pacing: a record write every 2 ms
            out = await apply
            assert "behind the barrier" in out.splitlines()[-1], out
            truth = await load_view(client, LAYOUT)
            final = await run.reaches(truth.revision)
            assert same_content(final, truth)
            assert len(final.services) == 18 and len(final.clusters) == 9
            assert all(s.retries.attempts == 3 for s in final.services.values())
            assert final.rejected == ()  # ``generation`` is known, not rejected
            new = config(final)
            stats = run.watcher.stats
            assert stats.barrier_releases >= 1 and stats.barrier == 0 and stats.held == 0
            partial = [v.revision for v in run.views if config(v) not in (old, new)]
            assert partial == [], f"views holding part of the apply at revisions {partial}"
            during = [v for v in run.views if v.revision > old_rev and config(v) == old]
            assert during, "no view was produced while the apply ran"
