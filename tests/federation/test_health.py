"""federation.health: hysteresis, the HTTP probe against real servers, publishing to real etcd."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from federation import codec
from federation.etcd import EtcdClient
from federation.health import HealthReporter, ProbeState, http_probe, split_host_port
from federation.keys import KeyLayout
from federation.liveness import GatewayLease
from federation.model import (
    ANY,
    Cluster,
    Endpoint,
    GatewayRecord,
    HealthCheck,
    HealthState,
    Observation,
    Route,
    RoutingView,
    Service,
)
from gateway.passive import PassiveStats
from gateway.placement import Placement
from gateway.types import ViewHolder
from tests.support.etcd import EtcdCluster
from tests.support.ports import free_port
from tests.support.wait import async_wait_for

# ----------------------------------------------------------------- a tiny real HTTP server


class TinyServer:
    """A real HTTP/1.1 server on a loopback address: ``mode`` ok | fail | blackhole."""

    def __init__(self, host: str = "127.0.0.1", *, body: bytes = b"ok") -> None:
        self.host = host
        self.port = free_port(host)
        self.mode = "ok"
        self.body = body
        self.hits = 0
        self._server: asyncio.Server | None = None
        self._held: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> TinyServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._held):
                w.close()
            self._held.clear()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hits += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.mode == "blackhole":
                self._held.add(writer)
                await reader.read()  # never answer; wait for the peer to give up
                return
            status = b"200 OK" if self.mode == "ok" else b"500 Internal Server Error"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n" % len(self.body) + self.body
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._held.discard(writer)
            writer.close()


@pytest.fixture
async def servers() -> AsyncIterator[list[TinyServer]]:
    made: list[TinyServer] = []
    yield made
    for s in made:
        await s.stop()


async def serve(made: list[TinyServer], host: str = "127.0.0.1", **kw: bytes) -> TinyServer:
    s = await TinyServer(host, **kw).start()
    made.append(s)
    return s


# ----------------------------------------------------------------- hysteresis


def test_probe_state_first_result_decides_then_hysteresis() -> None:
    st = ProbeState(healthy_after=2, unhealthy_after=3)
    assert st.healthy is None
    assert st.record(True, 1.0) is True and st.healthy is True
    assert st.record(False) is False
    assert st.record(False) is False
    assert st.record(True) is False  # the streak is broken
    assert [st.record(False, 5.0) for _ in range(3)] == [False, False, True]
    assert st.healthy is False and st.last_change == 5.0
    assert st.record(True) is False
    assert st.record(False) is False  # one success is not enough to come back
    assert [st.record(True) for _ in range(2)] == [False, True]
    assert st.healthy is True


def test_probe_state_unknown_goes_down_on_the_first_failure() -> None:
    st = ProbeState(healthy_after=3, unhealthy_after=3)
    assert st.record(False) is True and st.healthy is False


def test_split_host_port() -> None:
    assert split_host_port("10.0.0.1:80") == ("10.0.0.1", 80)
    assert split_host_port("[::1]:8080") == ("::1", 8080)
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_host_port("nohost")


# ----------------------------------------------------------------- the probe


async def test_http_probe_against_real_servers(servers: list[TinyServer]) -> None:
    s = await serve(servers, "127.0.0.3")
    assert await http_probe(s.host, s.port, "/healthz", timeout=1.0) is True
    s.mode = "fail"
    assert await http_probe(s.host, s.port, "/healthz", timeout=1.0) is False
    s.mode = "blackhole"
    started = time.monotonic()
    assert await http_probe(s.host, s.port, "/healthz", timeout=0.3) is False
    assert time.monotonic() - started < 1.0  # bounded by the timeout
    await s.stop()
    assert await http_probe(s.host, s.port, "/healthz", timeout=1.0) is False  # refused


# ----------------------------------------------------------------- the reporter, real etcd

FAST = HealthCheck(path="/healthz", interval=0.1, timeout=0.3, healthy_after=2, unhealthy_after=2)


def make_view(
    endpoints: dict[str, list[str]], *, east_west: dict[str, str], gateways: tuple[str, ...] = ()
) -> RoutingView:
    clusters = {
        "a": Cluster(name="a", region="r", cloud="aws", environment="t", east_west=east_west["a"]),
        "b": Cluster(name="b", region="r", cloud="gcp", environment="t", east_west=east_west["b"]),
    }
    svc = Service(
        name="web",
        routes=(Route(host="x.test"),),
        port=80,
        clusters=("a", "b"),
        health_check=FAST,
    )
    eps = {
        ("web", c): tuple(Endpoint(address=a, cluster=c, service="web") for a in addrs)
        for c, addrs in endpoints.items()
    }
    return RoutingView(
        revision=1,
        clusters=MappingProxyType(clusters),
        services=MappingProxyType({"web": svc}),
        endpoints=MappingProxyType(eps),
        gateways=MappingProxyType({g: GatewayRecord(id=g, cluster=g[-1]) for g in gateways}),
        source="etcd",
    )


class Federation:
    def __init__(self, etcd: EtcdCluster, tls: ssl.SSLContext | None = None) -> None:
        self.layout = KeyLayout("/t/")
        self.client = EtcdClient(etcd.endpoints)
        self.lease = GatewayLease(self.client, ttl=2.0)
        self.holder = ViewHolder()
        self.passive = PassiveStats()
        self.placement = Placement("a")
        self.reporter = HealthReporter(
            lease=self.lease,
            layout=self.layout,
            gateway_id="gw-a",
            cluster="a",
            holder=self.holder,
            passive=self.passive,
            east_west_context=tls,
            placement=self.placement,
            stats_interval=0.5,
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.lease.start()
        self.task = asyncio.create_task(self.reporter.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.lease.stop(revoke=True)
        await self.client.close()

    async def published(self) -> dict[tuple[str, str], Observation]:
        """The report, with what it leaves out as fully healthy put back (as the
        cluster's leader reads it: health_summary.combine)."""
        kv = await self.client.get(self.layout.health_report("a", "gw-a"))
        if kv is None:
            return {}
        seen = {(o.service, o.cluster): o for o in codec.decode_list(Observation, kv.value)}
        if ("web", "a") not in seen:
            n = sum(1 for t in self.reporter.local_status() if t.startswith("endpoint:web:"))
            seen["web", "a"] = Observation("gw-a", "a", "web", "a", HealthState.HEALTHY, n, n)
        return seen


@pytest.fixture
async def fed(etcd: EtcdCluster) -> AsyncIterator[Federation]:
    f = Federation(etcd)
    try:
        yield f
    finally:
        await f.stop()


async def observation_matches(fed: Federation, key: tuple[str, str], **want: object) -> Observation:
    async def check() -> Observation | None:
        o = (await fed.published()).get(key)
        if o is not None and all(getattr(o, k) == v for k, v in want.items()):
            return o
        return None

    return await async_wait_for(check, timeout=10, what=f"observation {key} {want}")


async def test_reporter_probes_publishes_and_tells_placement(
    fed: Federation, servers: list[TinyServer]
) -> None:
    b1, b2 = await serve(servers, "127.0.0.11"), await serve(servers, "127.0.0.12")
    remote = await serve(servers, "127.0.0.21", body=b"b")
    fed.holder.swap(
        make_view(
            {"a": [b1.address, b2.address], "b": ["10.9.9.9:80"]},
            east_west={"a": "http://127.0.0.10:1", "b": f"http://{remote.address}"},
        )
    )
    await fed.start()
    own = await observation_matches(fed, ("web", "a"), state=HealthState.HEALTHY, healthy=2)
    assert (own.observer, own.observer_cluster, own.total) == ("gw-a", "a", 2)
    # the other cluster answers: no per-service line, the marker says it is reachable
    other = await observation_matches(fed, (ANY, ANY), state=HealthState.HEALTHY, healthy=1)
    assert other.total == 1 and ("web", "b") not in await fed.published()
    assert fed.placement._probes["web"] == (2, 2)

    # one endpoint down: degraded after unhealthyAfter failures; placement knows at once
    b2.mode = "fail"
    await observation_matches(fed, ("web", "a"), state=HealthState.DEGRADED, healthy=1)
    assert fed.placement._probes["web"] == (1, 2)
    # both down: unhealthy, and the local placement sends elsewhere without etcd
    await b1.stop()
    await observation_matches(fed, ("web", "a"), state=HealthState.UNHEALTHY, healthy=0)
    assert fed.placement._probes["web"] == (0, 2)
    # back: healthy after healthyAfter successes
    b2.mode = "ok"
    await observation_matches(fed, ("web", "a"), state=HealthState.DEGRADED, healthy=1)

    # the remote cluster's gateway blackholed: its ping times out, we vote it down
    remote.mode = "blackhole"
    await observation_matches(fed, (ANY, "b"), state=HealthState.UNHEALTHY, healthy=0)
    marker = await observation_matches(fed, (ANY, ANY), healthy=0)
    assert marker.total == 1


async def test_passive_errors_are_published_and_writes_stay_low(
    fed: Federation, servers: list[TinyServer]
) -> None:
    b1 = await serve(servers, "127.0.0.13")
    remote = await serve(servers, "127.0.0.22")
    fed.holder.swap(
        make_view(
            {"a": [b1.address]},
            east_west={"a": "http://127.0.0.10:1", "b": f"http://{remote.address}"},
        )
    )
    await fed.start()
    await observation_matches(fed, ("web", "a"), state=HealthState.HEALTHY)
    await observation_matches(fed, (ANY, ANY), state=HealthState.HEALTHY, healthy=1)

    # steady state: no new writes while nothing changes (polled over ~1.5 s of probing)
    writes = fed.reporter.writes
    probes = fed.reporter.probes
    await async_wait_for(lambda: fed.reporter.probes >= probes + 20, timeout=10, what="probes")
    assert fed.reporter.writes == writes

    # real traffic to b fails half the time: b is voted down by this observer
    for i in range(40):
        fed.passive.record("web", "b", ok=i % 2 == 0, latency=0.02)
    o = await observation_matches(fed, ("web", "b"), state=HealthState.UNHEALTHY)
    assert o.error_rate == 0.5 and o.latency_ms > 0
    # traffic to a: 10% errors -> degraded
    for i in range(50):
        fed.passive.record("web", "a", ok=i % 10 != 0, latency=0.01)
    await observation_matches(fed, ("web", "a"), state=HealthState.DEGRADED, error_rate=0.1)


async def test_observations_vanish_with_the_lease_and_return_with_a_new_one(
    fed: Federation, servers: list[TinyServer], etcd: EtcdCluster
) -> None:
    b1 = await serve(servers, "127.0.0.14")
    fed.holder.swap(make_view({"a": [b1.address]}, east_west={"a": "http://127.0.0.10:1", "b": ""}))
    await fed.start()
    await observation_matches(fed, ("web", "a"), state=HealthState.HEALTHY)
    # the lease is revoked behind the reporter's back (as if it had expired)
    lease_id = fed.lease.lease_id
    assert lease_id is not None
    await fed.client.revoke_lease(lease_id)

    async def republished() -> bool:
        return fed.lease.lease_id not in (None, lease_id) and bool(await fed.published())

    await async_wait_for(republished, timeout=15, what="observations re-put under a new lease")
    task = fed.task
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    fed.task = None
    await fed.lease.stop(revoke=True)
    assert await fed.published() == {}


async def test_view_changes_reconcile_probe_targets(
    fed: Federation, servers: list[TinyServer]
) -> None:
    b1, b2 = await serve(servers, "127.0.0.15"), await serve(servers, "127.0.0.16")
    ew = {"a": "http://127.0.0.10:1", "b": ""}
    fed.holder.swap(make_view({"a": [b1.address]}, east_west=ew))
    await fed.start()
    await observation_matches(fed, ("web", "a"), healthy=1, total=1)
    fed.holder.swap(make_view({"a": [b1.address, b2.address]}, east_west=ew))
    await observation_matches(fed, ("web", "a"), healthy=2, total=2)
    fed.holder.swap(make_view({"a": [b2.address]}, east_west=ew))
    await observation_matches(fed, ("web", "a"), healthy=1, total=1)
    hits = b1.hits
    await async_wait_for(lambda: b2.hits > hits + 5, timeout=10, what="probes of b2")
    assert b1.hits <= hits + 1  # b1 is no longer probed


# ----------------------------------------------------------------- east-west over TLS


def _tls_contexts(tmp: Path, host: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throw-away CA-less self-signed server certificate for ``host`` and a client
    context that trusts exactly it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw-b")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


async def test_http_probe_over_tls(tmp_path: Path) -> None:
    host = "127.0.0.23"
    server_ctx, client_ctx = _tls_contexts(tmp_path, host)
    port = free_port(host)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nb")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host, port, ssl=server_ctx)
    try:
        assert await http_probe(host, port, "/__fedgate/ping", timeout=2.0, ssl_context=client_ctx)
        # a client that does not trust the server's certificate: the probe fails
        untrusting = ssl.create_default_context()
        assert not await http_probe(host, port, "/", timeout=2.0, ssl_context=untrusting)
        # plain HTTP against a TLS listener: no HTTP answer
        assert not await http_probe(host, port, "/", timeout=0.5)
    finally:
        server.close()
        await server.wait_closed()


async def test_reporter_pings_east_west_over_tls(etcd: EtcdCluster, tmp_path: Path) -> None:
    host = "127.0.0.24"
    server_ctx, client_ctx = _tls_contexts(tmp_path, host)
    port = free_port(host)
    pings: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            pings.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0])
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nb")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host, port, ssl=server_ctx)
    fed = Federation(etcd, tls=client_ctx)
    try:
        fed.holder.swap(make_view({"a": []}, east_west={"a": "", "b": f"https://{host}:{port}"}))
        await fed.start()
        o = await observation_matches(fed, (ANY, ANY), state=HealthState.HEALTHY, healthy=1)
        assert (o.healthy, o.total) == (1, 1)
        assert pings[0] == b"GET /__fedgate/ping HTTP/1.1"
    finally:
        await fed.stop()
        server.close()
        await server.wait_closed()


async def test_a_cancel_that_meets_a_change_stops_the_reporter(
    fed: Federation, servers: list[TinyServer]
) -> None:
    """Cancelled while a probe's change wakes it: it stops (``asyncio.wait_for`` on 3.11
    returned the wake-up and swallowed the cancel, and the reporter ran on forever)."""
    b1 = await serve(servers, "127.0.0.15")
    fed.holder.swap(make_view({"a": [b1.address]}, east_west={"a": "http://127.0.0.10:1", "b": ""}))
    await fed.start()
    await observation_matches(fed, ("web", "a"), state=HealthState.HEALTHY)
    task = fed.task
    assert task is not None
    for _ in range(20):  # the reporter spends most of its time waiting for a change
        await asyncio.sleep(0.05)  # poll, bounded: 20 tries (1 s deadline)
        if not fed.reporter._changed.is_set():
            break
    fed.reporter._changed.set()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert done == {task}, "the reporter did not stop on cancel"
    fed.task = None
