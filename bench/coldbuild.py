"""One cold build of a generated prefix, in process: the CPU of ``build_view`` alone.

The prefix is what ``bench/scale.py`` writes to etcd (``federation.devstack.shape``:
at 1,000 clusters 46,001 keys: the federation, 1,000 clusters, 2,000 services, 2,000
gateway records, 1,000 health reports the view skips and 40,000 summary keys), held
as ``KV`` objects, so no etcd and no list are measured: only the build the watcher runs
in its worker thread on a cold start (``ViewState.apply`` of the whole prefix, decode
cache on, collector paused as ``federation.heap.paused`` does).

    .venv/bin/python bench/coldbuild.py [--clusters 1000] [--runs 5]
    .venv/bin/python bench/coldbuild.py --code /tmp/base   # another checkout's code
    .venv/bin/python bench/coldbuild.py --dump view.json --bad  # the built view, to compare

``--code DIR`` imports ``federation`` from another checkout (an A/B against a base
commit: ``git worktree add /tmp/base main``). ``--bad`` adds hostile values of every
kind (rejected items) so the dump covers rejection too. Prints the CPU and wall time of
each run and their minimum.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _prefix(clusters: int, *, bad: bool) -> dict[str, Any]:
    from federation.devstack.shape import (
        Shape,
        config_puts,
        gateway_value,
        health_value,
        summary_puts,
    )
    from federation.etcd import KV
    from federation.keys import KeyLayout

    layout = KeyLayout("/fedgate/")
    shape = Shape(clusters)
    puts = list(config_puts(shape, layout))
    runs_in = shape.services_in()
    at = 1_700_000_000.0
    for cluster in shape.cluster_names():
        leader, *followers = shape.gateway_ids(cluster)
        for gw in (leader, *followers):
            puts.append(_put(layout.gateway(cluster, gw), gateway_value(cluster, gw)))
        for gw in followers:
            value = health_value(cluster, gw, runs_in[cluster], at=at)
            puts.append(_put(layout.health_report(cluster, gw), value))
        puts += summary_puts(layout, cluster, leader, runs_in[cluster], at=at)
    if bad:
        first = shape.cluster_names()[0]
        svc = runs_in[first][0]
        hostile = {
            layout.cluster("cx"): b'{"name": "cy"}',
            layout.cluster(first): b"{not json",
            layout.service("s00001"): b'{"name": "s00001", "port": 1e999}',
            layout.service("zz"): json.dumps(
                {"name": "zz", "routes": [], "port": 80, "clusters": ["nope"]}
            ).encode(),
            layout.gateway(first, "x"): b'{"id": "y", "cluster": "c0000"}',
            layout.health_summary(first, svc): b"[" * 5000,
            layout.health_summary(first, "other"): b"[]",
            layout.endpoints(svc, first, "k8s"): b'[{"address": 1}]',
            layout.prefix + "nonsense/x": b"1",
            layout.prefix + "acme/what/x": b"y",
        }
        puts += [_put(k, v) for k, v in hostile.items()]
    kvs = {p.key: KV(p.key, p.value, rev, rev, 0) for rev, p in enumerate(puts, start=2)}
    return {key: kvs[key] for key in sorted(kvs)}  # by key, as etcd lists them


def _put(key: str, value: bytes) -> Any:
    from federation.etcd import Put

    return Put(key, value)


def _dump(view: Any) -> str:
    from federation.codec import to_plain

    def ordered(mapping: Any) -> list[Any]:  # insertion order kept: it is part of the view
        return [[str(k), to_plain(v)] for k, v in mapping.items()]

    return json.dumps(
        {
            "plain": to_plain(view),
            "order": {
                name: ordered(getattr(view, name))
                for name in ("clusters", "services", "endpoints", "gateways", "health")
            },
        },
        sort_keys=True,
        indent=0,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout to import")
    ap.add_argument("--dump", type=Path, help="write the built view here (JSON)")
    ap.add_argument("--bad", action="store_true", help="add hostile values of every kind")
    ap.add_argument("--profile", type=Path, help="cProfile one more build into this file")
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)  # the rejections of --bad are in the dump
    sys.path.insert(0, str(args.code.resolve()))
    from federation.keys import KeyLayout
    from federation.view import DecodeCache
    from federation.viewstate import ViewState

    layout = KeyLayout("/fedgate/")
    kvs = _prefix(args.clusters, bad=args.bad)
    revision = len(kvs) + 1
    cpus: list[float] = []
    walls: list[float] = []
    view: Any = None
    for _ in range(args.runs):
        gc.collect()
        gc.disable()
        wall, cpu = time.perf_counter(), time.process_time()
        state = ViewState(layout, cache=DecodeCache())
        view = state.apply(dict(kvs), revision=revision, now=1_700_000_001.0)
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
        gc.enable()
        del state, view
        view = None
    if args.profile is not None or args.dump is not None:
        import cProfile

        gc.disable()
        prof = cProfile.Profile()
        state = ViewState(layout, cache=DecodeCache())
        prof.enable()
        view = state.apply(dict(kvs), revision=revision, now=1_700_000_001.0)
        prof.disable()
        gc.enable()
        if args.profile is not None:
            prof.dump_stats(str(args.profile))
        if args.dump is not None:
            args.dump.write_text(_dump(view))
    print(
        f"code {Path(sys.modules['federation'].__file__).parent.parent} keys {len(kvs)} "
        f"cpu {' '.join(f'{c:.3f}' for c in cpus)} min {min(cpus):.3f} s; "
        f"wall min {min(walls):.3f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
