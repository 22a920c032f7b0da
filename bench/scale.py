"""The shared view at 10, 100 and 1,000 clusters: one row per size (issue #11's goals).

For each size it starts its own etcd, writes a generated federation
(``federation.devstack.shape``: 2,000 services of 5 routes, each in 20 clusters, 2
gateways per cluster, each with its record; per cluster the follower's health report
and the leader's summary, one key per own service), then starts ONE watching gateway
process (a ``ViewWatcher`` + a ``GatewayLease``, what ``fedgate serve`` runs for its
view) and, from this process, simulated peers writing what real gateways write at their
real pace: round-robin over the gateways, a follower rewrites its report (which the
views skip), a leader one summary key (its statistics moved), every 2 s per gateway
(capped by ``--max-rate`` on a small machine, the rate reached is printed), plus a
service change with each of them (at most every 200 ms). Half-way, one cluster's
leader and follower report a service's backends dead.

etcd runs with ``--auto-compaction-mode periodic --auto-compaction-retention
RETENTION`` (``--compaction-retention``, default 5m, the policy of docs/etcd.md) and the
bench plays the operator's periodic defragmentation (``--defrag-every`` seconds, 0 =
never); the database size (``Maintenance.Status``: dbSize, dbSizeInUse) is sampled
every ``--sample-every`` seconds and printed at the start, the end, its maximum and as
a series.

Columns:
  cold etcd   list + first view in the watcher process (s)
  cold snap   load the snapshot + compile the route table (s)
  cpu         control-plane CPU of the watcher process under churn (% of a core)
  apply max   the longest update applied on its event loop (ms)
  lag max     the longest event-loop delay seen by a 1 ms ticker (ms; includes the
              machine's scheduling noise), and the part of it this process spent on
              CPU (its own work: the loop's, or a thread's holding the interpreter lock)
  svc p99     service change -> applied in the watcher (ms)
  dead        backends dead -> the watcher's health says unhealthy (ms)
  leases      lease expiries of the watcher during the run
  rss         watcher max RSS (MB)
  etcd db     etcd database file at the end (MB)
  db start / end / max   etcd's dbSize from its status endpoint (MB; in use at the end)

    .venv/bin/python bench/scale.py [--sizes 10,100,1000] [--duration 20] [--max-rate 200]
    .venv/bin/python bench/scale.py --sizes 100 --duration 600   # the issue's 10 minutes

``--duration`` is the churn per size in seconds, which this prints.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scale_procs import DbStatus, RealGateway  # noqa: E402
from federation import codec  # noqa: E402
from federation.devstack.shape import (  # noqa: E402
    Shape,
    chunks,
    config_puts,
    gateway_value,
    health_value,
    summary_puts,
)
from federation.etcd import EtcdClient, Put  # noqa: E402
from federation.keys import KeyLayout  # noqa: E402
from federation.model import HealthState, RoutingView  # noqa: E402

LAYOUT = KeyLayout("/fedgate/")


# ------------------------------------------------------------------ watcher process


def children_usage() -> tuple[float, float]:
    """CPU seconds and the largest peak RSS (MB) of this process's live children (the
    snapshot writer process)."""
    me, cpu, rss = os.getpid(), 0.0, 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != me:
                continue
            cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    rss = max(rss, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return cpu, rss


async def ticker(lag: list[float]) -> None:
    """A 1 ms ticker: ``lag`` = [longest loop delay, the part of it this process spent on
    CPU (its own work, not the machine's)] (s)."""
    while True:
        t, c = time.perf_counter(), time.process_time()
        await asyncio.sleep(0.001)
        late = time.perf_counter() - t - 0.001
        lag[0] = max(lag[0], late)
        lag[1] = max(lag[1], min(late, time.process_time() - c - 0.0002))


async def watcher_main(endpoints: str, marker: str, snapshot: str) -> None:
    from federation.liveness import GatewayLease
    from federation.watch import ViewWatcher

    out = sys.stdout
    service, cluster = marker.split("@")
    seen_down = False

    def on_view(view: RoutingView) -> None:
        nonlocal seen_down
        now = time.monotonic()
        out.write(f"V {view.revision} {now:.6f}\n")
        h = view.health.get((service, cluster))
        if not seen_down and h is not None and h.state is HealthState.UNHEALTHY:
            seen_down = True
            out.write(f"D {now:.6f}\n")
        out.flush()

    client = EtcdClient(endpoints.split(","), timeout=5.0)
    started = time.monotonic()
    watcher = ViewWatcher(client, LAYOUT, on_view=on_view, snapshot_path=snapshot)
    loop = asyncio.get_running_loop()
    start_lag = [0.0, 0.0]  # the ticker's figures while the watcher starts (cold)
    start_tick = loop.create_task(ticker(start_lag))
    task = loop.create_task(watcher.run())
    await watcher.wait_ready(timeout=120)
    start_tick.cancel()
    out.write(f"READY {time.monotonic() - started:.3f}\n")
    out.flush()
    lease = GatewayLease(client, ttl=5.0)
    await lease.start()
    lag = [0.0, 0.0]
    gc_max = 0.0
    gc_started = 0.0

    def on_gc(phase: str, info: dict[str, int]) -> None:
        nonlocal gc_max, gc_started
        if phase == "start":
            gc_started = time.perf_counter()
        else:
            gc_max = max(gc_max, time.perf_counter() - gc_started)

    gc.callbacks.append(on_gc)
    cpu0 = time.process_time()
    child0, _ = children_usage()
    t0 = time.monotonic()

    tick = loop.create_task(ticker(lag))
    await loop.run_in_executor(None, sys.stdin.readline)  # the parent says: report
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    child_cpu, child_rss = children_usage()
    child_cpu -= child0
    tick.cancel()
    stats = watcher.stats.as_dict()
    writer = watcher.snapshot_writer
    if writer is not None:  # the snapshot writer process: what went to it, what it wrote
        stats["snapshot"] = {
            "handovers": writer.handovers,
            "blocks": writer.blocks_sent,
            "writes": writer.writes,
            "restarts": writer.restarts,
            "cpu": child_cpu / elapsed,
            "rss_mb": child_rss,
        }
    report = {
        "cpu": cpu / elapsed,
        "lag_max_ms": lag[0] * 1000,
        "lag_own_ms": lag[1] * 1000,
        "gc_max_ms": gc_max * 1000,
        "start_lag_max_ms": start_lag[0] * 1000,
        "start_lag_own_ms": start_lag[1] * 1000,
        "apply_max_ms": stats["longest_apply_ms"],
        "leases": lease.grants - 1,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "stats": stats,
    }
    out.write("R " + json.dumps(report) + "\n")
    out.flush()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)  # writes the last snapshot
    await lease.stop()
    await client.close()


# ----------------------------------------------------------------------- the bench


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def populate(client: EtcdClient, shape: Shape) -> int:
    rev = 0
    for batch in chunks(config_puts(shape, LAYOUT)):
        ok, rev = await client.txn([], batch)
        assert ok
    runs_in = shape.services_in()
    peers: list[Put] = []
    now = time.time()
    for cluster in shape.cluster_names():
        leader, *followers = shape.gateway_ids(cluster)
        for gw in (leader, *followers):
            peers.append(Put(LAYOUT.gateway(cluster, gw), gateway_value(cluster, gw)))
        for gw in followers:
            value = health_value(cluster, gw, runs_in[cluster], at=now)
            peers.append(Put(LAYOUT.health_report(cluster, gw), value))
        peers += summary_puts(LAYOUT, cluster, leader, runs_in[cluster], at=now)
    for batch in chunks(iter(peers)):
        ok, rev = await client.txn([], batch)
        assert ok
    return rev


async def one_size(clusters: int, args: argparse.Namespace) -> dict[str, object]:
    from federation.devstack.etcd import EtcdCluster
    from federation.snapshot import load_snapshot
    from gateway.routing import RouteTable

    shape = Shape(clusters=clusters, services=args.services)
    base = Path(tempfile.mkdtemp(prefix="fedgate-scale-"))
    compaction = ("--auto-compaction-mode", "periodic",
                  "--auto-compaction-retention", args.compaction_retention)  # fmt: skip
    etcd = EtcdCluster(base_dir=base / "etcd", extra_args=compaction).start()
    snapshot = str(base / "view.json")
    runs_in = shape.services_in()
    target = shape.cluster_names()[1]
    marker_service = runs_in[target][0]
    proc: asyncio.subprocess.Process | None = None
    real: RealGateway | None = None
    try:
        async with EtcdClient(etcd.endpoints, timeout=10.0) as client:
            await populate(client, shape)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--watcher",
                ",".join(etcd.endpoints),
                "--marker",
                f"{marker_service}@{target}",
                "--snapshot",
                snapshot,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 24,
            )
            applied: list[tuple[int, float]] = []
            marks: dict[str, object] = {}

            async def read() -> None:
                assert proc is not None and proc.stdout is not None
                while line := await proc.stdout.readline():
                    kind, _, rest = line.decode().strip().partition(" ")
                    if kind == "V":
                        rev, at = rest.split()
                        applied.append((int(rev), float(at)))
                    elif kind == "D":
                        marks["down_at"] = float(rest)
                    elif kind == "READY":
                        marks["cold"] = float(rest)
                    elif kind == "R":
                        marks["report"] = json.loads(rest)

            reader = asyncio.get_running_loop().create_task(read())
            deadline = time.monotonic() + 180
            while "cold" not in marks and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if args.real_gateway:
                real = RealGateway(base, target, etcd.endpoints)
                while not real.ready() and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                real.start_churn()
            gateways = [(c, g) for c in shape.cluster_names() for g in shape.gateway_ids(c)]
            leaders = {shape.gateway_ids(c)[0] for c in shape.cluster_names()}
            # encoded before the run (two alternating values per gateway, and the "dead"
            # ones): encoding 2,000 observations takes 250 ms, which would starve this
            # loop's reading of the watcher's reports (and block the watcher on its pipe);
            # a leader alternates one summary key (its statistics moved), a follower its
            # whole report
            values: dict[str, tuple[list[Put], ...]] = {}
            for c, gw in gateways:
                if gw in leaders:
                    values[gw] = tuple(
                        summary_puts(LAYOUT, c, gw, runs_in[c][:1], at=float(k), latency=k * 10.0)
                        for k in (1, 2)
                    )
                else:
                    values[gw] = tuple(
                        [Put(LAYOUT.health_report(c, gw), health_value(c, gw, runs_in[c], at=k))]
                        for k in (1.0, 2.0)
                    )
            dead = frozenset({marker_service})
            t_leader, *t_followers = shape.gateway_ids(target)
            dead_puts = summary_puts(LAYOUT, target, t_leader, runs_in[target], at=3.0,
                                     down=dead, only=dead)  # fmt: skip
            dead_puts += [
                Put(LAYOUT.health_report(target, gw),
                    health_value(target, gw, runs_in[target], at=3.0, down=dead))
                for gw in t_followers
            ]  # fmt: skip
            status = DbStatus(etcd.endpoints[0])
            await status.sample(0.0)
            next_sample = time.monotonic() + args.sample_every
            next_defrag = time.monotonic() + (args.defrag_every or float("inf"))
            rate = min(len(gateways) / 2.0, args.max_rate)
            changes: list[tuple[int, float]] = []
            writes = 0
            down_sent: float | None = None
            stop_at = time.monotonic() + args.duration
            next_change = time.monotonic()
            i = 0
            generation = 0
            churn_started = time.monotonic()
            while time.monotonic() < stop_at:
                tick = time.monotonic()
                if tick >= next_sample:
                    await status.sample(tick - churn_started)
                    next_sample = tick + args.sample_every
                if tick >= next_defrag:
                    await status.defragment(tick - churn_started)
                    next_defrag = tick + args.defrag_every
                if tick >= next_change:  # a service change, timed
                    generation += 1
                    svc = shape.service(generation % shape.services, generation=generation)
                    sent = time.monotonic()
                    rev = await client.put(LAYOUT.service(svc.name), codec.encode(svc))
                    changes.append((rev, sent))
                    next_change = tick + 0.2
                cluster, gw = gateways[i % len(gateways)]
                i += 1
                if down_sent is None and tick > stop_at - args.duration / 2:
                    # every gateway of one cluster sees that service's backends die
                    down_sent = time.monotonic()
                    await client.txn([], dead_puts)
                    continue
                if cluster == target and down_sent is not None:
                    continue  # it keeps saying "dead": nothing changes there
                await client.txn([], values[gw][(i // len(gateways)) % 2])
                writes += 1
                spare = 1.0 / rate - (time.monotonic() - tick)
                if spare > 0:
                    await asyncio.sleep(spare)
            elapsed = args.duration
            await asyncio.sleep(1.0)  # let the last changes land
            await status.sample(time.monotonic() - churn_started)
            assert proc.stdin is not None
            proc.stdin.write(b"report\n")
            await proc.stdin.drain()
            deadline = time.monotonic() + 60
            while "report" not in marks and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 60)
            await reader
            if real is not None:
                marks["real"] = real.report()
        latencies = []
        for rev, sent in changes:
            at = next((t for r, t in applied if r >= rev), None)
            if at is not None:
                latencies.append((at - sent) * 1000)
        started = time.monotonic()
        view = load_snapshot(snapshot)
        if view is not None:
            RouteTable.build(view)
        cold_snap = time.monotonic() - started if view is not None else float("nan")
        db = sum(f.stat().st_size for f in (base / "etcd").rglob("db"))
        report: dict[str, object] = marks.get("report", {})  # type: ignore[assignment]
        down_at = marks.get("down_at")
        return {
            "clusters": clusters,
            "routes": shape.services * shape.routes,
            "gateways": len(gateways),
            "rate": writes / elapsed,
            "cold": marks.get("cold", float("nan")),
            "cold_snap": cold_snap,
            "cpu": float(report.get("cpu", float("nan"))) * 100,  # type: ignore[arg-type]
            "apply_max": report.get("apply_max_ms", float("nan")),
            "lag_max": report.get("lag_max_ms", float("nan")),
            "lag_own": report.get("lag_own_ms", float("nan")),
            "gc_max": report.get("gc_max_ms", float("nan")),
            "start_lag_max": report.get("start_lag_max_ms", float("nan")),
            "start_lag_own": report.get("start_lag_own_ms", float("nan")),
            "svc_p99": percentile(latencies, 99),
            "svc_p50": statistics.median(latencies) if latencies else float("nan"),
            "missing": len(changes) - len(latencies),
            "dead": (float(down_at) - down_sent) * 1000  # type: ignore[arg-type]
            if down_at is not None and down_sent is not None
            else float("nan"),
            "leases": report.get("leases", "?"),
            "rss": report.get("rss_mb", float("nan")),
            "db": db / 1e6,
            "db_series": status.series,
            "defrags": status.defrags,
            "stats": report.get("stats", {}),
            "real": marks.get("real"),
        }
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
        if real is not None:
            real.stop()
        etcd.stop()


async def bench(args: argparse.Namespace) -> int:
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        row = await one_size(size, args)
        rows.append(row)
        stats: dict[str, Any] = row["stats"]  # type: ignore[assignment]
        print(
            f"# {size} clusters: watcher stats: updates {stats.get('update_attempt')}, "
            f"events {stats.get('events')}, config rebuilds {stats.get('config_rebuilds')}, "
            f"health pairs {stats.get('health_pairs')}, offloaded {stats.get('offloaded')}, "
            f"cold start: list {stats.get('list_ms')} ms + build {stats.get('build_ms')} ms "
            f"(CPU {stats.get('reload_cpu_ms')} ms); "
            f"longest collection {row['gc_max']:.1f} ms; loop lag during the cold start "
            f"{row['start_lag_max']:.1f} ms ({row['start_lag_own']:.1f} ms own CPU)",
            flush=True,
        )
        snap = stats.get("snapshot")
        if snap:
            print(
                f"# {size} clusters: snapshot writer process: {snap['handovers']} hand-overs "
                f"of {snap['blocks']} changed items, {snap['writes']} files written, "
                f"{snap['restarts']} restarts, its CPU {snap['cpu'] * 100:.1f}% of a core, "
                f"max RSS {snap['rss_mb']:.0f} MB",
                flush=True,
            )
        series: list[tuple[float, int, int, int]] = row["db_series"]  # type: ignore[assignment]
        if series:
            mb = 1e6
            print(
                f"# {size} clusters: etcd db (status endpoint) start {series[0][1] / mb:.1f} MB, "
                f"end {series[-1][1] / mb:.1f} MB ({series[-1][2] / mb:.1f} MB in use), "
                f"max {max(x[1] for x in series) / mb:.1f} MB; revisions "
                f"{series[0][3]} -> {series[-1][3]}; compaction retention "
                f"{args.compaction_retention}, defrags {len(row['defrags'])}",  # type: ignore[arg-type]
                flush=True,
            )
            defrags = row["defrags"]
            print(
                "#   defragmentations (s into the churn: seconds it took): "
                + ", ".join(f"{t:.0f}: {d:.2f}" for t, d in defrags),  # type: ignore[attr-defined]
                flush=True,
            )
            print(
                "#   db MB over time (s: size/in use): "
                + ", ".join(f"{t:.0f}: {a / mb:.0f}/{b / mb:.0f}" for t, a, b, _ in series),
                flush=True,
            )
        if row["real"]:
            gw: dict[str, float] = row["real"]  # type: ignore[assignment]
            print(
                f"# {size} clusters: real `fedgate serve` of one cluster: ready after "
                f"{gw['ready']:.1f} s, control-plane CPU {gw['cpu']:.1f}% under churn, "
                f"max RSS {gw['rss']:.0f} MB, lease expiries {gw['leases']:.0f}",
                flush=True,
            )
    print(
        f"\n{args.duration:.0f} s of churn per size; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n"
    )
    head = (
        "| clusters | routes | gateways | peer writes/s | cold etcd s | cold snap s | cpu % | "
        "apply max ms | lag max / own CPU ms | svc p50/p99 ms | dead ms | leases | rss MB | "
        "etcd db MB |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        print(
            f"| {r['clusters']} | {r['routes']} | {r['gateways']} | {r['rate']:.0f} | "
            f"{r['cold']:.2f} | {r['cold_snap']:.2f} | {r['cpu']:.1f} | {r['apply_max']:.1f} | "
            f"{r['lag_max']:.1f} / {r['lag_own']:.1f} | "
            f"{r['svc_p50']:.1f}/{r['svc_p99']:.1f} | {r['dead']:.0f} | "
            f"{r['leases']} | {r['rss']:.0f} | {r['db']:.1f} |"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of churn per size")
    parser.add_argument("--max-rate", type=float, default=200.0, help="peer writes per second")
    parser.add_argument("--compaction-retention", default="5m", help="etcd's periodic retention")
    parser.add_argument("--defrag-every", type=float, default=120.0, help="seconds; 0 = never")
    parser.add_argument("--sample-every", type=float, default=30.0, help="db size sample, s")
    parser.add_argument(
        "--real-gateway", action="store_true", help="also run a real `fedgate serve` process"
    )
    parser.add_argument("--watcher", metavar="ENDPOINTS", help=argparse.SUPPRESS)
    parser.add_argument("--marker", help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    if args.watcher:
        from federation.heap import prefer_the_loop

        prefer_the_loop()  # as fedgate serve does
        asyncio.run(watcher_main(args.watcher, args.marker, args.snapshot))
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
