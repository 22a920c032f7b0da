"""The data plane's view listener and the incremental view: a swap that keeps
``view.services`` (the same object: a health, endpoint or gateway change) does no route
work at all; a service change rebuilds the table (only what changed, see
``gateway.route_index``), counted in ``DataPlane.route_builds``."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from federation.model import HealthState, ServiceHealth
from tests.gateway.harness import running_gateway, service, view_of


async def test_runtime_swaps_keep_the_route_table_and_config_swaps_rebuild_it() -> None:
    view = view_of([service("shop", "shop.test")], endpoints={})
    async with running_gateway(view) as gw:
        plane = gw.gateway.plane
        builds, table = plane.route_builds, plane.current[1]
        health = MappingProxyType(
            {("shop", "c1"): ServiceHealth("shop", "c1", HealthState.HEALTHY, 1.0)}
        )
        runtime = replace(gw.holder.view, revision=view.revision + 1, health=health)
        gw.holder.swap(runtime)
        assert plane.current == (runtime, table) and plane.route_builds == builds
        config = replace(
            runtime,
            revision=runtime.revision + 1,
            services=MappingProxyType({**runtime.services, "cart": service("cart", "cart.test")}),
        )
        gw.holder.swap(config)
        assert plane.route_builds == builds + 1 and plane.current[1] is not table
        assert plane.current[1].match("cart.test", "/") is not None
