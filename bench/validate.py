"""Validate and apply times of generated manifests at 10, 100 and 1,000 clusters.

    .venv/bin/python bench/validate.py                 # sizes 10 100 1000
    .venv/bin/python bench/validate.py --sizes 1000 --endpoints 2

For each size: the manifest's bytes; ``validate`` (parse + check + model) in CPU and
wall seconds; then, against a fresh real etcd with its default limits (128 operations,
1.5 MiB per request), ``apply`` of the whole manifest (transactions used), ``apply``
with nothing to change, and ``apply`` of one changed field in one service. Medians of
``--repeat`` runs for validate; one run each for the applies (each starts from the state
the previous one left).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.genmanifest import generate
from federation.devstack.etcd import EtcdCluster
from federation.etcd import EtcdClient
from federation.keys import KeyLayout
from federation.manifest import loader
from federation.model import Federation
from federation.store import ApplyResult, apply_federation


def time_validate(text: str, repeat: int) -> tuple[float, float, Federation]:
    cpu: list[float] = []
    wall: list[float] = []
    fed = None
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        fed = loader.check(text, filename="gen.yaml").federation
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    assert fed is not None
    return statistics.median(cpu), statistics.median(wall), fed


async def time_apply(endpoint: str, fed: Federation) -> tuple[float, ApplyResult]:
    layout = KeyLayout("/fedgate/")
    started = time.perf_counter()
    async with EtcdClient([endpoint], timeout=10.0) as client:
        result = await apply_federation(client, layout, fed)
    return time.perf_counter() - started, result


def one_change(text: str) -> str:
    return text.replace("attempts: 2,", "attempts: 3,", 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--endpoints", type=int, default=0, help="static addresses per cluster")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(
        f"{'clusters':>8} {'bytes':>10} {'validate cpu':>12} {'wall':>7} "
        f"{'apply all':>9} {'txns':>5} {'no-op':>7} {'1 change':>8}"
    )
    for size in args.sizes:
        text = generate(size, endpoints=args.endpoints)
        cpu, wall, fed = time_validate(text, args.repeat)
        changed = loader.check(one_change(text), filename="gen.yaml").federation
        with EtcdCluster(size=1) as etcd:
            full, result = asyncio.run(time_apply(etcd.endpoint, fed))
            noop, _ = asyncio.run(time_apply(etcd.endpoint, fed))
            one, one_result = asyncio.run(time_apply(etcd.endpoint, changed))
        assert one_result.plan.count("change") == 1, one_result.plan.changes
        print(
            f"{size:>8} {len(text):>10,} {cpu:>11.2f}s {wall:>6.2f}s "
            f"{full:>8.2f}s {result.transactions:>5} {noop:>6.2f}s {one:>7.2f}s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
