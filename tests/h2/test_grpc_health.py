"""Active health checks of gRPC services through ``grpc.health.v1.Health/Check``:
the probe against a real grpcio health servicer, and the reporter (real etcd) using it
for ``protocol: grpc`` services."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from types import MappingProxyType

import pytest

from federation.grpc_health import check_request, grpc_probe, serving_status
from federation.model import HealthState
from tests.federation.test_health import Federation, make_view, observation_matches
from tests.h2.grpc_support import SERVICE, EchoServer
from tests.support.etcd import EtcdCluster

pytestmark = pytest.mark.timeout(60)


def test_messages() -> None:
    assert check_request("") == b"\x00\x00\x00\x00\x00"
    assert check_request("a.B") == b"\x00\x00\x00\x00\x05\x0a\x03a.B"
    assert serving_status(b"\x00\x00\x00\x00\x02\x08\x01") == 1
    assert serving_status(b"\x00\x00\x00\x00\x00") == 0  # UNKNOWN: all defaults
    assert serving_status(b"\x01junk") is None
    assert serving_status(b"") is None


async def test_probe_follows_the_servicer() -> None:
    with EchoServer("b1") as b:
        host, port = b.host, b.port
        assert await grpc_probe(host, port, "/healthz", timeout=2) is True  # the server
        assert await grpc_probe(host, port, f"/{SERVICE}", timeout=2) is True
        assert await grpc_probe(host, port, "/no.Such", timeout=2) is False  # NOT_FOUND
        b.set_serving(False)
        assert await grpc_probe(host, port, "/healthz", timeout=2) is False
        b.set_serving(True)
        assert await grpc_probe(host, port, "/healthz", timeout=2) is True
    started = time.monotonic()
    assert await grpc_probe(host, port, "/healthz", timeout=1) is False  # stopped: refused
    assert time.monotonic() - started < 1.5


@pytest.fixture
async def fed(etcd: EtcdCluster) -> AsyncIterator[Federation]:
    f = Federation(etcd)
    try:
        yield f
    finally:
        await f.stop()


async def test_reporter_uses_the_grpc_probe_for_grpc_services(fed: Federation) -> None:
    with EchoServer("b1", host="127.0.0.14") as b:
        view = make_view({"a": [b.address]}, east_west={"a": "http://127.0.0.10:1", "b": ""})
        web = replace(view.services["web"], protocol="grpc", clusters=("a",))
        fed.holder.swap(replace(view, services=MappingProxyType({"web": web})))
        await fed.start()
        await observation_matches(fed, ("web", "a"), state=HealthState.HEALTHY, healthy=1)
        b.set_serving(False)  # the process is up, its health servicer says NOT_SERVING
        await observation_matches(fed, ("web", "a"), state=HealthState.UNHEALTHY, healthy=0)
        b.set_serving(True)
        await observation_matches(fed, ("web", "a"), state=HealthState.HEALTHY, healthy=1)
