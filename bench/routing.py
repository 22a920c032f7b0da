"""Route match latency at 100, 1,000 and 10,000 routes, per kind of host.

Builds a routing view of N routes for each shape and times ``RouteTable.match`` one call
at a time (``perf_counter_ns`` around each call, keys drawn at random), printing p50,
p99 and max in microseconds, the time to build the table and the time to apply the
change of one service to it (``update ms``: the hosts it touches are rebuilt):

* ``exact``: N services, each with its own exact host;
* ``wildcard``: N wildcard hosts ``*.wI.test``, requests to ``a.b.wI.test``;
* ``shared``: one host with N path prefixes (``/sI/``), requests to ``/sI/x/y``;
* ``rules``: one host with N/10 prefixes, each with 10 routes told apart by a header
  condition (``x-tenant: tK``) and one weighted split; requests carry the tenant of the
  last route of their prefix (every condition of the prefix is evaluated);
* ``mixed``: like ``rules`` but the 9 conditioned routes of a prefix mix a header
  prefix, a query parameter, a method and a present header, none of which holds: every
  one is evaluated before the prefix's unconditioned split route is taken;
* ``miss``: an unknown host against the ``shared`` table (with wildcards present).

``--before REV`` also times the route table of git revision REV (its
``gateway/routing.py``, host and path only: it has no conditions) on the same tables.

    .venv/bin/python bench/routing.py [--sizes 100,1000,10000] [--samples 20000]
                                      [--repeat 3] [--before 09681de]

Each table is timed ``--repeat`` times and the round with the lowest p99 is printed:
on a machine shared with other work, a round preempted by another process measures
the machine, not the table.

Goal: p99 <= 20 us at 10,000 routes for every kind, rules included.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from federation.model import (  # noqa: E402
    Route,
    RouteConditions,
    RoutingView,
    Service,
    ValueMatch,
    WeightedBackend,
)
from gateway import routing  # noqa: E402

Request = tuple[str, str, str, list[tuple[bytes, bytes]], bytes]


def _svc(name: str, routes: list[Route]) -> Service:
    return Service(name=name, routes=tuple(routes), port=80, clusters=("c1",))


def _view(services: list[Service]) -> RoutingView:
    return RoutingView(services=MappingProxyType({s.name: s for s in services}))


def _mixed(k: int) -> RouteConditions:
    """Conditions of every kind, none of which the ``mixed`` requests satisfy."""
    if k % 3 == 0:
        return RouteConditions(headers=(ValueMatch("x-user", "prefix", f"beta{k}-"),))
    if k % 3 == 1:
        return RouteConditions(query=(ValueMatch("v", "exact", str(k)),))
    return RouteConditions(methods=frozenset({"POST"}), headers=(ValueMatch(f"x-k{k}", "present"),))


def shapes(n: int) -> dict[str, RoutingView]:
    """One view of ``n`` routes per kind (``miss`` uses the ``shared`` one)."""
    out: dict[str, RoutingView] = {}
    out["exact"] = _view([_svc(f"s{i}", [Route(f"s{i}.exact.test", "/")]) for i in range(n)])
    out["wildcard"] = _view([_svc(f"w{i}", [Route(f"*.w{i}.test", "/")]) for i in range(n)])
    shared_services = [_svc(f"p{i}", [Route("shared.test", f"/s{i}/")]) for i in range(n)]
    shared_services.append(_svc("wild", [Route("*.other.test", "/")]))
    out["shared"] = _view(shared_services)
    per = 10
    rule_services = [_svc("v1", [Route("v1.test")]), _svc("v2", [Route("v2.test")])]
    split = (WeightedBackend("v1", 9), WeightedBackend("v2", 1))
    for i in range(max(1, n // per)):
        rule_services.append(
            _svc(
                f"r{i}",
                [
                    Route(
                        "rules.test",
                        f"/r{i}",
                        match=RouteConditions(headers=(ValueMatch("x-tenant", "exact", f"t{k}"),)),
                        backends=split if k == per - 1 else (),
                    )
                    for k in range(per)
                ],
            )
        )
    out["rules"] = _view(rule_services)
    mixed_services = [_svc("v1", [Route("v1.test")]), _svc("v2", [Route("v2.test")])]
    for i in range(max(1, n // per)):
        mixed_services.append(
            _svc(f"m{i}", [Route("mixed.test", f"/m{i}", match=_mixed(k)) for k in range(per - 1)])
        )
        mixed_services.append(_svc(f"m{i}-split", [Route("mixed.test", f"/m{i}", backends=split)]))
    out["mixed"] = _view(mixed_services)
    out["miss"] = out["shared"]
    return out


def requests_for(kind: str, n: int, count: int) -> list[Request]:
    rnd = random.Random(count + n)
    reqs = []
    for _ in range(count):
        if kind == "exact":
            reqs.append((f"s{rnd.randrange(n)}.exact.test", "/a/b", "GET", [], b""))
        elif kind == "wildcard":
            reqs.append((f"a.b.w{rnd.randrange(n)}.test", "/a/b", "GET", [], b""))
        elif kind == "shared":
            reqs.append(("shared.test", f"/s{rnd.randrange(n)}/x/y", "GET", [], b""))
        elif kind == "rules":
            hdrs = [(b"accept", b"*/*"), (b"user-agent", b"bench"), (b"x-tenant", b"t9")]
            reqs.append(("rules.test", f"/r{rnd.randrange(max(1, n // 10))}/x", "GET", hdrs, b""))
        elif kind == "mixed":
            hdrs = [(b"accept", b"*/*"), (b"user-agent", b"bench"), (b"x-user", b"alpha-1")]
            path = f"/m{rnd.randrange(max(1, n // 10))}/x"
            reqs.append(("mixed.test", path, "GET", hdrs, b"a=1&v=zz"))
        else:
            reqs.append(("nope.example.test", "/a/b", "GET", [], b""))
    return reqs


def timed(match: Callable[[Request], Any], reqs: list[Request]) -> list[float]:
    clock = time.perf_counter_ns
    out = []
    gc.disable()
    try:
        for r in reqs:
            t0 = clock()
            match(r)
            out.append((clock() - t0) / 1000)
    finally:
        gc.enable()
    return out


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))]


def update_ms(view: RoutingView, table: routing.RouteTable) -> float:
    """Time to apply a change of one service (a new object, as a changed etcd value gives)
    to ``table``: the hosts it touches are rebuilt, the rest shared."""
    name = sorted(view.services)[len(view.services) // 2]
    changed = {**view.services, name: replace(view.services[name])}
    after = replace(view, services=MappingProxyType(changed))
    t0 = time.perf_counter()
    routing.RouteTable.build(after, previous=table)
    return (time.perf_counter() - t0) * 1000


def load_before(rev: str) -> ModuleType:
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:gateway/routing.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "routing_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("routing_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["routing_before"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds per table; the round with the lowest p99 "
        "is shown (on a shared machine, other processes' preemptions are not the table's cost)",
    )
    parser.add_argument("--before", metavar="REV", help="also time the table of this revision")
    args = parser.parse_args()
    before = load_before(args.before) if args.before else None
    head = f"{'routes':>7} {'kind':<9} {'build ms':>9} {'update ms':>9} {'p50 us':>7} {'p99 us':>7}"
    head += f" {'max us':>8}"
    if before is not None:
        head += f"  {'before build':>12} {'before p50':>10} {'before p99':>10}"
    print(head)
    worst = 0.0
    for n in (int(x) for x in args.sizes.split(",")):
        for kind, view in shapes(n).items():
            t0 = time.perf_counter()
            table = routing.RouteTable.build(view)
            build_ms = (time.perf_counter() - t0) * 1000
            reqs = requests_for(kind, n, args.samples)
            expect_hit = kind != "miss"
            sample = table.match(*reqs[0])
            assert (sample is not None) == expect_hit, (kind, reqs[0])
            rounds = [timed(lambda r, t=table: t.match(*r), reqs) for _ in range(args.repeat)]
            xs = min(rounds, key=lambda xs: pct(xs, 0.99))
            p99 = pct(xs, 0.99)
            worst = max(worst, p99)
            p50 = pct(xs, 0.5)
            line = f"{n:>7} {kind:<9} {build_ms:>9.1f} {update_ms(view, table):>9.2f}"
            line += f" {p50:>7.2f} {p99:>7.2f} {max(xs):>8.1f}"
            if before is not None:
                t0 = time.perf_counter()
                old = before.RouteTable.build(view)
                old_ms = (time.perf_counter() - t0) * 1000
                ys = min(
                    (timed(lambda r, t=old: t.match(r[0], r[1]), reqs) for _ in range(args.repeat)),
                    key=lambda ys: pct(ys, 0.99),
                )
                line += f"  {old_ms:>12.1f} {pct(ys, 0.5):>10.2f} {pct(ys, 0.99):>10.2f}"
            print(line, flush=True)
    print(f"worst p99: {worst:.2f} us (goal <= 20 us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
