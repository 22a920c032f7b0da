"""Fixtures of the discovery tests: the API-server double and a leased etcd client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from federation.etcd import EtcdClient
from federation.liveness import GatewayLease
from tests.support.etcd import EtcdCluster
from tests.support.kube_api import KubeApiServer


@pytest.fixture
def kube() -> Iterator[KubeApiServer]:
    with KubeApiServer(host="127.0.0.23", bookmark_interval=0.2) as api:
        yield api


@pytest.fixture
async def store(etcd: EtcdCluster) -> AsyncIterator[tuple[EtcdClient, GatewayLease]]:
    """An etcd client with a live gateway lease (TTL 3 s), closed after the test."""
    client = EtcdClient(etcd.endpoints, timeout=2.0)
    await client.connect()
    lease = GatewayLease(client, ttl=3)
    await lease.start()
    try:
        yield client, lease
    finally:
        await lease.stop()
        await client.close()
