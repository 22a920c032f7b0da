"""Kubernetes discovery against the API-server double, real etcd and the official client.

Every scenario ends the same way: the endpoints in etcd equal the double's pods
(address, ready, serving, terminating, zone), polled with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client as k8s

from federation.codec import decode_list
from federation.discovery import Backoff, EndpointDiscovery, endpoints_from_slices
from federation.etcd import EtcdClient
from federation.keys import KeyLayout
from federation.liveness import GatewayLease
from federation.model import Cluster, Endpoint, KubernetesDiscovery, Service
from tests.support.etcd import EtcdCluster
from tests.support.kube_api import KubeApiServer
from tests.support.wait import async_wait_for

CLUSTER = "aws-eu-west-1"
LAYOUT = KeyLayout("/fedgate-test/")


def _cluster(*namespaces: str) -> Cluster:
    return Cluster(
        name=CLUSTER,
        region="eu-west-1",
        cloud="aws",
        environment="prod",
        kubernetes=KubernetesDiscovery(namespaces=tuple(namespaces)),
    )


def _service(name: str, *, port: int = 8080, clusters: tuple[str, ...] = (CLUSTER,)) -> Service:
    return Service(name=name, routes=(), port=port, clusters=clusters)


# ------------------------------------------------------------------------ fixtures


class Running:
    """One EndpointDiscovery task with its own ApiClient."""

    def __init__(self, discovery: EndpointDiscovery, task: asyncio.Task[None], api: Any) -> None:
        self.discovery = discovery
        self.task = task
        self.api = api


@contextlib.asynccontextmanager
async def running(
    kube: KubeApiServer,
    store: tuple[EtcdClient, GatewayLease],
    services: list[Service],
    *namespaces: str,
    source: str = "k8s-test",
    page_size: int = 500,
) -> AsyncIterator[Running]:
    client, lease = store
    api = k8s.ApiClient(kube.configuration())
    discovery = EndpointDiscovery(
        client=client,
        layout=LAYOUT,
        lease=lease,
        cluster=_cluster(*(namespaces or ("shop",))),
        services=lambda: list(services),
        api_client=api,
        source=source,
        watch_timeout=2,
        request_timeout=2.0,
        page_size=page_size,
        rescan_interval=0.05,
        backoff_base=0.05,
        backoff_cap=0.5,
    )
    task = asyncio.create_task(discovery.run())
    try:
        yield Running(discovery, task, api)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        api.close()


async def in_etcd(
    client: EtcdClient, service: str, source: str = "k8s-test"
) -> tuple[Endpoint, ...] | None:
    kv = await client.get(LAYOUT.endpoints(service, CLUSTER, source))
    return None if kv is None else decode_list(Endpoint, kv.value)


def truth(
    kube: KubeApiServer, service: str, *namespaces: str, port: int = 8080
) -> set[tuple[Any, ...]]:
    return {
        (f"{e['ip']}:{port}", e["ready"], e["serving"], e["terminating"], e["zone"])
        for ns in (namespaces or ("shop",))
        for e in kube.endpoints(ns, service)
    }


def shape(endpoints: tuple[Endpoint, ...] | None) -> set[tuple[Any, ...]] | None:
    if endpoints is None:
        return None
    return {(e.address, e.ready, e.serving, e.terminating, e.zone) for e in endpoints}


async def converged(
    kube: KubeApiServer,
    client: EtcdClient,
    service: str,
    *namespaces: str,
    timeout: float = 15.0,
    source: str = "k8s-test",
) -> tuple[Endpoint, ...]:
    """Wait until etcd holds exactly the double's endpoints of ``service``."""

    async def check() -> list[tuple[Endpoint, ...]]:
        got = await in_etcd(client, service, source)
        want = truth(kube, service, *namespaces)
        return [got] if got is not None and shape(got) == want else []  # [()] is truthy

    result: list[tuple[Endpoint, ...]] = await async_wait_for(
        check, timeout=timeout, interval=0.05, what=f"etcd equal to the API server for {service}"
    )
    return result[0]


async def gone(client: EtcdClient, service: str, timeout: float = 15.0) -> None:
    async def check() -> bool:
        return await in_etcd(client, service) is None

    await async_wait_for(check, timeout=timeout, interval=0.05, what=f"{service} key deleted")


