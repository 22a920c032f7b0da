"""A health peer: what one gateway runs for its cluster's health, without a data plane.

``python -m federation.devstack.health_peer --etcd URL --prefix /fedgate/ --cluster a
--id a-gw-1 --ttl 3 --healthy 3 --total 3`` runs the parts of ``fedgate serve`` that a
leader change involves: the gateway lease, the gateway's ``GatewayRecord`` under it, and
a ``HealthLeader`` over a fixed local view (service ``shop`` of the cluster with
``healthy`` of ``total`` endpoints up), written as the gateway's report while it follows,
as ``HealthReporter`` does. SIGTERM stops it the way ``fedgate serve`` stops (the
leader task is cancelled, then the record is deleted and the lease revoked); SIGKILL is
a crash. It prints ``ready`` once its record is written.

:class:`SummaryWatch` watches, as any gateway's view does, whether a cluster's summary of
a service *counts*: the key is there and its signer has a ``GatewayRecord``
(``federation.aggregate`` reads only live observers). Used by the leader-handover test
(``tests/federation/test_health_handover.py``) and ``bench/handover.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable

from federation import codec
from federation.etcd import EtcdClient, EtcdError, WatchStream
from federation.health_leader import HealthLeader
from federation.health_summary import compact
from federation.keys import KeyLayout
from federation.liveness import GatewayLease, GatewayRegistration
from federation.model import GatewayRecord, HealthState, Observation

SERVICE = "shop"


class FixedView:
    """A reporter with a fixed local view: handed to the leader, or written as a report."""

    def __init__(self, cluster: str, gateway_id: str, healthy: int, total: int) -> None:
        self.cluster, self.gateway_id = cluster, gateway_id
        state = HealthState.HEALTHY if healthy else HealthState.UNHEALTHY
        if 0 < healthy < total:
            state = HealthState.DEGRADED
        self.view = (
            Observation(gateway_id, cluster, SERVICE, cluster, state, healthy, total, at=1.0),
        )
        self.following = asyncio.Event()
        self.following.set()

    def lead(self, sink: Callable[[tuple[Observation, ...]], None]) -> None:
        self.following.clear()
        sink(self.view)

    def follow(self) -> None:
        self.following.set()


async def _report(view: FixedView, lease: GatewayLease, key: str) -> None:
    """While following: the report, written again after every new lease or leadership."""
    written: int | None = None
    while True:
        await view.following.wait()
        if lease.lease_id is not None and written != lease.lease_id:
            with contextlib.suppress(EtcdError):
                await lease.put(key, codec.encode(compact(view.view)))
                written = lease.lease_id
        await asyncio.sleep(0.1)
        if not view.following.is_set():
            written = None  # the leader deletes its report: write it again on stepping down


class SummaryWatch:
    """Whether ``cluster``'s summary of ``service`` counts, revision by revision.

    ``gaps``: one ``[first revision, seconds]`` per stretch of revisions where it did not
    (the key absent, or signed by a gateway without a record); the seconds are measured
    between the watch responses that opened and closed the stretch (0.0 when one
    response held both)."""

    def __init__(
        self, client: EtcdClient, layout: KeyLayout, cluster: str, service: str = SERVICE
    ) -> None:
        self._client, self._layout = client, layout
        self._records = layout.gateway(cluster, "")
        self._summary = layout.health_summary(cluster, service)
        self.live: set[str] = set()
        self.signer: str | None = None
        self.handovers = 0  # times the summary was signed by another gateway
        self.gaps: list[list[float]] = []
        self._open_at: float | None = None
        self._last: str | None = None  # the last signer seen
        self._stream: WatchStream | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def counts(self) -> bool:
        return self.signer is not None and self.signer in self.live

    async def start(self) -> None:
        revision, kvs = await self._client.get_prefix(self._layout.prefix)
        for kv in kvs:
            self._apply(kv.key, kv.value, deleted=False)
        self._stream = await self._client.watch(self._layout.prefix, start_revision=revision + 1)
        self._task = asyncio.create_task(self._follow(self._stream), name="summary-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._stream is not None:
            await self._stream.aclose()

    def _apply(self, key: str, value: bytes, *, deleted: bool) -> None:
        if key.startswith(self._records):
            gateway = key[len(self._records) :]
            if deleted:
                self.live.discard(gateway)
            else:
                self.live.add(gateway)
        elif key == self._summary:
            signer = None
            if not deleted:
                with contextlib.suppress(codec.CodecError):
                    lines = codec.decode_list(Observation, value)
                    signer = lines[0].observer if lines else None
            if signer is not None and self._last is not None and signer != self._last:
                self.handovers += 1
            self.signer = signer
            self._last = signer or self._last

    async def _follow(self, stream: WatchStream) -> None:
        while True:
            batch = await stream.next()
            now = time.monotonic()
            revision = -1
            for event in batch.events:
                if event.kv.mod_revision != revision and revision >= 0:
                    self._settle(revision, now)  # the state after each revision
                revision = event.kv.mod_revision
                self._apply(event.kv.key, event.kv.value, deleted=event.kind == "delete")
            if revision >= 0:
                self._settle(revision, now)

    def _settle(self, revision: int, now: float) -> None:
        if not self.counts and self._open_at is None:
            self._open_at = now
            self.gaps.append([float(revision), 0.0])
        elif self.counts and self._open_at is not None:
            self.gaps[-1][1] = now - self._open_at
            self._open_at = None


async def run(args: argparse.Namespace) -> int:
    layout = KeyLayout(args.prefix)
    client = EtcdClient([args.etcd], timeout=2.0)
    lease = GatewayLease(client, ttl=args.ttl)
    view = FixedView(args.cluster, args.id, args.healthy, args.total)
    record = GatewayRecord(id=args.id, cluster=args.cluster, started_at=time.time())
    registration = GatewayRegistration(lease, layout, record)
    leader = HealthLeader(client=client, layout=layout, reporter=view, lease=lease, ttl=args.ttl)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await lease.start()
    await registration.start()
    await lease.wait_granted(timeout=10)
    tasks = [
        asyncio.create_task(leader.run(), name="leader"),
        asyncio.create_task(_report(view, lease, layout.health_report(args.cluster, args.id))),
    ]
    print("ready", flush=True)
    await stop.wait()
    for task in tasks:  # as fedgate serve: cancel, gather, then the record and the lease
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(Exception):
        await registration.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(lease.stop(revoke=True), timeout=2.0)
    with contextlib.suppress(Exception):
        await client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="health_peer", description=__doc__.splitlines()[0])
    parser.add_argument("--etcd", required=True)
    parser.add_argument("--prefix", default="/fedgate/")
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--ttl", type=float, default=3.0)
    parser.add_argument("--healthy", type=int, default=3)
    parser.add_argument("--total", type=int, default=3)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
