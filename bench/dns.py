"""The federation's authoritative DNS: queries per CPU second against Knot DNS, and the
region-loss drill.

    .venv/bin/python bench/dns.py [--duration 8] [--inflight 64] [--drills 10]
        [--skip-qps] [--skip-drill]

**Queries per CPU second.** One fedgate gateway (``fedgate serve`` from a manifest, DNS
on, response-rate limiting off, pinned to CPU 0) and Knot DNS (``knotd``, one UDP
worker, the same zone as a zone file, pinned to CPU 0) are each loaded in turn by the
same client (pinned to CPU 1): one UDP socket keeping ``--inflight`` queries for
``shop.demo.local A`` (with EDNS) outstanding for ``--duration`` seconds. The figure is
answers received per CPU second (user + system) of the server's process group, so a
load generator slower than the server does not flatter or hurt either. NSD is
installed too; Knot was the one used (its configuration runs unprivileged in a temp
directory without further set-up).

**The drill.** A federation of three clusters on loopback (etcd, one gateway per
cluster, DNS on, ``LocalFederation``), tiers 0, 0, 1. Ten times: SIGKILL the gateway of
one tier-0 region (alternating), then ask every surviving gateway every ~10 ms until
none names the killed region any more: that time is the figure (p50/p99/max over the
drills); then restart the gateway and wait until the answers name it again. The
health check of the demo service pings other gateways every 250 ms and takes a
cluster out after 2 failures in a row (``healthCheck.interval`` / ``unhealthyAfter``:
the same settings steer the request path).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this file is named dns.py: its own folder must not shadow the dnspython package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import dns.flags  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import yaml  # noqa: E402

from bench.proxy import Procs, group_cpu  # noqa: E402
from federation.devstack.localfed import DEMO_HOST, DEMO_ZONE, LocalFederation  # noqa: E402
from federation.devstack.poll import wait_for  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

SERVER_CPU = "0"
STEADY = 10  # answers in a row naming the victim before a drill starts
GONE = 5  # answers in a row without it: it has left (not a draw of a ramping group)
LOAD_CPU = "1"
HOST = "127.0.0.1"
ZONE_FILE = f"""\
$ORIGIN {DEMO_ZONE}.
$TTL 60
@ SOA ns-a hostmaster 1 60 10 3600 5
@ NS ns-a
ns-a A 127.0.0.11
shop 5 A 127.0.0.11
shop 5 A 127.0.0.12
*.shop 5 A 127.0.0.11
*.shop 5 A 127.0.0.12
"""
MANIFEST = f"""\
apiVersion: fedgate/v1
kind: Federation
metadata: {{name: bench}}
clusters:
  - name: a
    region: r1
    cloud: aws
    gateway: {{eastWest: "http://127.0.0.11:15443"}}
    publicEntry: {{addresses: [127.0.0.11]}}
  - name: b
    region: r2
    cloud: gcp
    gateway: {{eastWest: "http://127.0.0.12:15443"}}
    publicEntry: {{addresses: [127.0.0.12]}}
services:
  - name: shop
    routes: [{{host: {DEMO_HOST}}}, {{host: "*.{DEMO_HOST}"}}]
    port: 8080
    clusters: [a, b]
    endpoints: {{a: ["127.0.0.11:1"], b: ["127.0.0.12:1"]}}