# ------------------------------------------------------------------- pure mapping


def test_slices_map_to_endpoints_with_conditions_ports_and_zones() -> None:
    svc = _service("checkout", port=8080)
    slices = [
        {
            "addressType": "IPv4",
            "ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.2"], "conditions": {"ready": True}, "zone": "eu-1a"},
                {"addresses": ["10.0.0.1"], "conditions": {}},  # nil ready: ready
                {
                    "addresses": ["10.0.0.3"],
                    "conditions": {"ready": False, "serving": True, "terminating": True},
                },
                {"addresses": ["10.0.0.4"], "conditions": {"ready": False}},
                {"addresses": [], "conditions": {"ready": True}},  # no address: skipped
            ],
        },
        {  # the same pod listed twice (moving between slices): the routable entry wins
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.0.0.4"], "conditions": {"ready": True}}],
        },
        {  # no port equal to Service.port: the first one
            "addressType": "IPv6",
            "ports": [{"name": "web", "port": 9000}],
            "endpoints": [{"addresses": ["fd00::1"], "conditions": {"ready": True}}],
        },
    ]
    eps = endpoints_from_slices(slices, service=svc, cluster=CLUSTER)
    by = {e.address: e for e in eps}
    assert [e.address for e in eps] == sorted(by)
    assert set(by) == {
        "10.0.0.1:8080",
        "10.0.0.2:8080",
        "10.0.0.3:8080",
        "10.0.0.4:8080",
        "[fd00::1]:9000",
    }
    assert by["10.0.0.1:8080"].routable
    assert by["10.0.0.2:8080"].zone == "eu-1a" and by["10.0.0.2:8080"].routable
    terminating = by["10.0.0.3:8080"]
    assert terminating.terminating and terminating.serving and not terminating.routable
    assert by["10.0.0.4:8080"].routable  # the ready copy won
    assert all(e.source == "kubernetes" and e.cluster == CLUSTER for e in eps)
    assert all(e.service == "checkout" for e in eps)


def test_slices_as_client_models_map_the_same_way() -> None:
    model = k8s.V1EndpointSlice(
        address_type="IPv4",
        endpoints=[
            k8s.V1Endpoint(
                addresses=["10.1.0.7"],
                conditions=k8s.V1EndpointConditions(ready=False, serving=False, terminating=False),
                zone="z",
            )
        ],
        ports=[k8s.DiscoveryV1EndpointPort(port=8080, name="http")],
    )
    (ep,) = endpoints_from_slices([model], service=_service("a"), cluster=CLUSTER)
    assert (ep.address, ep.ready, ep.serving, ep.terminating, ep.zone) == (
        "10.1.0.7:8080",
        False,
        False,
        False,
        "z",
    )


def test_backoff_grows_with_jitter_and_resets() -> None:
    import random

    b = Backoff(base=0.1, cap=1.0, rng=random.Random(7))
    delays = [b.next() for _ in range(8)]
    assert all(0.1 <= d <= 1.0 for d in delays)
    assert max(delays[4:]) > max(delays[:1])
    b.reset()
    assert b.next() <= 0.1 + 1e-9


# --------------------------------------------------------------------- scenarios


async def test_scale_up_and_down_across_several_slices(
    kube: KubeApiServer, store: tuple[EtcdClient, GatewayLease]
) -> None:
    client, _ = store
    kube.add_service("shop", "checkout", slice_size=3)
    kube.scale("shop", "checkout", 2, zone="eu-1a")
    async with running(kube, store, [_service("checkout")]) as r:
        eps = await converged(kube, client, "checkout")
        assert len(eps) == 2 and all(e.routable for e in eps)
        kube.scale("shop", "checkout", 8, zone="eu-1b")  # three slices
        assert len({s["metadata"]["name"] for s in kube.slices("shop")}) == 3
        assert len(await converged(kube, client, "checkout")) == 8
        kube.scale("shop", "checkout", 1)
        assert len(await converged(kube, client, "checkout")) == 1
        kube.scale("shop", "checkout", 0)  # the controller keeps one empty slice
        assert await converged(kube, client, "checkout") == ()
        assert r.discovery.stats["lists"] >= 1


