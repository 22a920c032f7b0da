"""Forged east-west identities, both ways, against real gateways over mutual TLS.

Server side: a client on the east-west listener may speak for another gateway
(``x-fedgate-forwarded`` / ``x-fedgate-peer``) only with a gateway SPIFFE ID of a
cluster that exists, naming that same cluster. Client side: a gateway sends a request
to another cluster only when the server's certificate is that cluster's gateway SPIFFE
ID and the cluster has a live gateway. Certificates from ``federation.devstack.certs``.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType

import httpx
import pytest

from federation.devstack.certs import TestCa
from federation.model import Access, GatewayRecord, RoutingView
from gateway.tls import CertificateMaterial, TlsContexts, build_contexts, install
from tests.gateway.harness import cluster, running_gateway, service, settings_for, view_of
from tests.support.backend import Backend
from tests.support.ports import free_port

TD = "t"
OK_CLIENT = "spiffe://t/ns/shop/sa/web"  # the only identity the service allows


def gw_id(name: str) -> str:
    return f"spiffe://{TD}/cluster/{name}/gateway"


def material(ca: TestCa, uris: tuple[str, ...], **kw: float) -> CertificateMaterial:
    i = ca.issue("gw", uris=uris, dns=("localhost",), ips=("127.0.0.1",), **kw)
    return CertificateMaterial(certificate=i.cert_pem, private_key=i.key_pem, ca_bundle=i.ca_pem)


def contexts(ca: TestCa, uris: tuple[str, ...]) -> TlsContexts:
    ctx = build_contexts(public=False, east_west=True)
    install(ctx, public=None, east_west=material(ca, uris))
    return ctx


def client_ctx(
    tmp: Path, signer: TestCa, trust: TestCa, uris: tuple[str, ...], **kw: float
) -> ssl.SSLContext:
    i = signer.issue("client", uris=uris, **kw)
    files = signer.write(tmp, f"c{len(list(tmp.iterdir()))}", i)
    ctx = ssl.create_default_context(cadata=trust.pem)
    ctx.check_hostname = False
    ctx.load_cert_chain(files.cert, files.key)
    return ctx


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa("east-west CA")


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with Backend("b1", host="127.0.0.2") as b:
        yield b


def view(backend_address: str, *, gateways: tuple[str, ...] = ("c1", "c2")) -> RoutingView:
    secure = service("secure", "secure.test", access=Access(spiffe_ids=frozenset({OK_CLIENT})))
    v = view_of(
        [secure],
        [cluster("c1"), cluster("c2")],
        endpoints={("secure", "c1"): [backend_address]},
    )
    records = {f"g-{c}": GatewayRecord(id=f"g-{c}", cluster=c) for c in gateways}
    return dataclasses.replace(v, gateways=MappingProxyType(records))


HOP = {"host": "secure.test", "x-fedgate-forwarded": "c2", "x-fedgate-peer": OK_CLIENT}


@pytest.mark.parametrize(
    ("uris", "headers", "status"),
    [
        ((gw_id("c2"),), HOP, 200),  # a real gateway of c2, speaking for its client
        ((), HOP, 403),  # no URI SAN: served as itself, the forged peer header ignored
        (("spiffe://t/ns/x/sa/y",), HOP, 403),  # a workload ID, not a gateway
        ((gw_id("nosuch"),), {**HOP, "x-fedgate-forwarded": "nosuch"}, 403),  # unknown cluster
        ((gw_id("c2"),), {**HOP, "x-fedgate-forwarded": "c1"}, 403),  # wrong cluster
        ((gw_id("c2"), OK_CLIENT), HOP, 403),  # two URI SANs: no identity at all
        (("spiffe://other/cluster/c2/gateway",), HOP, 403),  # another trust domain
    ],
    ids=["genuine", "no-uri-san", "workload-id", "unknown-cluster", "wrong-cluster",
         "two-sans", "foreign-domain"],
)  # fmt: skip
async def test_forged_client_identities_cannot_speak_for_a_gateway(
    ca: TestCa, backend: Backend, tmp_path: Path, uris: tuple[str, ...],
    headers: dict[str, str], status: int,
) -> None:  # fmt: skip
    settings = settings_for("c1", insecureEastWest=False, vault={
        "addr": "http://127.0.0.1:1", "pki": {"trustDomain": TD}})  # fmt: skip
    async with running_gateway(
        view(backend.address), settings=settings, tls=contexts(ca, (gw_id("c1"),))
    ) as g:
        h, p = g.addr("east_west")
        async with httpx.AsyncClient(verify=client_ctx(tmp_path, ca, ca, uris)) as c:
            r = await c.get(f"https://{h}:{p}/x", headers=headers)
    assert r.status_code == status, r.text


@pytest.mark.parametrize("case", ["expired", "foreign-ca"])
async def test_expired_or_foreign_client_certificates_get_no_handshake(
    ca: TestCa, backend: Backend, tmp_path: Path, case: str
) -> None:
    signer = TestCa("foreign") if case == "foreign-ca" else ca
    kw = {"hours": -1.0, "not_before_hours": -3.0} if case == "expired" else {}
    settings = settings_for("c1", insecureEastWest=False)
    async with running_gateway(
        view(backend.address), settings=settings, tls=contexts(ca, (gw_id("c1"),))
    ) as g:
        h, p = g.addr("east_west")
        ctx = client_ctx(tmp_path, signer, ca, (gw_id("c2"),), **kw)
        async with httpx.AsyncClient(verify=ctx) as c:
            with pytest.raises(httpx.HTTPError):
                await c.get(f"https://{h}:{p}/x", headers=HOP)


@pytest.mark.parametrize(
    ("server_uris", "live", "reached"),
    [
        ((gw_id("c2"),), True, True),  # the genuine c2 gateway
        ((), True, False),  # a certificate from the CA without SPIFFE ID
        ((gw_id("c1"),), True, False),  # another cluster's gateway
        (("spiffe://t/ns/x/sa/y",), True, False),  # a workload
        ((gw_id("c2"),), False, False),  # c2 has no live gateway in the view
    ],
    ids=["genuine", "no-spiffe", "wrong-cluster", "workload", "no-live-gateway"],
)
async def test_a_gateway_dials_only_a_live_gateway_of_the_cluster(
    ca: TestCa, server_uris: tuple[str, ...], live: bool, reached: bool
) -> None:
    async with Backend("b2", host="127.0.0.3") as b2:
        ew1, ew2 = free_port("127.0.0.5"), free_port("127.0.0.6")
        clusters = [
            cluster("c1", east_west=f"https://127.0.0.5:{ew1}"),
            cluster("c2", east_west=f"https://127.0.0.6:{ew2}"),
        ]
        svc = service("shop", "shop.test", clusters=("c1", "c2"))
        v = view_of([svc], clusters, endpoints={("shop", "c2"): [b2.address]})
        records = {"g2": GatewayRecord(id="g2", cluster="c2")} if live else {}
        v = dataclasses.replace(v, gateways=MappingProxyType(records))

        def s(name: str, host: str, ew: int):  # type: ignore[no-untyped-def]
            return settings_for(name, host=host, insecureEastWest=False).model_copy(
                update={
                    "listen": settings_for(name).listen.model_copy(
                        update={"public": f"{host}:0", "east_west": f"{host}:{ew}"}
                    )
                }
            )

        async with (
            running_gateway(v, settings=s("c1", "127.0.0.5", ew1),
                            tls=contexts(ca, (gw_id("c1"),))) as g1,
            running_gateway(v, settings=s("c2", "127.0.0.6", ew2),
                            tls=contexts(ca, server_uris)),
            httpx.AsyncClient(base_url=g1.url(), timeout=10) as c,
        ):  # fmt: skip
            r = await c.get("/hop", headers={"host": "shop.test"})
        assert (r.status_code == 200) is reached, r.text
        assert (b2.requests > 0) is reached


@pytest.mark.parametrize(
    ("server_uris", "reached"),
    [((gw_id("c2"),), True), ((gw_id("c1"),), False)],
    ids=["genuine", "wrong-cluster"],
)
async def test_a_websocket_dials_only_a_gateway_of_the_cluster(
    ca: TestCa, server_uris: tuple[str, ...], reached: bool
) -> None:
    """A WebSocket tunnel opens its own east-west connection: the same server check."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async with Backend("b2", host="127.0.0.3") as b2:
        ew1, ew2 = free_port("127.0.0.5"), free_port("127.0.0.6")
        clusters = [
            cluster("c1", east_west=f"https://127.0.0.5:{ew1}"),
            cluster("c2", east_west=f"https://127.0.0.6:{ew2}"),
        ]
        svc = service("shop", "shop.test", clusters=("c2",))
        v = view_of([svc], clusters, endpoints={("shop", "c2"): [b2.address]})
        records = {"g2": GatewayRecord(id="g2", cluster="c2")}
        v = dataclasses.replace(v, gateways=MappingProxyType(records))

        def s(name: str, host: str, ew: int):  # type: ignore[no-untyped-def]
            return settings_for(name, host=host, insecureEastWest=False).model_copy(
                update={
                    "listen": settings_for(name).listen.model_copy(
                        update={"public": f"{host}:0", "east_west": f"{host}:{ew}"}
                    )
                }
            )

        async with (
            running_gateway(v, settings=s("c1", "127.0.0.5", ew1),
                            tls=contexts(ca, (gw_id("c1"),))) as g1,
            running_gateway(v, settings=s("c2", "127.0.0.6", ew2),
                            tls=contexts(ca, server_uris)),
        ):  # fmt: skip
            h, p = g1.addr()
            url = "ws://shop.test/chat"
            if reached:
                async with connect(url, host=h, port=p, proxy=None) as conn:  # type: ignore[arg-type]
                    await conn.send("hi")
                    assert await conn.recv() == "b2:hi"
            else:
                with pytest.raises(InvalidStatus):
                    async with connect(url, host=h, port=p, proxy=None):  # type: ignore[arg-type]
                        pass
    assert (b2.requests > 0 or reached) is reached
