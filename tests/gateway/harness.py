"""Build and run a gateway in-process for the request-path tests.

``view_of(...)`` makes a RoutingView from model objects; ``running_gateway(view)`` starts a
real :class:`gateway.server.Gateway` (public + east-west listeners on free loopback ports)
on the test's event loop and always drains it at the end.

``FEDGATE_DATAPLANE_PATH=asgi`` runs every gateway of these tests without the callback
fast path (every request the ASGI way); the default, ``fast``, is what production runs.
``make test`` style: ``FEDGATE_DATAPLANE_PATH=asgi pytest tests/gateway``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from federation.model import Cluster, Endpoint, Route, RoutingView, Service
from federation.settings import GatewaySettings
from gateway.balancer import Balancer
from gateway.config import DataPlaneSettings
from gateway.passive import PassiveStats
from gateway.placement import Placement
from gateway.ratelimit import RateLimiter
from gateway.resilience import CircuitBreakers, RetryBudget
from gateway.server import Gateway
from gateway.telemetry import Telemetry
from gateway.tls import TlsContexts
from gateway.types import ViewHolder


def cluster(name: str, *, east_west: str = "", tier: int = 0) -> Cluster:
    return Cluster(name=name, region=name, cloud="other", environment="test", tier=tier,
                   east_west=east_west)  # fmt: skip


def service(name: str, host: str, prefix: str = "/", *, clusters: Sequence[str] = ("c1",),
            **kw: Any) -> Service:  # fmt: skip
    return Service(name=name, routes=(Route(host=host, path_prefix=prefix),), port=80,
                   clusters=tuple(clusters), **kw)  # fmt: skip


def view_of(
    services: Sequence[Service],
    clusters: Sequence[Cluster] = (),
    endpoints: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> RoutingView:
    eps = {
        key: tuple(Endpoint(address=a, cluster=key[1], service=key[0]) for a in addrs)
        for key, addrs in (endpoints or {}).items()
    }
    cl = list(clusters) or [cluster("c1")]
    return RoutingView(
        revision=1,
        config_revision=1,
        federation="test",
        clusters=MappingProxyType({c.name: c for c in cl}),
        services=MappingProxyType({s.name: s for s in services}),
        endpoints=MappingProxyType(eps),
        source="manifest",
    )


def settings_for(
    cluster_name: str = "c1", *, host: str = "127.0.0.1", **extra: Any
) -> GatewaySettings:
    data: dict[str, Any] = {
        "cluster": cluster_name,
        "listen": {"public": f"{host}:0", "eastWest": f"{host}:0", "admin": f"{host}:0"},
        "insecureEastWest": True,
    }
    for k, v in extra.items():
        data[k] = v
    return GatewaySettings.model_validate(data)


FAST_PATH = os.environ.get("FEDGATE_DATAPLANE_PATH", "fast") != "asgi"


@dataclass
class RunningGateway:
    gateway: Gateway
    holder: ViewHolder
    balancer: Balancer
    placement: Placement

    def addr(self, listener: str = "public") -> tuple[str, int]:
        return self.gateway.bound[listener]

    def url(self, listener: str = "public") -> str:
        h, p = self.addr(listener)
        return f"http://{h}:{p}"


@contextlib.asynccontextmanager
async def running_gateway(
    view: RoutingView,
    *,
    settings: GatewaySettings | None = None,
    telemetry: Telemetry | None = None,
    drain_timeout: float = 2.0,
    tls: TlsContexts | None = None,
    fast_path: bool | None = None,
    max_connections: int | None = None,
) -> AsyncIterator[RunningGateway]:
    """``fast_path`` None: as ``FEDGATE_DATAPLANE_PATH`` says."""
    s = DataPlaneSettings.from_settings(settings or settings_for())
    s = dataclasses.replace(s, fast_path=FAST_PATH if fast_path is None else fast_path)
    if max_connections is not None:
        s = dataclasses.replace(
            s, limits=dataclasses.replace(s.limits, max_connections=max_connections)
        )
    holder = ViewHolder(view)
    balancer = Balancer()
    placement = Placement(s.cluster)
    gw = Gateway(
        settings=s,
        holder=holder,
        placement=placement,
        balancer=balancer,
        breakers=CircuitBreakers(),
        budget=RetryBudget(),
        limiter=RateLimiter(),
        telemetry=telemetry or Telemetry.disabled(gateway_id="gw", cluster=s.cluster),
        passive=PassiveStats(),
        tls=tls,
        admin_app=None,
    )
    await gw.start()
    try:
        yield RunningGateway(gw, holder, balancer, placement)
    finally:
        await gw.drain(drain_timeout)