async def test_unready_and_terminating_pods_stop_taking_requests(
    kube: KubeApiServer, store: tuple[EtcdClient, GatewayLease]
) -> None:
    client, _ = store
    kube.add_service("shop", "checkout")
    pods = kube.scale("shop", "checkout", 3)
    async with running(kube, store, [_service("checkout")]):
        await converged(kube, client, "checkout")
        kube.set_pod("shop", pods[0], ready=False, serving=False)
        eps = {e.address: e for e in await converged(kube, client, "checkout")}
        assert sum(e.routable for e in eps.values()) == 2
        kube.terminate_pod("shop", pods[1])
        eps = {e.address: e for e in await converged(kube, client, "checkout")}
        drain = [e for e in eps.values() if e.terminating]
        assert len(drain) == 1 and drain[0].serving and not drain[0].routable
        assert sum(e.routable for e in eps.values()) == 1
        kube.remove_pod("shop", pods[1])
        kube.set_pod("shop", pods[0], ready=True, serving=True)
        eps = {e.address: e for e in await converged(kube, client, "checkout")}
        assert len(eps) == 2 and all(e.routable for e in eps.values())


async def test_stale_watch_answered_410_lists_again(
    kube: KubeApiServer, store: tuple[EtcdClient, GatewayLease]
) -> None:
    client, _ = store
    kube.add_service("shop", "checkout")
    kube.scale("shop", "checkout", 2)
    async with running(kube, store, [_service("checkout")]) as r:
        await converged(kube, client, "checkout")
        lists_before = r.discovery.stats["lists"]
        # changes the watch never sees, then the history is gone: the resumed watch is stale
        kube.stop()
        kube.scale("shop", "checkout", 5)
        kube.compact()
        kube.start()
        assert len(await converged(kube, client, "checkout")) == 5
        assert kube.stats["gone"] >= 1  # the double answered 410 ...
        assert r.discovery.stats["gone"] >= 1  # ... the discovery saw it ...
        assert r.discovery.stats["lists"] > lists_before  # ... and listed again


async def test_compaction_under_a_running_watch_sends_410(
    kube: KubeApiServer, store: tuple[EtcdClient, GatewayLease]
) -> None:
    client, _ = store
    kube.add_service("shop", "checkout")
    kube.scale("shop", "checkout", 1)
    async with running(kube, store, [_service("checkout")]) as r:
        await converged(kube, client, "checkout")
        for attempt in range(20):  # the watch may read the change before the compaction
            gone_before = r.discovery.stats["gone"]
            kube.scale("shop", "checkout", 2 + attempt % 2)
            kube.compact()
            await converged(kube, client, "checkout")
            if r.discovery.stats["gone"] > gone_before:
                break
        assert r.discovery.stats["gone"] >= 1
        kube.scale("shop", "checkout", 4)
        assert len(await converged(kube, client, "checkout")) == 4


async def test_api_server_restart_and_downtime(
    kube: KubeApiServer, store: tuple[EtcdClient, GatewayLease]
) -> None:
    client, _ = store
    kube.add_service("shop", "checkout")
    kube.scale("shop", "checkout", 3)
    async with running(kube, store, [_service("checkout")]) as r:
        await converged(kube, client, "checkout")
        # down for a while: the watch connection is cut, connections are refused
        kube.stop()

        async def failing() -> bool:
            return r.discovery.stats["errors"] >= 2

        await async_wait_for(failing, timeout=10, what="reconnect attempts while down")
        # etcd keeps the last known endpoints while the API server is away
        assert shape(await in_etcd(client, "checkout")) == truth(kube, "checkout")
        kube.scale("shop", "checkout", 4)
        kube.start()
        assert len(await converged(kube, client, "checkout")) == 4
        # a restart that also drops the watch history (the watch cache is rebuilt)
        kube.restart(compact=True)
        kube.scale("shop", "checkout", 2)
        assert len(await converged(kube, client, "checkout")) == 2
        kube.restart(compact=False)
        pods = kube.scale("shop", "checkout", 3)
        kube.set_pod("shop", pods[-1], ready=False)
        await converged(kube, client, "checkout")


