"""Discovery caps a service's endpoints at what every gateway accepts in one key.

``federation/limits.py`` allows 1,000 endpoints per (service, cluster, source) key and
every gateway refuses a longer value. Discovery used to write whatever the API server
listed, so a service scaled past 1,000 pods got a key every gateway refused (its
endpoints in this cluster frozen at the last value under the limit, or absent on a
fresh gateway). It now writes the cap itself, routable endpoints first, and says so:
one warning line, ``status()["dropped"]``, ``fedgate_discovery_endpoints_dropped``.
Against the API-server double and a real etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry, generate_latest

from federation.codec import decode_list
from federation.discovery import EndpointDiscovery, cap_endpoints
from federation.etcd import EtcdClient
from federation.limits import MAX_ENDPOINTS_PER_KEY
from federation.liveness import GatewayLease
from federation.model import Endpoint
from tests.federation.test_discovery import CLUSTER, LAYOUT, _cluster, _service
from tests.support.kube_api import KubeApiServer
from tests.support.promlint import lint_text
from tests.support.wait import async_wait_for

SOURCE = "k8s-cap"


def _ep(i: int, *, ready: bool = True) -> Endpoint:
    return Endpoint(f"10.0.{i // 256}.{i % 256}:80", CLUSTER, "shop", ready=ready, source="k")


def test_cap_keeps_routable_endpoints_first_in_address_order() -> None:
    eps = tuple(_ep(i, ready=i % 2 == 0) for i in range(10))
    assert cap_endpoints(eps, 10) == (eps, 0)
    assert cap_endpoints(eps, 10)[0] is eps  # under the cap: nothing rebuilt
    kept, dropped = cap_endpoints(eps, 4)
    assert dropped == 6 and len(kept) == 4
    assert all(e.routable for e in kept)
    assert [e.address for e in kept] == sorted(e.address for e in kept)
    kept, dropped = cap_endpoints(eps, 7)  # every routable one, then unready ones
    assert dropped == 3 and sum(e.routable for e in kept) == 5


@contextlib.asynccontextmanager
async def discovering(
    kube: KubeApiServer, store: tuple[EtcdClient, GatewayLease], registry: CollectorRegistry
) -> AsyncIterator[EndpointDiscovery]:
    client, lease = store
    api = k8s.ApiClient(kube.configuration())
    discovery = EndpointDiscovery(
        client=client, layout=LAYOUT, lease=lease, cluster=_cluster("shop"),
        services=lambda: [_service("checkout")], api_client=api, source=SOURCE,
        watch_timeout=2, request_timeout=5.0, rescan_interval=0.05,
        backoff_base=0.05, backoff_cap=0.5, registry=registry,
    )  # fmt: skip
    task = asyncio.create_task(discovery.run())
    try:
        yield discovery
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        api.close()


async def _written(client: EtcdClient, count: int) -> tuple[Endpoint, ...]:
    """Wait until etcd holds ``count`` endpoints of checkout, decoded as a gateway does."""

    async def check() -> list[tuple[Endpoint, ...]]:
        kv = await client.get(LAYOUT.endpoints("checkout", CLUSTER, SOURCE))
        if kv is None:
            return []
        eps = decode_list(Endpoint, kv.value)  # what every gateway runs (refuses > cap)
        return [eps] if len(eps) == count else []

    found: list[tuple[Endpoint, ...]] = await async_wait_for(
        check, timeout=30.0, interval=0.1, what=f"{count} endpoints of checkout in etcd"
    )
    return found[0]


async def test_a_service_past_the_cap_is_written_capped_and_said_so(
    kube: KubeApiServer, store: tuple[EtcdClient, GatewayLease], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = store
    over = 7
    kube.add_service("shop", "checkout", slice_size=250)
    pods = kube.scale("shop", "checkout", MAX_ENDPOINTS_PER_KEY + over)
    for pod in pods[:3]:  # unready pods are the ones left out
        kube.set_pod("shop", pod, ready=False, serving=False)
    registry = CollectorRegistry(auto_describe=False)
    caplog.set_level(logging.INFO, logger="federation.discovery")
    async with discovering(kube, store, registry) as discovery:
        eps = await _written(client, MAX_ENDPOINTS_PER_KEY)
        assert all(e.routable for e in eps)
        assert discovery.status()["dropped"] == {"checkout": over}
        text = generate_latest(registry).decode()
        assert f'fedgate_discovery_endpoints_dropped{{service="checkout"}} {over}.0' in text
        assert lint_text(text) == []
        # back under the cap: everything written, the note and the series gone
        kube.scale("shop", "checkout", MAX_ENDPOINTS_PER_KEY - 10)
        await _written(client, MAX_ENDPOINTS_PER_KEY - 10)
        assert discovery.status()["dropped"] == {}
        text = generate_latest(registry).decode()
        assert 'fedgate_discovery_endpoints_dropped{service="checkout"}' not in text
    logs = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    capped = [e for e in logs if e["event"] == "endpoints.capped"]
    assert len(capped) == 1, capped  # one line, not one per write
    assert capped[0]["level"] == "warning"
    assert capped[0]["found"] == MAX_ENDPOINTS_PER_KEY + over
    assert capped[0]["written"] == MAX_ENDPOINTS_PER_KEY
    assert any(e["event"] == "endpoints.cap_lifted" for e in logs)
