"""The names the federation's DNS serves, compiled once per configuration from a view.

A :class:`NameIndex` holds, for every zone of the view (``RoutingView.zones``):

- the zone's apex with its SOA and its NS set: one name per cluster with a live DNS
  listener, ``ns-<cluster>.<zone>``, whose A/AAAA records (the glue) are the advertised
  DNS addresses of that cluster's live gateways, so the delegation survives the loss of
  any region;
- the service that owns each route host in the zone: exact hosts before wildcards
  (``*.acme.com`` matches one or more labels in front, the longest suffix wins), as the
  request path matches them (``gateway/routing.py``); a host with several path prefixes
  belongs to the service of its shortest prefix (DNS cannot see paths);
- the names that exist without records (empty non-terminals: ``b.acme.com`` when
  ``a.b.acme.com`` is a route), which answer NODATA rather than NXDOMAIN.

Names are lower case without the trailing dot. Lookup cost is one dictionary probe per
label of the query name.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from federation.model import RoutingView, Service, Zone

NS_PREFIX = "ns-"


@dataclass(frozen=True, slots=True)
class ZoneInfo:
    zone: Zone
    ns: tuple[str, ...]  # NS target names, sorted
    hostmaster: str


@dataclass(frozen=True, slots=True)
class Owner:
    """What a name in a zone is: a service's host, an NS name, or only a node."""

    zone: ZoneInfo
    service: str = ""  # the service whose route host this is ("" when none)
    host: str = ""  # the route host that matched (exact or "*.suffix")
    glue: tuple[str, ...] = ()  # addresses of an NS name


@dataclass(frozen=True, slots=True)
class NameIndex:
    zones: Mapping[str, ZoneInfo]
    exact: Mapping[str, tuple[str, str]]  # host -> (service, route host)
    wild: Mapping[str, tuple[str, str]]  # ".suffix" -> (service, route host)
    glue: Mapping[str, tuple[str, ...]]  # NS name -> addresses
    nodes: frozenset[str]  # every name that exists (hosts, their ancestors in the zone, NS)
    services: Mapping[str, Service]  # the service as DNS plans it (see dns_service)
    serial: int

    def zone_of(self, name: str) -> ZoneInfo | None:
        """The zone ``name`` lies in (the longest one), None when outside every zone."""
        return _zone_of(self.zones, name)

    def owner(self, name: str, zone: ZoneInfo) -> Owner | None:
        """What ``name`` (inside ``zone``) is; None when it does not exist (NXDOMAIN)."""
        glue = self.glue.get(name)
        if glue is not None:
            return Owner(zone, glue=glue)
        hit = self.exact.get(name)
        if hit is not None:
            return Owner(zone, service=hit[0], host=hit[1])
        apex = zone.zone.name
        dot = name.find(".")
        while dot > 0 and len(name) - dot - 1 >= len(apex):
            hit = self.wild.get(name[dot:])
            if hit is not None:  # as the request path routes it, even over an empty node
                return Owner(zone, service=hit[0], host=hit[1])
            dot = name.find(".", dot + 1)
        if name in self.nodes:
            return Owner(zone)
        return None


def _zone_of(zones: Mapping[str, ZoneInfo], name: str) -> ZoneInfo | None:
    if not zones:
        return None
    dot = -1
    while True:
        info = zones.get(name[dot + 1 :])
        if info is not None:
            return info
        dot = name.find(".", dot + 1)
        if dot < 0:
            return None


def dns_service(service: Service) -> Service:
    """The service as DNS plans it: strategy ``ordered`` plans with the ordered failover
    policy over ``dns.order`` (else ``failover.order``, else the service's clusters)."""
    if service.dns.strategy != "ordered":
        return service
    order = service.dns.order or service.failover.order or service.clusters
    failover = dataclasses.replace(service.failover, policy="ordered", order=order)
    return dataclasses.replace(service, failover=failover)


def glue_address(hostport: str) -> str | None:
    """The IP address of a gateway's advertised ``host:port`` (None: not an IP literal)."""
    host = hostport.rpartition(":")[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def build_index(view: RoutingView, *, own: tuple[str, str] | None = None) -> NameIndex:
    """Compile ``view``'s zones; ``own`` = (cluster, advertised address) of this gateway,
    counted as live even when the view holds no gateway records (a manifest view)."""
    dns_gateways: dict[str, list[str]] = {}
    for g in sorted(view.gateways.values(), key=lambda g: g.id):
        address = glue_address(g.dns) if g.dns else None
        if address is not None and address not in dns_gateways.setdefault(g.cluster, []):
            dns_gateways[g.cluster].append(address)
    if own is not None and (address := glue_address(own[1])) is not None:
        mine = dns_gateways.setdefault(own[0], [])
        if address not in mine:
            mine.append(address)
    zones: dict[str, ZoneInfo] = {}
    glue: dict[str, tuple[str, ...]] = {}
    nodes: set[str] = set()
    for zone in view.zones:
        ns = tuple(sorted(f"{NS_PREFIX}{c}.{zone.name}" for c in dns_gateways))
        for cluster, addresses in dns_gateways.items():
            glue[f"{NS_PREFIX}{cluster}.{zone.name}"] = tuple(addresses)
        zones[zone.name] = ZoneInfo(
            zone=zone, ns=ns, hostmaster=zone.hostmaster or f"hostmaster.{zone.name}"
        )
        nodes.add(zone.name)
    exact: dict[str, tuple[str, str, int]] = {}
    wild: dict[str, tuple[str, str, int]] = {}
    services: dict[str, Service] = {}
    for name in sorted(view.services):
        service = view.services[name]
        for route in service.routes:
            host = route.host.lower().rstrip(".")
            bare = host[2:] if host.startswith("*.") else host
            info = _zone_of(zones, bare)
            if info is None:
                continue
            services[name] = dns_service(service)
            rank = len(route.path_prefix or "/")
            table, key = (wild, host[1:]) if host.startswith("*.") else (exact, host)
            current = table.get(key)
            if current is None or rank < current[2]:  # the shortest prefix owns the name
                table[key] = (name, host, rank)
            # the name's ancestors inside the zone exist (empty non-terminals)
            node = bare
            while True:
                nodes.add(node)
                if node == info.zone.name:
                    break
                node = node.split(".", 1)[1]
    nodes.update(glue)
    return NameIndex(
        zones=MappingProxyType(zones),
        exact=MappingProxyType({k: (v[0], v[1]) for k, v in exact.items()}),
        wild=MappingProxyType({k: (v[0], v[1]) for k, v in wild.items()}),
        glue=MappingProxyType(glue),
        nodes=frozenset(nodes),
        services=MappingProxyType(services),
        serial=view.config_revision % 2**32,
    )