async def test_bookmarks_keep_the_resume_version_fresh(
    kube: KubeApiServer, store: tuple[EtcdClient, GatewayLease]
) -> None:
    """Changes to other services move the version on; bookmarks carry it to the watch,
    so after a compaction the resumed watch is not stale (no 410, no new list)."""
    client, _ = store
    kube.add_service("shop", "checkout")
    kube.add_service("shop", "other")  # not in the manifest: never watched
    kube.scale("shop", "checkout", 2)
    async with running(kube, store, [_service("checkout")]) as r:
        await converged(kube, client, "checkout")
        for n in range(1, 6):
            kube.scale("shop", "other", n)
        target = kube.resource_version

        async def bookmarked() -> bool:
            return r.discovery.stats["bookmarks"] >= 2 and kube.resource_version == target

        b0 = r.discovery.stats["bookmarks"]
        await async_wait_for(
            lambda: r.discovery.stats["bookmarks"] >= b0 + 2, timeout=10, what="two bookmarks"
        )
        assert await bookmarked()
        lists, gone_count = r.discovery.stats["lists"], r.discovery.stats["gone"]
        kube.stop()
        kube.compact()
        kube.start()
        kube.scale("shop", "checkout", 3)
        assert len(await converged(kube, client, "checkout")) == 3
        assert r.discovery.stats["gone"] == gone_count
        assert r.discovery.stats["lists"] == lists


async def test_service_in_several_namespaces_and_deletion(
    kube: KubeApiServer, store: tuple[EtcdClient, GatewayLease]
) -> None:
    client, _ = store
    kube.add_service("shop", "checkout")
    kube.add_service("shop-canary", "checkout")
    kube.scale("shop", "checkout", 2)
    kube.add_pod("shop-canary", "checkout", zone="eu-1c")
    kube.add_service("elsewhere", "checkout")  # a namespace the cluster does not list
    kube.scale("elsewhere", "checkout", 4)
    services = [_service("checkout"), _service("cart"), _service("remote", clusters=("gcp",))]
    async with running(kube, store, services, "shop", "shop-canary"):
        eps = await converged(kube, client, "checkout", "shop", "shop-canary")
        assert len(eps) == 3
        assert await in_etcd(client, "cart") is None  # no slices: no key
        assert await in_etcd(client, "remote") is None  # not in this cluster
        kube.add_service("shop", "cart")
        kube.scale("shop", "cart", 1)
        await converged(kube, client, "cart")
        kube.delete_service("shop", "cart")
        await gone(client, "cart")
        kube.delete_service("shop-canary", "checkout")
        assert len(await converged(kube, client, "checkout", "shop")) == 2
        # the service leaves the manifest: its key goes
        services[:] = [_service("cart")]
        await gone(client, "checkout")


async def test_keys_live_under_the_lease_and_come_back_after_a_new_one(
    kube: KubeApiServer, store: tuple[EtcdClient, GatewayLease]
) -> None:
    client, lease = store
    kube.add_service("shop", "checkout")
    kube.scale("shop", "checkout", 2)
    async with running(kube, store, [_service("checkout")]) as r:
        await converged(kube, client, "checkout")
        kv = await client.get(LAYOUT.endpoints("checkout", CLUSTER, "k8s-test"))
        assert kv is not None and kv.lease == lease.lease_id
        writes = r.discovery.stats["writes"]
        old = lease.lease_id
        assert old is not None
        await client.revoke_lease(old)  # as if etcd had expired it: the key goes with it

        async def rewritten() -> bool:
            kv = await client.get(LAYOUT.endpoints("checkout", CLUSTER, "k8s-test"))
            # the writer counts a write once its put has returned, which may be after
            # this read already sees the key: poll for both (was a flaky assert under load)
            return (
                kv is not None
                and kv.lease not in (0, old)
                and kv.lease == lease.lease_id
                and r.discovery.stats["writes"] > writes
            )

        await async_wait_for(rewritten, timeout=15, what="endpoints re-put under the new lease")
        await converged(kube, client, "checkout")


async def test_unchanged_state_is_not_rewritten(
    kube: KubeApiServer, store: tuple[EtcdClient, GatewayLease]
) -> None:
    client, _ = store
    kube.add_service("shop", "checkout")
    pods = kube.scale("shop", "checkout", 2)
    async with running(kube, store, [_service("checkout")]) as r:
        await converged(kube, client, "checkout")
        kv = await client.get(LAYOUT.endpoints("checkout", CLUSTER, "k8s-test"))
        assert kv is not None
        # a slice update that changes nothing discovery cares about (a node name)
        kube.set_pod("shop", pods[0], ready=True)
        # a restart makes the watch reconnect and list again: still no rewrite
        kube.restart(compact=True)
        lists = r.discovery.stats["lists"]
        await async_wait_for(
            lambda: r.discovery.stats["lists"] > lists, timeout=10, what="a new list"
        )
        again = await client.get(LAYOUT.endpoints("checkout", CLUSTER, "k8s-test"))
        assert again is not None and again.mod_revision == kv.mod_revision
        assert r.discovery.stats["writes"] == 1


