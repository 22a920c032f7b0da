"""How fast a write to etcd reaches every gateway's routing view.

Starts its own etcd (the test fixture's ``EtcdCluster``), registers the example
manifest, starts ten watcher PROCESSES (each a ``ViewWatcher``, as in a gateway), then
writes an endpoints key every ``--interval`` seconds (``--writes`` times). Each watcher
prints ``<revision> <monotonic time>`` for every view it applies; the latency of a write
for a watcher is the time from just before the write was sent to the moment that
watcher applied a view at or past its revision (CLOCK_MONOTONIC is shared by all
processes on the machine). Prints p50 / p99 / max over all (write, watcher) pairs.

    .venv/bin/python bench/propagation.py [--watchers 10] [--writes 300] [--interval 0.02]
                                          [--tmpfs] [--tls]

``--tls`` measures twice in the same run: plain etcd, then etcd over mutual TLS with
``--client-cert-auth`` and authentication on (roles from ``fedgate etcd-bootstrap``):
the watchers hold the gateway role's certificate, the writer discovery's.

Goal on this machine: p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from federation import codec  # noqa: E402
from federation.etcd import EtcdClient, EtcdTls  # noqa: E402
from federation.keys import KeyLayout  # noqa: E402
from federation.model import Endpoint, RoutingView  # noqa: E402

LAYOUT = KeyLayout("/fedgate/")
KEY = LAYOUT.endpoints("checkout", "aws-eu-west-1", "kubernetes")


# ------------------------------------------------------------------ watcher process


def _tls_of(spec: str | None) -> EtcdTls | None:
    if not spec:
        return None
    ca, cert, key = spec.split(",")
    return EtcdTls(ca=ca, cert=cert, key=key)


async def watcher_main(endpoints: str, tls: str | None = None) -> None:
    from federation.watch import ViewWatcher

    out = sys.stdout

    def on_view(view: RoutingView) -> None:
        out.write(f"{view.revision} {time.monotonic():.6f}\n")
        out.flush()

    client = EtcdClient(endpoints.split(","), tls=_tls_of(tls))
    watcher = ViewWatcher(client, LAYOUT, on_view=on_view)
    task = asyncio.get_running_loop().create_task(watcher.run())
    await watcher.wait_ready(timeout=30)
    out.write("ready\n")
    out.flush()
    # stop when the parent closes our stdin
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    task.cancel()
    await client.close()


# ----------------------------------------------------------------------- the bench


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def read_reports(
    proc: asyncio.subprocess.Process, applied: list[tuple[int, float]], ready: asyncio.Event
) -> None:
    assert proc.stdout is not None
    while True:
        line = await proc.stdout.readline()
        if not line:
            return
        text = line.decode().strip()
        if text == "ready":
            ready.set()
            continue
        rev, at = text.split()
        applied.append((int(rev), float(at)))


async def bench(args: argparse.Namespace) -> int:
    modes = [False, True] if args.tls else [False]
    results = {}
    for tls in modes:
        code, figures = await bench_once(args, tls=tls)
        if code:
            return code
        results[tls] = figures
    if args.tls:
        (p50a, p99a), (p50b, p99b) = results[False], results[True]
        print(
            f"etcd TLS + auth on / plain: p50 {p50b:.1f} / {p50a:.1f} ms "
            f"({p50b / p50a:.2f}x), p99 {p99b:.1f} / {p99a:.1f} ms ({p99b / p99a:.2f}x)"
        )
    return 0


async def bench_once(args: argparse.Namespace, *, tls: bool) -> tuple[int, tuple[float, float]]:
    from federation.etcd_roles import bootstrap
    from federation.manifest import load_manifest
    from federation.store import apply_federation
    from tests.support.etcd import EtcdCluster

    base = Path(tempfile.mkdtemp(dir=args.base_dir)) if args.base_dir else None
    cluster = EtcdCluster(size=1, base_dir=base, tls=tls) if base else EtcdCluster(size=1, tls=tls)
    print(f"-- etcd {'over mutual TLS, auth on' if tls else 'plain'}")
    with cluster as etcd:
        watcher_tls = ""
        writer: EtcdTls | None = None
        if tls:
            fed = load_manifest(ROOT / "clusters.example.yaml")
            root = EtcdClient(etcd.endpoints, tls=etcd.client_tls("root"))
            await apply_federation(root, LAYOUT, fed)
            await bootstrap(root, LAYOUT, [c.name for c in fed.clusters])
            await root.close()
            gw = etcd.client_tls("fedgate-gateway-aws-eu-west-1")
            watcher_tls = f"{gw.ca},{gw.cert},{gw.key}"
            writer = etcd.client_tls("fedgate-discovery-aws-eu-west-1")
        client = EtcdClient(etcd.endpoints, tls=writer)
        procs: list[asyncio.subprocess.Process] = []
        commits: list[float] = []
        reports: list[list[tuple[int, float]]] = []
        readers = []
        try:
            readies = []
            for _ in range(args.watchers):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--watcher",
                    ",".join(etcd.endpoints),
                    "--watcher-tls",
                    watcher_tls,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
                procs.append(proc)
                applied: list[tuple[int, float]] = []
                ready = asyncio.Event()
                reports.append(applied)
                readies.append(ready)
                readers.append(asyncio.create_task(read_reports(proc, applied, ready)))
            # the writer's gRPC channel is made after the children are forked
            if not tls:
                fed = load_manifest(ROOT / "clusters.example.yaml")
                await apply_federation(client, LAYOUT, fed)
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)

            sent: list[tuple[int, float]] = []  # (revision, time before the write)
            next_at = time.monotonic()
            for i in range(args.writes):
                next_at += args.interval
                eps = [
                    Endpoint(
                        f"10.0.{i % 250}.{j}:8080", "aws-eu-west-1", "checkout", source="kubernetes"
                    )
                    for j in range(3)
                ]
                started = time.monotonic()
                revision = await client.put(KEY, codec.encode(eps))
                sent.append((revision, started))
                commits.append((time.monotonic() - started) * 1000)
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the writes
            last = sent[-1][0]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(r and r[-1][0] >= last for r in reports):
                await asyncio.sleep(0.05)  # waiting for the stragglers, bounded
        finally:
            for proc in procs:
                if proc.stdin is not None:
                    proc.stdin.close()
            for proc in procs:
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            for reader in readers:
                reader.cancel()
            await client.close()

    latencies: list[float] = []
    after_commit: list[float] = []
    missing = 0
    for applied in reports:
        applied.sort()
        for (revision, started), commit in zip(sent, commits, strict=True):
            at = next((t for rev, t in applied if rev >= revision), None)
            if at is None:
                missing += 1
            else:
                latencies.append((at - started) * 1000)
                after_commit.append((at - started) * 1000 - commit)
    if not latencies:
        print("no latency measured")
        return 1, (0.0, 0.0)
    p50 = statistics.median(latencies)
    p99 = percentile(latencies, 99)
    print(
        f"propagation: {args.writes} writes every {args.interval * 1000:.0f} ms to "
        f"{args.watchers} watcher processes ({len(latencies)} samples, {missing} missing)"
    )
    print(
        f"write -> applied: p50 {p50:.1f} ms  p90 {percentile(latencies, 90):.1f} ms  "
        f"p99 {p99:.1f} ms  max {max(latencies):.1f} ms  (goal p99 <= 50 ms: "
        f"{'met' if p99 <= 50 else 'NOT met'})"
    )
    print(
        f"etcd put round trip (commit): p50 {statistics.median(commits):.1f} ms  "
        f"p99 {percentile(commits, 99):.1f} ms; applied after the put returned: "
        f"p50 {statistics.median(after_commit):.1f} ms  p99 {percentile(after_commit, 99):.1f} ms"
    )
    print(
        f"etcd data on {'tmpfs (/dev/shm)' if args.base_dir else 'disk (/tmp)'}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    return (0 if missing == 0 else 1), (p50, p99)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=10)
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between writes")
    parser.add_argument(
        "--tmpfs", action="store_true", help="etcd data in /dev/shm (no disk fsync cost)"
    )
    parser.add_argument(
        "--tls", action="store_true", help="also measure etcd over mutual TLS with auth on"
    )
    parser.add_argument("--watcher", metavar="ENDPOINTS", help=argparse.SUPPRESS)
    parser.add_argument("--watcher-tls", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    if args.watcher:
        asyncio.run(watcher_main(args.watcher, args.watcher_tls or None))
        return 0
    args.base_dir = None
    if args.tmpfs and Path("/dev/shm").is_dir():
        args.base_dir = Path(tempfile.mkdtemp(prefix="fedgate-bench-etcd-", dir="/dev/shm"))
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
