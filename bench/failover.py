"""Failover drills: how long until clients are answered by healthy regions, and what fails.

    .venv/bin/python bench/failover.py [--drills 10] [--rate 150] [--window 5]
        [--systems fedgate,nginx,haproxy] [--faults kill,blackhole] [--json FILE]
    .venv/bin/python bench/failover.py --systems fedgate --faults endpoint-get,endpoint-post
        [--drills 3] [--rate 100] [--window 4] [--base OTHER_CHECKOUT]

``endpoint-get`` / ``endpoint-post`` (``bench/endpoint_drill.py``): one endpoint of a
cluster SIGSTOPped under paced GETs / POSTs, the gateway with its DEFAULT settings (no
retries or timeouts in the manifest): failed requests, the p99 added during the fault,
POSTs executed twice. ``--base`` runs the same drill against another checkout too.

Each drill runs under steady paced load (GETs over keep-alive connections) against the
primary region's entry point, then faults the primary region's backends:

* ``kill``: SIGKILL of every backend of the region (connections refused / reset);
* ``blackhole``: SIGSTOP of every backend (the kernel still accepts connections,
  nobody ever answers), undone with SIGCONT.

Per drill: the time from the fault until every 250 ms window has at least 99% of its
requests answered by a healthy region within 250 ms (a request held up by a failed try
to the dead region does not count, even when a retry saved it), and the failed
requests (errors, non-2xx, or no answer within the client's 5 s). Then the region is
restored and the next drill waits until traffic is back on it.

The systems, in front of the same kind of backends:

* ``fedgate``: three regions (two clouds at tier 0, on-prem at tier 1), one gateway
  process each, etcd; clients enter through the primary region's gateway;
* ``nginx``: one upstream, the primary region's servers first and the other region's as
  ``backup``, nginx defaults (``max_fails=1 fail_timeout=10s``, ``proxy_next_upstream
  error timeout``, 60 s timeouts), upstream keep-alive;
* ``haproxy``: the same servers with ``check`` (HTTP check of /healthz) and ``backup``,
  HAProxy defaults (``inter 2s fall 3 rise 2``, ``retries 3``, no redispatch) and the
  usual ``timeout connect 5s / client 50s / server 50s``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.endpoint_drill import drill as endpoint_drill
from federation.devstack.localfed import Proc
from federation.devstack.ports import free_port
from tests.e2e.conftest import (
    AWS,
    GCP,
    ONPREM,
    WINDOW,
    FailoverFederation,
    Load,
    analyse,
)

SLOW = 0.25


@dataclass
class DrillResult:
    shift: float | None
    failed: int
    requests: int
    max_latency: float
    left: float | None = None  # fedgate only: until the gateway stopped choosing the region


@dataclass
class Series:
    system: str
    fault: str
    drills: list[DrillResult] = field(default_factory=list)
    note: str = ""


# ----------------------------------------------------------------------------- systems


class System:
    """An entry point in front of a primary and a backup region."""

    name = ""
    primary = "primary"
    healthy: set[str] = set()

    def entry(self) -> tuple[str, int]:
        raise NotImplementedError

    def fault(self, kind: str) -> None:
        raise NotImplementedError

    def restore(self, kind: str) -> None:
        raise NotImplementedError

    async def left(self, timeout: float) -> float | None:
        return None

    def close(self) -> None:
        raise NotImplementedError


class Fedgate(System):
    name = "fedgate"

    def __init__(self) -> None:
        self.fed = FailoverFederation(failback_window=2.0).start()
        self.primary = AWS
        self.healthy = {GCP, ONPREM}

    def entry(self) -> tuple[str, int]:
        return self.fed.entry(AWS)

    def fault(self, kind: str) -> None:
        if kind == "kill":
            self.fed.kill_backends(AWS)
        else:
            self.fed.pause_backends(AWS)

    def restore(self, kind: str) -> None:
        if kind == "kill":
            self.fed.restore_backends(AWS)
        else:
            self.fed.resume_backends(AWS)

    async def left(self, timeout: float) -> float | None:
        """Seconds until the aws gateway gives its own region no first tries."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                shares = await asyncio.to_thread(self.fed.shares, AWS)
            except OSError:
                shares = {}
            if shares and shares.get(AWS, 0.0) == 0.0:
                return time.monotonic() - start
            await asyncio.sleep(0.05)  # poll interval
        return None

    def close(self) -> None:
        self.fed.close()