async def test_no_kubernetes_section_means_no_discovery(
    store: tuple[EtcdClient, GatewayLease],
) -> None:
    client, lease = store
    discovery = EndpointDiscovery(
        client=client,
        layout=LAYOUT,
        lease=lease,
        cluster=Cluster(name=CLUSTER, region="r", cloud="onprem", environment="prod"),
        services=lambda: [_service("checkout")],
        api_client=None,
        source="k8s-test",
    )
    await asyncio.wait_for(discovery.run(), timeout=5)  # returns at once
    assert discovery.status()["watchers"] == 0


async def test_large_services_are_listed_in_pages(
    kube: KubeApiServer, store: tuple[EtcdClient, GatewayLease]
) -> None:
    client, _ = store
    kube.add_service("shop", "checkout", slice_size=2)
    kube.scale("shop", "checkout", 9)  # five slices
    async with running(kube, store, [_service("checkout")], page_size=2) as r:
        assert len(await converged(kube, client, "checkout")) == 9
        assert r.discovery.stats["lists"] == 1
        assert kube.stats["lists"] == 3  # one list of three pages
        kube.scale("shop", "checkout", 3)
        assert len(await converged(kube, client, "checkout")) == 3


async def test_stopping_ends_every_watch_thread(
    kube: KubeApiServer, store: tuple[EtcdClient, GatewayLease]
) -> None:
    import threading

    client, _ = store
    for name in ("a", "b", "c"):
        kube.add_service("shop", name)
        kube.scale("shop", name, 1)
    services = [_service("a"), _service("b"), _service("c")]
    async with running(kube, store, services, "shop", "other") as r:
        for name in ("a", "b", "c"):
            await converged(kube, client, name)
        assert r.discovery.status()["watchers"] == 6  # 3 services x 2 namespaces
        # every watch is blocked in a read on the API server now
    names = [t.name for t in threading.enumerate() if t.name.startswith("discovery-")]
    assert names == [], f"threads left running: {names}"


async def test_etcd_outage_writes_are_retried_until_it_returns(
    kube: KubeApiServer, store: tuple[EtcdClient, GatewayLease], etcd: EtcdCluster
) -> None:
    client, _ = store
    kube.add_service("shop", "checkout")
    kube.scale("shop", "checkout", 2)
    async with running(kube, store, [_service("checkout")]) as r:
        await converged(kube, client, "checkout")
        etcd.stop()
        kube.scale("shop", "checkout", 4)

        async def failing() -> bool:
            return r.discovery.stats["write_errors"] >= 1

        await async_wait_for(failing, timeout=20, what="a failed write while etcd is down")
        assert r.discovery.status()["last_write_error"]
        await asyncio.to_thread(etcd.restart)
        assert len(await converged(kube, client, "checkout", timeout=30)) == 4
        # a write still pending under the lost lease may fail once more before the re-put
        # under the new lease succeeds: the error clears once a write has gone through

        async def cleared() -> bool:
            return r.discovery.status()["last_write_error"] is None

        await async_wait_for(cleared, timeout=10, what="the write error cleared")


def test_api_client_from_a_kubeconfig_context(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from federation.discovery import kubernetes_api_client

    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "a", "cluster": {"server": "http://127.0.0.61:6443"}},
            {"name": "b", "cluster": {"server": "http://127.0.0.62:6443"}},
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": "ctx-a", "context": {"cluster": "a", "user": "u"}},
            {"name": "ctx-b", "context": {"cluster": "b", "user": "u"}},
        ],
        "current-context": "ctx-a",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod
    assert kubernetes_api_client().configuration.host == "http://127.0.0.61:6443"
    assert kubernetes_api_client(context="ctx-b").configuration.host == "http://127.0.0.62:6443"
    from kubernetes.config import ConfigException

    with pytest.raises(ConfigException):
        kubernetes_api_client(in_cluster=True)
