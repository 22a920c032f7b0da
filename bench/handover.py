"""A change of health leader: how long a cluster's summary stops counting.

A real etcd and ``--peers`` real processes of one cluster
(``federation.devstack.health_peer``: the gateway lease, the record and the health
leader, as ``fedgate serve`` runs them, lease TTL ``--ttl``). Each round stops the
current leader, by SIGKILL (a crash) or by SIGTERM (a rollout), alternately, and starts
it again once a follower leads. A watcher (``SummaryWatch``) applies the rule of every
gateway's view: the summary counts while its key is there and its signer has a record.

Columns, per kind of stop:
  rounds     handovers measured
  gaps       rounds in which the summary stopped counting at some revision
  gap p50 / max   how long it stopped counting in those rounds (ms; 0 when one watch
             response held the stop and the return)
  takeover p50 / max   stop -> the summary signed by another gateway (s)

and the handovers nobody asked for (a leader's lock lapsing under load: the lock's TTL
is a third of the gateway lease's).

    .venv/bin/python bench/handover.py [--rounds 20] [--peers 3] [--ttl 3]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from federation.devstack.etcd import EtcdCluster  # noqa: E402
from federation.devstack.health_peer import SummaryWatch  # noqa: E402
from federation.etcd import EtcdClient  # noqa: E402
from federation.keys import KeyLayout  # noqa: E402

LAYOUT = KeyLayout("/bench/")


def start_peer(etcd: EtcdCluster, gateway: str, ttl: float, log: Path) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "federation.devstack.health_peer", "--etcd", etcd.endpoint,
        "--prefix", LAYOUT.prefix, "--cluster", "a", "--id", gateway, "--ttl", f"{ttl:g}",
    ]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


async def wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} not reached within {timeout:.0f} s")
        await asyncio.sleep(0.02)  # poll under a deadline


async def bench(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="fedgate-handover-"))
    with EtcdCluster(size=1, base_dir=work / "etcd") as etcd:
        client = EtcdClient(etcd.endpoints)
        names = [f"g{i + 1}" for i in range(args.peers)]
        procs = {g: start_peer(etcd, g, args.ttl, work / f"{g}.log") for g in names}
        watch = SummaryWatch(client, LAYOUT, "a")
        # per kind of stop: (stopped counting at some revision, for how long, takeover)
        results: dict[str, list[tuple[bool, float, float]]] = {"SIGKILL": [], "SIGTERM": []}
        try:

            async def settled() -> bool:
                _, records = await client.get_prefix(LAYOUT.gateway("a", ""))
                _, reports = await client.get_prefix(LAYOUT.health_part("a", "report"))
                lock = await client.get(LAYOUT.health_lock("a"))
                return (
                    len(records) == args.peers
                    and len(reports) == args.peers - 1
                    and (lock is not None and watch.counts)
                )

            await watch.start()
            await wait(settled, 30, "every peer registered, one leader")
            handovers = watch.handovers
            for n in range(args.rounds):
                kind = "SIGKILL" if n % 2 == 0 else "SIGTERM"
                lock = await client.get(LAYOUT.health_lock("a"))
                assert lock is not None
                leader = lock.value.decode()
                before = len(watch.gaps)
                stopped = time.monotonic()
                procs[leader].send_signal(signal.SIGKILL if kind == "SIGKILL" else signal.SIGTERM)
                limit = 5 * args.ttl
                await wait(lambda: watch.signer not in (None, leader), limit, "takeover")  # noqa: B023
                took = time.monotonic() - stopped
                await wait(lambda: leader not in watch.live, limit, "record gone")  # noqa: B023
                await wait(lambda: watch.counts, 5 * args.ttl, "summary counts")
                gaps = watch.gaps[before:]
                results[kind].append((bool(gaps), sum(g[1] for g in gaps), took))
                procs[leader].wait(timeout=10)
                procs[leader] = start_peer(etcd, leader, args.ttl, work / f"{leader}.log")
                await wait(settled, 30, "the stopped peer back")
            spurious = watch.handovers - handovers - args.rounds
        finally:
            await watch.close()
            await client.close()
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
                p.wait(timeout=10)
    print(f"{args.peers} peers, gateway lease TTL {args.ttl:g} s, {args.rounds} rounds")
    print(f"{'stop':8} {'rounds':>6} {'gaps':>5} {'gap p50':>8} {'gap max':>8} "
          f"{'takeover p50':>13} {'max':>6}")  # fmt: skip
    for kind, rows in results.items():
        if not rows:
            continue
        gap_ms = [g * 1000 for had, g, _ in rows if had] or [0.0]
        takes = [t for _, _, t in rows]
        print(
            f"{kind:8} {len(rows):6d} {sum(had for had, _, _ in rows):5d} "
            f"{statistics.median(gap_ms):8.1f} {max(gap_ms):8.1f} "
            f"{statistics.median(takes):13.2f} {max(takes):6.2f}"
        )
    print(f"handovers nobody asked for: {spurious}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--ttl", type=float, default=3.0)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
