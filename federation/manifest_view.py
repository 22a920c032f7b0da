"""A routing view straight from a manifest: the development view source (``manifest:``).

In production the view comes from etcd (``federation.watch``); a gateway started with
``manifest: FILE`` in its settings serves this static view instead (no etcd, no
liveness, no shared health): handy for a single gateway on a laptop and for tests of
the request path.
"""

from __future__ import annotations

from types import MappingProxyType

from federation.model import Endpoint, Federation, RoutingView, Service


def static_endpoints(service: Service) -> dict[tuple[str, str], tuple[Endpoint, ...]]:
    """The manifest's static endpoints of one service, keyed by (service, cluster)."""
    return {
        (service.name, cluster): tuple(
            Endpoint(address=addr, cluster=cluster, service=service.name, source="static")
            for addr in addresses
        )
        for cluster, addresses in service.endpoints.items()
    }


def view_from_federation(fed: Federation, *, now: float, revision: int = 0) -> RoutingView:
    endpoints: dict[tuple[str, str], tuple[Endpoint, ...]] = {}
    for svc in fed.services:
        endpoints.update(static_endpoints(svc))
    return RoutingView(
        revision=revision,
        config_revision=revision,
        federation=fed.name,
        clusters=MappingProxyType({c.name: c for c in fed.clusters}),
        services=MappingProxyType({s.name: s for s in fed.services}),
        endpoints=MappingProxyType(endpoints),
        source="manifest",
        zones=fed.zones,
    )
