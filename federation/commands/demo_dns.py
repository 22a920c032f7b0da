"""The DNS part of ``fedgate demo``: a client that finds the federation through its DNS
keeps working while a whole region's gateways (its name servers too) are SIGKILLed.

The client (``federation.devstack.dnsclient``) resolves ``shop.demo.local`` with a
dnspython resolver whose name servers are every gateway's DNS listener, honours the
answers' TTL (1 s in the demo) and sends each request to the first address that
answers. The drill kills one tier-0 region's gateway, prints when every surviving name
server stopped naming it, and counts the client's failed requests (expected: 0).
"""

from __future__ import annotations

import time
from typing import Any

import dns.message
import dns.query

from federation.devstack.dnsclient import DnsClient
from federation.devstack.localfed import DEMO_HOST

KILL_AT = 2.0  # seconds into the DNS drill
SECONDS = 8.0


def _answer(fed: Any, cluster: str) -> set[str]:
    gw = fed.gateways[cluster]
    try:
        q = dns.message.make_query(DEMO_HOST, "A", use_edns=0)
        r = dns.query.udp(q, gw.cluster.address, port=gw.dns, timeout=0.3)
    except Exception:
        return set()
    return {rd.to_text() for rrset in r.answer for rd in rrset}


def dns_drill(fed: Any, palette: Any) -> dict[str, Any]:
    """Run the drill (blocking, ~8 s); a report for the demo's closing summary."""
    tier0 = [n for n, gw in fed.gateways.items() if gw.cluster.tier == 0 and gw.proc.running]
    victim = tier0[-1]
    address = fed.gateways[victim].cluster.address
    others = [n for n in fed.gateways if n != victim]
    client = DnsClient(fed)
    print(
        palette.bold(
            f"\nDNS: a client resolving {DEMO_HOST} through the federation's name servers "
            f"({', '.join(f'{g.cluster.address}:{g.dns}' for g in fed.gateways.values())})"
        )
    )
    print(f"  answers now: {', '.join(sorted(client.resolve()))}")
    start = time.monotonic()
    killed_at: float | None = None
    left_after: float | None = None
    second = 0
    while time.monotonic() - start < SECONDS:
        client.request()
        now = time.monotonic()
        if killed_at is None and now - start >= KILL_AT:
            print(palette.red(f">>> SIGKILL to {victim}'s gateway (its name server goes too)"))
            fed.kill_gateway(victim)
            killed_at = time.monotonic()
        if (
            killed_at is not None
            and left_after is None
            and all((got := _answer(fed, c)) and address not in got for c in others)
        ):
            left_after = time.monotonic() - killed_at
            print(
                palette.yellow(
                    f">>> every surviving name server stopped answering {address} "
                    f"({left_after:.2f}s after the kill)"
                )
            )
        if int(now - start) > second:
            second = int(now - start)
            served = ", ".join(f"{a}: {n}" for a, n in sorted(client.stats.served.items()))
            failed = client.stats.failed
            shown = palette.green("failed 0") if not failed else palette.red(f"failed {failed}")
            print(f"[DNS {second:2d}s] {client.stats.requests:4d} requests | {served} | {shown}")
        time.sleep(0.05)  # client pacing
    return {
        "victim": victim,
        "requests": client.stats.requests,
        "failed": client.stats.failed,
        "left_answers_after_s": left_after,
        "errors": client.stats.errors,
    }


def print_dns_report(report: dict[str, Any], palette: Any) -> None:
    left = report["left_answers_after_s"]
    failed = report["failed"]
    print(f"  DNS client requests           {report['requests']}")
    shown = palette.green("0") if not failed else palette.red(str(failed))
    print(f"  DNS client failed requests    {shown}")
    print(
        f"  {report['victim']} left every answer after "
        f"{f'{left:.2f}s' if left is not None else palette.red('never')}"
    )
    for e in report["errors"][:5]:
        print(palette.dim(f"    {e}"))
