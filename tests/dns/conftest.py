"""A real federation with the authoritative DNS on: etcd, backends and one gateway process
per cluster (``LocalFederation(dns=True)``), and small resolver helpers (dnspython)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest

from federation.devstack.localfed import DEMO_HOST, DEMO_ZONE, ClusterSpec, LocalFederation
from tests.support.wait import wait_for

# a, b: tier 0; c: tier 1 (a CNAME entry); every cluster is a loopback address
TOPOLOGY = (
    ClusterSpec("a", "aws", "eu-west-1", 0, "127.0.0.11", backends=1),
    ClusterSpec("b", "gcp", "europe-west4", 0, "127.0.0.12", backends=1),
    ClusterSpec("c", "onprem", "fra1", 1, "127.0.0.13", backends=1),
)
# enough addresses for b that an answer naming a and b needs more than 512 bytes
B_EXTRA = [f"198.51.100.{i}" for i in range(1, 40)]
V6 = "2001:db8::11"
NEAR = "10.1.0.0/16"  # the clients of this network prefer b for geo.demo.local


class DnsFederation(LocalFederation):
    """The demo federation plus the names the DNS tests need."""

    def manifest(self) -> dict[str, Any]:
        doc = super().manifest()
        by_name = {c["name"]: c for c in doc["clusters"]}
        by_name["a"]["publicEntry"] = {"addresses": ["127.0.0.11", V6]}
        by_name["b"]["publicEntry"] = {"addresses": ["127.0.0.12", *B_EXTRA]}
        by_name["c"]["publicEntry"] = {"hostname": "lb.c.example.net"}
        shop = doc["services"][0]
        # a cluster that came up after the others gets its share at once, not over 5 s
        shop["failover"]["failbackWindow"] = "0s"
        endpoints = shop["endpoints"]
        doc["services"] += [
            {
                "name": "legacy",
                "routes": [{"host": f"*.legacy.{DEMO_ZONE}"}],
                "port": 8080,
                "clusters": ["c"],
                "endpoints": {"c": endpoints["c"]},
            },
            {
                "name": "geo",
                "routes": [{"host": f"geo.{DEMO_ZONE}"}],
                "port": 8080,
                "clusters": ["a", "b"],
                "endpoints": {"a": endpoints["a"], "b": endpoints["b"]},
                "dns": {
                    "strategy": "nearest",
                    "ttl": "3s",
                    "nearest": [{"cidr": NEAR, "clusters": ["b", "a"]}],
                },
            },
        ]
        return doc


def start(topology: tuple[ClusterSpec, ...] = TOPOLOGY, **kw: Any) -> DnsFederation:
    fed = DnsFederation(
        topology=topology,
        use_vault=False,
        dns=True,
        dns_settings={"responsesPerSecond": 0},  # the tests send bursts from one address
        **kw,
    )
    try:
        return fed.start()
    except BaseException:
        fed.close()
        raise


def converged(fed: DnsFederation, timeout: float = 30.0) -> None:
    """Every gateway's DNS names both tier-0 clusters for the demo host: each has seen
    the other's health (a gateway that just started knows only its own cluster, so the
    first answers may name fewer clusters; the tests assert the settled answer)."""
    tier0 = sorted(["127.0.0.11", "127.0.0.12", *B_EXTRA])

    def settled() -> bool:
        return all(
            addresses(ask(server(fed, name), DEMO_HOST, "A", use_edns=0, timeout=1.0)) == tier0
            for name in fed.gateways
        )

    wait_for(settled, timeout=timeout, what="every gateway answers with both tier-0 clusters")


@pytest.fixture(scope="module")
def fed() -> Iterator[DnsFederation]:
    f = start()
    try:
        converged(f)
        yield f
    finally:
        f.close()


def server(fed: LocalFederation, cluster: str) -> tuple[str, int]:
    gw = fed.gateways[cluster]
    return gw.cluster.address, gw.dns


def ask(
    where: tuple[str, int],
    name: str,
    rdtype: str = "A",
    *,
    tcp: bool = False,
    timeout: float = 3.0,
    **make: Any,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **make)
    if tcp:
        return dns.query.tcp(query, where[0], port=where[1], timeout=timeout)
    return dns.query.udp(query, where[0], port=where[1], timeout=timeout, ignore_trailing=False)


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


def rcode(msg: dns.message.Message) -> str:
    return dns.rcode.to_text(msg.rcode())
