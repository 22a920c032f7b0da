"""The east-west listener over mutual TLS: peer identity in the scope, access policy by
SPIFFE ID, and a cross-cluster hop between two gateways over mTLS."""

from __future__ import annotations

import dataclasses
import datetime
import ssl
import tempfile
from pathlib import Path
from types import MappingProxyType

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from federation.model import Access, GatewayRecord
from gateway.tls import CertificateMaterial, TlsContexts, build_contexts, install
from tests.gateway.harness import cluster, running_gateway, service, settings_for, view_of
from tests.support.backend import Backend
from tests.support.ports import free_port


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Ca:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("test ca"))
            .issuer_name(_name("test ca"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, spiffe: str) -> CertificateMaterial:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(spiffe))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(spiffe), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return CertificateMaterial(
            certificate=cert.public_bytes(serialization.Encoding.PEM).decode(),
            private_key=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            ca_bundle=self.pem,
        )


def contexts(ca: Ca, spiffe: str) -> TlsContexts:
    ctx = build_contexts(public=False, east_west=True)
    install(ctx, public=None, east_west=ca.issue(spiffe))
    return ctx


def client_ctx(ca: Ca, spiffe: str) -> ssl.SSLContext:
    m = ca.issue(spiffe)
    d = Path(tempfile.mkdtemp())
    (d / "c.pem").write_text(m.certificate)
    (d / "k.pem").write_text(m.private_key)
    (d / "ca.pem").write_text(ca.pem)
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(d / "c.pem"), str(d / "k.pem"))
    return ctx


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca()


async def test_east_west_peer_identity_and_policy(ca: Ca) -> None:
    async with Backend("b1", host="127.0.0.2") as b1:
        secure = service(
            "secure", "secure.test", access=Access(spiffe_ids=frozenset({"spiffe://t/ok"}))
        )
        v = view_of([secure], endpoints={("secure", "c1"): [b1.address]})
        settings = settings_for(insecureEastWest=False)
        async with running_gateway(v, settings=settings, tls=contexts(ca, "spiffe://t/gw/c1")) as g:
            h, p = g.addr("east_west")
            url = f"https://{h}:{p}"
            async with httpx.AsyncClient(verify=client_ctx(ca, "spiffe://t/ok")) as c:
                ok = await c.get(url + "/x", headers={"host": "secure.test"})
                ping = await c.get(url + "/__fedgate/ping")
            async with httpx.AsyncClient(verify=client_ctx(ca, "spiffe://t/other")) as c:
                denied = await c.get(url + "/x", headers={"host": "secure.test"})
            anonymous = ssl.create_default_context(cafile=None)
            anonymous.check_hostname = False
            anonymous.verify_mode = ssl.CERT_NONE
            async with httpx.AsyncClient(verify=anonymous) as c:
                with pytest.raises(httpx.HTTPError):  # no client certificate: no handshake
                    await c.get(url + "/x", headers={"host": "secure.test"})
    assert ok.status_code == 200
    assert (ping.status_code, ping.text) == (200, "c1")
    assert denied.status_code == 403


async def test_cross_cluster_hop_over_mutual_tls(ca: Ca) -> None:
    async with Backend("b2", host="127.0.0.3") as b2:
        ew1, ew2 = free_port("127.0.0.5"), free_port("127.0.0.6")
        clusters = [
            cluster("c1", east_west=f"https://127.0.0.5:{ew1}"),
            cluster("c2", east_west=f"https://127.0.0.6:{ew2}"),
        ]
        svc = service("shop", "shop.test", clusters=("c1", "c2"))
        v = view_of([svc], clusters, endpoints={("shop", "c2"): [b2.address]})
        # the dialled server must be a live gateway of c2 (its record, its SPIFFE ID)
        v = dataclasses.replace(
            v, gateways=MappingProxyType({"g2": GatewayRecord(id="g2", cluster="c2")})
        )

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
                            tls=contexts(ca, "spiffe://t/cluster/c1/gateway")) as g1,
            running_gateway(v, settings=s("c2", "127.0.0.6", ew2),
                            tls=contexts(ca, "spiffe://t/cluster/c2/gateway")),
            httpx.AsyncClient(base_url=g1.url(), timeout=10) as c,
        ):  # fmt: skip
            rs = [await c.get("/hop", headers={"host": "shop.test"}) for _ in range(5)]
    assert [r.status_code for r in rs] == [200] * 5
    seen = dict(rs[0].json()["headers"])
    assert seen["x-fedgate-hops"] == "2"
    assert rs[0].json()["name"] == "b2"
