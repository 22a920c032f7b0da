"""gateway/tls.py: contexts, hot swap in place, peer identity (real sockets, local test CA).

These tests make their certificates with ``cryptography`` so they run without OpenBao;
the same code against Vault-issued material is in tests/federation/test_vault.py and
tests/e2e/test_mtls.py.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.tls import (
    CertificateMaterial,
    build_contexts,
    client_context,
    gateway_cluster,
    gateway_spiffe_id,
    in_trust_domain,
    install,
    load_material,
    parse_spiffe_id,
    peer_identity,
    uri_sans,
)
from tests.support.vault import read_response, start_tls_server, tls_request

UTC = datetime.UTC


@dataclass
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def make_ca(name: str = "test CA") -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Ca(cert, key)


def leaf(
    ca: Ca,
    *,
    dns: tuple[str, ...] = (),
    uris: tuple[str, ...] = (),
    hours: float = 1.0,
) -> CertificateMaterial:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(UTC)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=2))
        .not_valid_after(now + datetime.timedelta(hours=hours))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return CertificateMaterial(
        certificate=cert.public_bytes(serialization.Encoding.PEM).decode(),
        private_key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        ca_bundle=ca.pem,
    )


def client_with(material: CertificateMaterial | None, ca: Ca) -> ssl.SSLContext:
    ctx = client_context()
    ctx.load_verify_locations(cadata=ca.pem)
    if material is not None:
        load_material(ctx, material)
    return ctx


# ------------------------------------------------------------------ SPIFFE helpers


def test_parse_spiffe_id() -> None:
    assert parse_spiffe_id("spiffe://fedgate.local/cluster/eu/gateway") == (
        "fedgate.local",
        "/cluster/eu/gateway",
    )
    for bad in [
        "https://fedgate.local/x",
        "spiffe://fedgate.local",
        "spiffe://fedgate.local/",
        "spiffe:///x",
        "spiffe://Fedgate.local/x",
        "spiffe://fedgate.local/a//b",
        "spiffe://fedgate.local/a/../b",
        "spiffe://fedgate.local/a?x=1",
        "spiffe://fedgate.local/a#f",
        "spiffe://user@fedgate.local/a",
    ]:
        assert parse_spiffe_id(bad) is None, bad


def test_trust_domain_and_gateway_cluster() -> None:
    sid = gateway_spiffe_id("fedgate.local", "aws-eu-west-1")
    assert sid == "spiffe://fedgate.local/cluster/aws-eu-west-1/gateway"
    assert in_trust_domain(sid, "fedgate.local")
    assert not in_trust_domain(sid, "other.local")
    assert not in_trust_domain(None, "fedgate.local")
    assert gateway_cluster(sid, "fedgate.local") == "aws-eu-west-1"
    assert gateway_cluster(sid, "other.local") is None
    assert gateway_cluster("spiffe://fedgate.local/ns/x/sa/y", "fedgate.local") is None


def test_uri_sans_of_decoded_cert() -> None:
    cert = {"subjectAltName": (("DNS", "a"), ("URI", "spiffe://t/x"), ("URI", "spiffe://t/y"))}
    assert uri_sans(cert) == ["spiffe://t/x", "spiffe://t/y"]
    assert uri_sans({}) == []


def test_peer_identity_without_tls() -> None:
    assert peer_identity(None) is None


# ------------------------------------------------------------------ contexts


def test_contexts_are_tls12_or_newer_and_mtls_requires_a_cert() -> None:
    tls = build_contexts()
    for ctx in (tls.public_server, tls.east_west_server, tls.east_west_client):
        assert ctx is not None
        assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert tls.public_server is not None and tls.public_server.verify_mode == ssl.CERT_NONE
    assert tls.east_west_server is not None
    assert tls.east_west_server.verify_mode == ssl.CERT_REQUIRED
    assert tls.east_west_client is not None
    assert tls.east_west_client.verify_mode == ssl.CERT_REQUIRED


def test_a_mismatched_key_is_refused_and_the_old_material_stays() -> None:
    ca = make_ca()
    good = leaf(ca, dns=("localhost",))
    other = leaf(ca, dns=("localhost",))
    tls = build_contexts(east_west=False)
    install(tls, public=good, east_west=None)
    bad = CertificateMaterial(other.certificate, good.private_key, ca.pem)
    assert tls.public_server is not None
    with pytest.raises(ssl.SSLError):
        load_material(tls.public_server, bad)

    async def check() -> str:
        assert tls.public_server is not None
        srv = await start_tls_server(tls.public_server)
        try:
            ctx = ssl.create_default_context(cadata=ca.pem)
            _, _, serial = await tls_request(
                "127.0.0.1", srv.port, ctx, server_hostname="localhost"
            )
            return serial
        finally:
            srv.close()

    served = asyncio.run(check())
    want = x509.load_pem_x509_certificate(good.certificate.encode()).serial_number
    assert int(served.replace(":", ""), 16) == want


async def test_hot_swap_new_handshakes_new_cert_established_connections_continue() -> None:
    ca = make_ca()
    one = leaf(ca, dns=("localhost",))
    two = leaf(ca, dns=("localhost",))
    tls = build_contexts(east_west=False)
    install(tls, public=one, east_west=None)
    assert tls.public_server is not None
    server_ctx = tls.public_server
    srv = await start_tls_server(server_ctx)
    cctx = ssl.create_default_context(cadata=ca.pem)
    try:
        # an established keep-alive connection on certificate one
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", srv.port, ssl=cctx, server_hostname="localhost"
        )
        first = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await writer.drain()
        assert (await read_response(reader))[0] == 200

        install(tls, public=two, east_west=None)
        assert tls.public_server is server_ctx  # the same object, new material inside

        # a new handshake gets certificate two
        _, _, serial_new = await tls_request(
            "127.0.0.1", srv.port, cctx, server_hostname="localhost"
        )
        two_serial = x509.load_pem_x509_certificate(two.certificate.encode()).serial_number
        assert int(serial_new.replace(":", ""), 16) == two_serial
        # the established connection keeps working, still on certificate one
        for _ in range(3):
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            await writer.drain()
            assert (await read_response(reader))[0] == 200
        assert writer.get_extra_info("ssl_object").getpeercert(binary_form=True) == first
        writer.close()
    finally:
        srv.close()


# ------------------------------------------------------------------ peer identity over mTLS


async def _identity_seen(server_material: CertificateMaterial, client: ssl.SSLContext) -> object:
    """What the east-west server saw: the peer identity, or the client-side error."""
    tls = build_contexts(public=False)
    install(tls, public=None, east_west=server_material)
    assert tls.east_west_server is not None
    srv = await start_tls_server(tls.east_west_server)
    try:
        status, body, _ = await tls_request("127.0.0.1", srv.port, client)
        return (status, body.decode(), srv.peers)
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError) as exc:
        return type(exc).__name__
    finally:
        srv.close()


async def test_peer_identity_single_spiffe_uri() -> None:
    ca = make_ca()
    server = leaf(ca, uris=(gateway_spiffe_id("fedgate.local", "eu"),))
    me = gateway_spiffe_id("fedgate.local", "us")
    seen = await _identity_seen(server, client_with(leaf(ca, uris=(me,)), ca))
    assert seen == (200, me, [me])


@pytest.mark.parametrize(
    "uris",
    [
        (),
        ("spiffe://fedgate.local/a", "spiffe://fedgate.local/b"),
        ("https://fedgate.local/cluster/us/gateway",),
    ],
    ids=["no-uri", "two-uris", "not-spiffe"],
)
async def test_peer_identity_refuses_zero_several_or_non_spiffe(uris: tuple[str, ...]) -> None:
    ca = make_ca()
    server = leaf(ca, uris=(gateway_spiffe_id("fedgate.local", "eu"),))
    seen = await _identity_seen(server, client_with(leaf(ca, dns=("x",), uris=uris), ca))
    assert seen == (200, "ok", [None])  # verified certificate, but no identity


def test_a_bad_ca_bundle_changes_no_context() -> None:
    ca = make_ca()
    good = leaf(ca, uris=(gateway_spiffe_id("fedgate.local", "eu"),))
    tls = build_contexts()
    install(tls, public=good, east_west=good)
    assert tls.public_server is not None
    before = tls.public_server.get_ca_certs()
    newer = leaf(ca, uris=(gateway_spiffe_id("fedgate.local", "eu"),))
    broken = CertificateMaterial(
        newer.certificate,
        newer.private_key,
        "-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n",
    )
    with pytest.raises(ssl.SSLError):
        install(tls, public=newer, east_west=broken)
    assert tls.public_server.get_ca_certs() == before

    async def served_serial() -> int:
        assert tls.public_server is not None
        srv = await start_tls_server(tls.public_server)
        try:
            ctx = ssl.create_default_context(cadata=ca.pem)
            ctx.check_hostname = False
            _, _, serial = await tls_request("127.0.0.1", srv.port, ctx)
            return int(serial.replace(":", ""), 16)
        finally:
            srv.close()

    # the public context still serves the old certificate: nothing was half-installed
    old = x509.load_pem_x509_certificate(good.certificate.encode()).serial_number
    assert asyncio.run(served_serial()) == old


def test_hot_swap_under_uvloop() -> None:
    """The same in-place swap on uvloop (what ``fedgate serve`` runs): uvloop's TLS makes
    each connection's SSL object from the context when the connection is accepted."""
    import uvloop

    ca = make_ca()
    one = leaf(ca, dns=("localhost",))
    two = leaf(ca, dns=("localhost",))
    tls = build_contexts(east_west=False)
    install(tls, public=one, east_west=None)

    async def check() -> tuple[int, int, int]:
        assert tls.public_server is not None
        srv = await start_tls_server(tls.public_server)
        cctx = ssl.create_default_context(cadata=ca.pem)
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", srv.port, ssl=cctx, server_hostname="localhost"
            )
            _, _, before = await tls_request(
                "127.0.0.1", srv.port, cctx, server_hostname="localhost"
            )
            install(tls, public=two, east_west=None)
            _, _, after = await tls_request(
                "127.0.0.1", srv.port, cctx, server_hostname="localhost"
            )
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            await writer.drain()
            status, _ = await read_response(reader)
            writer.close()
            return int(before.replace(":", ""), 16), int(after.replace(":", ""), 16), status
        finally:
            srv.close()

    before, after, status = uvloop.run(check())
    serial = {
        m.certificate: x509.load_pem_x509_certificate(m.certificate.encode()).serial_number
        for m in (one, two)
    }
    assert (before, after, status) == (serial[one.certificate], serial[two.certificate], 200)