zones: [{{name: {DEMO_ZONE}}}]
"""


# ------------------------------------------------------------------ load
def queries(mode: str, rng: random.Random) -> list[bytes]:
    """Query packets (with EDNS) to cycle through.

    ``same``: shop.demo.local A with its letter case randomised per query (as 0x20
    resolvers do), 4096 variants cycled; ``unique``: one template whose first label
    (12 characters under *.shop.demo.local) :func:`load` rewrites for every query, so no
    name repeats and no server can answer from a cache of packed responses."""
    if mode == "unique":
        return [dns.message.make_query(f"{0:012x}.{DEMO_HOST}", "A", use_edns=0).to_wire()]
    out = []
    for _ in range(4096):
        name = "".join(c.upper() if rng.random() < 0.5 else c for c in DEMO_HOST)
        out.append(dns.message.make_query(name, "A", use_edns=0).to_wire())
    return out


def load(port: int, *, duration: float, inflight: int, mode: str) -> tuple[int, int]:
    """(answers, timeouts): keep ``inflight`` queries outstanding on one UDP socket."""
    rng = random.Random(7)
    packets = queries(mode, rng)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((HOST, port))
    sock.settimeout(0.2)
    answers = timeouts = 0
    end = time.monotonic() + duration
    outstanding = 0
    i = time.monotonic_ns() & 0xFFFFFFFFFF  # a new range of names for every run
    try:
        while time.monotonic() < end:
            while outstanding < inflight:
                i += 1
                qid = rng.getrandbits(16).to_bytes(2, "big")
                packet = packets[i % len(packets)]
                if mode == "unique":  # a fresh first label: bytes 13..25 (after its length)
                    label = f"{i:012x}".encode()
                    packet = packet[:13] + label + packet[25:]
                sock.send(qid + packet[2:])
                outstanding += 1
            try:
                sock.recv(2048)
                answers += 1
                outstanding -= 1
            except TimeoutError:
                timeouts += outstanding
                outstanding = 0
    finally:
        sock.close()
    return answers, timeouts


def measure(name: str, pgid: int, port: int, args: argparse.Namespace) -> dict[str, float]:
    out = {}
    for mode in ("same", "unique"):
        load(port, duration=1.0, inflight=args.inflight, mode=mode)  # warm up
        cpu0 = group_cpu(pgid)
        t0 = time.monotonic()
        answers, timeouts = load(port, duration=args.duration, inflight=args.inflight, mode=mode)
        elapsed = time.monotonic() - t0
        cpu = group_cpu(pgid) - cpu0
        per_cpu = out[mode] = answers / cpu if cpu > 0 else 0.0
        print(
            f"  {name:<8} {mode:<7} {answers / elapsed:>8.0f} answers/s  {cpu:6.2f} CPU-s  "
            f"{per_cpu:>9.0f} answers/CPU-s  ({timeouts} unanswered)",
            flush=True,
        )
    return out


def wait_dns(port: int, timeout: float = 20.0) -> None:
    def ok() -> bool:
        q = dns.message.make_query(DEMO_HOST, "A")
        return bool(dns.query.udp(q, HOST, port=port, timeout=0.5).answer)

    wait_for(ok, timeout=timeout, interval=0.1, what=f"DNS on port {port}")


def qps(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="fedgate-bench-dns-"))
    out: dict[str, dict[str, float]] = {}
    try:
        print(f"queries per CPU second ({args.duration:.0f} s, {args.inflight} in flight)")
        port = free_port(HOST)
        (tmp / "manifest.yaml").write_text(MANIFEST)
        settings = {
            "cluster": "a",
            "manifest": str(tmp / "manifest.yaml"),
            "listen": {
                "public": f"{HOST}:{free_port(HOST)}",
                "eastWest": None,
                "admin": f"{HOST}:{free_port(HOST)}",
                "dns": f"{HOST}:{port}",
            },
            "dns": {"responsesPerSecond": 0},
            "telemetry": {"accessLog": False, "tracing": {"enabled": False}},
        }
        (tmp / "gateway.yaml").write_text(yaml.safe_dump(settings))
        fed = procs.start(
            [
                sys.executable,
                "-m",
                "federation.cli",
                "serve",
                "--config",
                str(tmp / "gateway.yaml"),
            ],
            cpu=SERVER_CPU,
            log=tmp / "fedgate.log",
        )
        wait_dns(port)
        out["fedgate"] = measure("fedgate", fed.pid, port, args)
        procs.stop(fed)

        if shutil.which("knotd") is None:
            print("  knot     not installed (apt-get install knot): no peer figure")
            return out
        kport = free_port(HOST)
        (tmp / f"{DEMO_ZONE}.zone").write_text(ZONE_FILE)
        (tmp / "knot.conf").write_text(
            f'server:\n  rundir: "{tmp}"\n  listen: {HOST}@{kport}\n  udp-workers: 1\n'
            f"  tcp-workers: 1\n  background-workers: 1\n"
            f'database:\n  storage: "{tmp}"\n'
            f"log:\n  - target: stderr\n    any: warning\n"
            f'zone:\n  - domain: {DEMO_ZONE}\n    storage: "{tmp}"\n'
            f'    file: "{DEMO_ZONE}.zone"\n'
        )
        knot = procs.start(
            ["knotd", "-c", str(tmp / "knot.conf")], cpu=SERVER_CPU, log=tmp / "knot.log"
        )
        wait_dns(kport)
        out["knot"] = measure("knot", knot.pid, kport, args)
        procs.stop(knot)
        for mode in ("same", "unique"):
            ratio = out["fedgate"][mode] / out["knot"][mode]
            print(f"  fedgate / knot ({mode}): {ratio:.2f}x answers per CPU second")
        return out
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ drill
def answer(fed: LocalFederation, cluster: str) -> set[str]:
    gw = fed.gateways[cluster]
    q = dns.message.make_query(DEMO_HOST, "A", use_edns=0)
    try:
        r = dns.query.udp(q, gw.cluster.address, port=gw.dns, timeout=0.3)
    except Exception:
        return set()
    return {rd.to_text() for rrset in r.answer for rd in rrset}


def drill(args: argparse.Namespace) -> list[float]:
    print(f"drill: a region's gateways SIGKILLed, {args.drills} times")
    times: list[float] = []
    with LocalFederation(use_vault=False, dns=True, dns_settings={"responsesPerSecond": 0}) as fed:
        tier0 = [s for s in fed.topology if s.tier == 0]
        for i in range(args.drills):
            victim = tier0[i % len(tier0)]
            others = [c for c in fed.gateways if c != victim.name]
            # steady first: every gateway names the victim in STEADY answers in a row (a
            # cluster ramping back after the previous drill is not yet in every answer)
            streak = dict.fromkeys(others, 0)

            def steady(v: str = victim.address, st: dict[str, int] = streak) -> bool:
                for c in st:
                    st[c] = st[c] + 1 if v in answer(fed, c) else 0
                return all(n >= STEADY for n in st.values())

            wait_for(steady, timeout=60, interval=0.02, what=f"{victim.name} in every answer")
            fed.kill_gateway(victim.name)
            t0 = time.monotonic()
            # gone: GONE answers in a row without it; the time is the first of them
            first: dict[str, float] = {}
            misses = dict.fromkeys(others, 0)
            while time.monotonic() - t0 < 20 and min(misses.values()) < GONE:
                for c in others:
                    if misses[c] >= GONE:
                        continue
                    got = answer(fed, c)
                    if got and victim.address not in got:
                        if misses[c] == 0:
                            first[c] = time.monotonic()
                        misses[c] += 1
                    else:
                        misses[c] = 0
                time.sleep(0.01)
            took = max(first.values(), default=time.monotonic()) - t0
            times.append(took)
            print(f"  drill {i + 1:>2}: {victim.name} gone from every answer after {took:.3f} s")
            fed.restart_gateway(victim.name)
    times.sort()
    p99 = times[math.ceil(0.99 * len(times)) - 1]  # nearest rank: the max of 10
    print(
        f"  p50 {statistics.median(times):.3f} s, p99 {p99:.3f} s, max {times[-1]:.3f} s "
        f"over {len(times)} drills (answers' TTL: 1 s)"
    )
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--inflight", type=int, default=64)
    p.add_argument("--drills", type=int, default=10)
    p.add_argument("--skip-qps", action="store_true")
    p.add_argument("--skip-drill", action="store_true")
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(LOAD_CPU)})  # the load generator stays off CPU 0
    if not args.skip_qps:
        qps(args)
    if not args.skip_drill:
        drill(args)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
