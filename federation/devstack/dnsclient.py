"""A client that finds the federation through its DNS, as a browser or an SDK would.

A dnspython resolver with a TTL-honouring cache, every gateway's DNS listener a name
server (so losing a region's name servers costs a timeout, not an outage); each request
resolves the host, then sends ``GET /`` to the first address that answers, trying the
next ones on a connection failure (what clients do with a multi-address answer). Used
by ``fedgate demo`` and the DNS tests.
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.resolver

from federation.devstack.localfed import DEMO_HOST


@dataclass
class DnsClientStats:
    requests: int = 0
    failed: int = 0
    served: dict[str, int] = field(default_factory=dict)  # address -> requests served
    errors: list[str] = field(default_factory=list)


class DnsClient:
    def __init__(self, fed: Any, host: str = DEMO_HOST, *, timeout: float = 1.0) -> None:
        gateways = [gw for gw in fed.gateways.values() if gw.dns]
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [gw.cluster.address for gw in gateways]
        r.nameserver_ports = {gw.cluster.address: gw.dns for gw in gateways}
        r.timeout, r.lifetime = 0.3, 2.0
        r.cache = dns.resolver.Cache()
        self.resolver = r
        self.ports = {gw.cluster.address: gw.public for gw in fed.gateways.values()}
        self.host = host
        self.timeout = timeout
        self.stats = DnsClientStats()

    def resolve(self) -> list[str]:
        return [rd.to_text() for rd in self.resolver.resolve(self.host, "A")]

    def request(self) -> str | None:
        """One request; the address that served it, None when it failed."""
        self.stats.requests += 1
        try:
            addresses = self.resolve()
        except dns.exception.DNSException as exc:
            self._fail(f"resolving: {type(exc).__name__}")
            return None
        for address in addresses:
            conn = http.client.HTTPConnection(
                address, self.ports.get(address, 80), timeout=self.timeout
            )
            try:
                conn.request("GET", "/", headers={"Host": self.host})
                if conn.getresponse().status == 200:
                    self.stats.served[address] = self.stats.served.get(address, 0) + 1
                    return address
            except OSError:
                continue  # the next address
            finally:
                conn.close()
        self._fail(f"every address failed: {', '.join(addresses)}")
        return None

    def _fail(self, error: str) -> None:
        self.stats.failed += 1
        if len(self.stats.errors) < 20:
            self.stats.errors.append(f"{time.strftime('%H:%M:%S')} {error}")
        return None