class Peer(System):
    """nginx or HAProxy in front of two regions of demo backends."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.primary = "region-a"
        self.healthy = {"region-b"}
        self.dir = Path(tempfile.mkdtemp(prefix=f"fedgate-bench-{name}-"))
        self.backends: dict[str, list[Proc]] = {}
        self.addresses: dict[str, list[str]] = {}
        for region, host in (("region-a", "127.0.0.41"), ("region-b", "127.0.0.42")):
            ports = [free_port(host) for _ in range(2)]
            self.addresses[region] = [f"{host}:{p}" for p in ports]
            self.backends[region] = [
                Proc(
                    f"{region}-{i}",
                    [
                        sys.executable,
                        "-m",
                        "federation.devstack.backend",
                        "--listen",
                        addr,
                        "--cluster",
                        region,
                        "--name",
                        f"b{i}",
                    ],
                    self.dir / f"{region}-{i}.log",
                )
                for i, addr in enumerate(self.addresses[region])
            ]
            for p in self.backends[region]:
                p.start()
        self.host = "127.0.0.40"
        self.port = free_port(self.host)
        self.proc = self._start_proxy()

    def _start_proxy(self) -> Proc:
        a, b = self.addresses["region-a"], self.addresses["region-b"]
        if self.name == "nginx":
            servers = "".join(f"    server {x};\n" for x in a) + "".join(
                f"    server {x} backup;\n" for x in b
            )
            (self.dir / "nginx.conf").write_text(
                "user root;\nworker_processes 1;\ndaemon off;\n"
                f"pid {self.dir}/nginx.pid;\nerror_log {self.dir}/error.log warn;\n"
                "events { worker_connections 1024; }\n"
                "http {\n  access_log off;\n"
                f"  upstream regions {{\n{servers}    keepalive 32;\n  }}\n"
                f"  server {{\n    listen {self.host}:{self.port};\n"
                "    location / {\n      proxy_pass http://regions;\n"
                "      proxy_http_version 1.1;\n"
                '      proxy_set_header Connection "";\n'
                "    }\n  }\n}\n"
            )
            args = [
                "nginx",
                "-p",
                str(self.dir),
                "-e",
                "stderr",
                "-c",
                str(self.dir / "nginx.conf"),
            ]
        else:
            servers = "".join(f"    server a{i} {x} check\n" for i, x in enumerate(a)) + "".join(
                f"    server b{i} {x} check backup\n" for i, x in enumerate(b)
            )
            (self.dir / "haproxy.cfg").write_text(
                "global\n    maxconn 4096\n"
                "defaults\n    mode http\n    timeout connect 5s\n"
                "    timeout client 50s\n    timeout server 50s\n"
                f"frontend fe\n    bind {self.host}:{self.port}\n    default_backend regions\n"
                f"backend regions\n    option httpchk GET /healthz\n{servers}"
            )
            args = ["haproxy", "-db", "-f", str(self.dir / "haproxy.cfg")]
        proc = Proc(self.name, args, self.dir / f"{self.name}.log")
        proc.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not proc.running:
                raise RuntimeError(f"{self.name} exited: {proc.log.read_text()[-800:]}")
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return proc
            time.sleep(0.05)  # start-up poll
        raise RuntimeError(f"{self.name} did not listen")

    def entry(self) -> tuple[str, int]:
        return self.host, self.port

    def fault(self, kind: str) -> None:
        for p in self.backends["region-a"]:
            if kind == "kill":
                p.kill()
            else:
                p.signal(signal.SIGSTOP)

    def restore(self, kind: str) -> None:
        for p in self.backends["region-a"]:
            if kind == "kill":
                p.start()
            else:
                p.signal(signal.SIGCONT)

    def close(self) -> None:
        for procs in self.backends.values():
            for p in procs:
                p.signal(signal.SIGCONT)
        self.proc.stop(timeout=5)
        for procs in self.backends.values():
            for p in procs:
                p.stop(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- drills


async def wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.1)  # poll interval
    return cond()


async def run_series(
    system: System,
    fault: str,
    *,
    drills: int,
    rate: float,
    window: float,
    log: Callable[[str], None],
) -> Series:
    series = Series(system.name, fault)
    load = Load(system.entry(), rate=rate).start()

    def on_primary(n: int = 60) -> bool:
        last = load.results[-n:]
        return len(last) == n and all(r.ok and r.cluster == system.primary for r in last)

    try:
        for i in range(drills):
            if not await wait_until(on_primary, 40.0):
                series.note = f"drill {i + 1}: traffic never settled back on the primary region"
                log(series.note)
                break
            fault_at = time.monotonic()
            system.fault(fault)
            left_task: asyncio.Task[float | None] = asyncio.create_task(system.left(window))
            await asyncio.sleep(window)  # the fault lasts this long under load
            left = await left_task
            end = time.monotonic()
            system.restore(fault)
            # let requests sent during the fault finish (or time out) before analysing
            await wait_until(lambda end=end: load.settled(end), load.timeout + 1.0)
            # requests sent in the last SLOW seconds were answered after the restore
            drill = analyse(
                load.results, fault_at=fault_at, end=end - SLOW, bad={system.primary}, slow=SLOW
            )
            shift = drill.shift
            if shift is not None and shift >= window - SLOW - WINDOW - 1e-6:
                shift = None  # only the last window was good: not converged within the fault
            result = DrillResult(shift, drill.failed, drill.requests, drill.max_latency, left)
            series.drills.append(result)
            log(
                f"{system.name:8s} {fault:9s} drill {i + 1:2d}: shift "
                f"{_fmt(shift, window)} failed {drill.failed:4d}/{drill.requests} "
                f"max latency {drill.max_latency:.3f}s"
                + (
                    f" placement left after {_fmt(left, window)}"
                    if system.name == "fedgate"
                    else ""
                )
            )
    finally:
        await load.stop()
    return series


def _fmt(value: float | None, window: float) -> str:
    return f"> {window:.0f} s" if value is None else f"{value:.2f} s"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))
    return s[k]


def summary(series: Series, window: float) -> dict[str, Any]:
    shifts = [d.shift if d.shift is not None else float("inf") for d in series.drills]
    failed = [float(d.failed) for d in series.drills]
    lefts = [d.left if d.left is not None else float("inf") for d in series.drills]
    return {
        "system": series.system,
        "fault": series.fault,
        "drills": len(series.drills),
        "shift_p50": percentile(shifts, 50),
        "shift_p99": percentile(shifts, 99),
        "failed_total": int(sum(failed)),
        "failed_p50": percentile(failed, 50),
        "failed_p99": percentile(failed, 99),
        "requests": sum(d.requests for d in series.drills),
        "max_latency": max((d.max_latency for d in series.drills), default=0.0),
        "left_p50": percentile(lefts, 50) if series.system == "fedgate" else None,
        "left_p99": percentile(lefts, 99) if series.system == "fedgate" else None,
        "window": window,
        "note": series.note,
    }


def table(rows: list[dict[str, Any]]) -> str:
    def t(v: float | None, w: float) -> str:
        if v is None:
            return "-"
        return f"> {w:.0f} s" if v == float("inf") else f"{v:.2f} s"

    head = (
        "| system | fault | drills | time to 99% healthy p50 | p99 | failed requests "
        "(total / p50 / p99 per drill) | max latency | placement left p50 / p99 |"
    )
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        w = r["window"]
        lines.append(
            f"| {r['system']} | {r['fault']} | {r['drills']} | {t(r['shift_p50'], w)} | "
            f"{t(r['shift_p99'], w)} | {r['failed_total']} / {r['failed_p50']:.0f} / "
            f"{r['failed_p99']:.0f} (of {r['requests']}) | {r['max_latency']:.2f} s | "
            + (
                f"{t(r['left_p50'], w)} / {t(r['left_p99'], w)}"
                if r["left_p50"] is not None
                else "-"
            )
            + " |"
        )
    return "\n".join(lines)


async def endpoint_rows(args: argparse.Namespace, faults: list[str]) -> None:
    """The endpoint drills (default settings), this tree and optionally --base."""
    trees: list[tuple[str, str | None]] = [("this tree", None)]
    if args.base is not None:
        trees.append(("base", str(args.base.resolve())))
    lines = [
        "| code | method | drills | requests | failed | p99 before | p99 during | added p99 "
        "| POSTs executed twice |",
        "|" + "---|" * 9,
    ]
    for label, tree in trees:
        for fault in faults:
            method = fault.removeprefix("endpoint-").upper()
            runs = []
            for i in range(args.drills):
                d = await endpoint_drill(method, rate=args.rate, window=args.window, base=tree)
                runs.append(d)
                print(f"{label:9s} endpoint blackhole {method:4s} drill {i + 1}: failed "
                      f"{d.failed}/{d.requests} p99 {d.p99_before * 1000:.1f} -> "
                      f"{d.p99_during * 1000:.1f} ms, executed twice {d.executed_twice} "
                      f"{d.statuses}", flush=True)  # fmt: skip
            before = percentile([d.p99_before for d in runs], 50) * 1000
            during = percentile([d.p99_during for d in runs], 50) * 1000
            twice = sum(d.executed_twice for d in runs) if method == "POST" else None
            lines.append(
                f"| {label} | {method} | {len(runs)} | {sum(d.requests for d in runs)} | "
                f"{sum(d.failed for d in runs)} | {before:.1f} ms | {during:.1f} ms | "
                f"{during - before:.1f} ms | {'-' if twice is None else twice} |"
            )
    print()
    print("one endpoint blackholed (SIGSTOP), default settings; p99 columns: median of drills")
    print("\n".join(lines))


async def main_async(args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    faults = args.faults.split(",")
    endpoint = [f for f in faults if f.startswith("endpoint-")]
    if endpoint:
        await endpoint_rows(args, endpoint)
        args.faults = ",".join(f for f in faults if not f.startswith("endpoint-"))
        if not args.faults:
            return 0
    makers: dict[str, Callable[[], System]] = {
        "fedgate": Fedgate,
        "nginx": lambda: Peer("nginx"),
        "haproxy": lambda: Peer("haproxy"),
    }
    for name in args.systems.split(","):
        if name not in makers:
            print(f"unknown system {name!r}", file=sys.stderr)
            return 2
        if name in ("nginx", "haproxy") and shutil.which(name) is None:
            print(f"skipping {name}: not installed", file=sys.stderr)
            continue
        print(f"starting {name} ...", flush=True)
        system = await asyncio.to_thread(makers[name])
        try:
            for fault in args.faults.split(","):
                series = await run_series(
                    system,
                    fault,
                    drills=args.drills,
                    rate=args.rate,
                    window=args.window,
                    log=lambda s: print(s, flush=True),
                )
                rows.append(summary(series, args.window))
        finally:
            await asyncio.to_thread(system.close)
    print()
    print(table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--drills", type=int, default=10)
    p.add_argument("--rate", type=float, default=150.0)
    p.add_argument("--window", type=float, default=5.0, help="seconds each fault lasts")
    p.add_argument("--systems", default="fedgate,nginx,haproxy")
    p.add_argument("--faults", default="kill,blackhole")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument("--base", type=Path, default=None,
                   help="endpoint drills: also run them against this other checkout")  # fmt: skip
    args = p.parse_args(argv)
    if args.drills < 1 or args.rate <= 0 or args.window <= 0:
        print("--drills, --rate and --window must be positive", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    code = asyncio.run(main_async(args, rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    return code


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
