"""The challenge answers without a CA: TLS-ALPN-01 with real TLS clients (asyncio and
uvloop), DNS-01 TXT records through the DNS responder, the etcd records in the view,
wildcards in the manifest and ACME expiry in global health. Cheap: no OpenBao."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ssl
import time
from collections.abc import Callable, Coroutine
from types import MappingProxyType
from typing import Any

import dns.message
import dns.rdatatype
import pytest
import uvloop
from cryptography import x509

from federation.globalhealth import global_health
from federation.manifest import Manifest
from federation.manifest.errors import ManifestError
from federation.manifest_view import view_from_federation
from federation.model import GatewayRecord
from gateway.acme_alpn import ACME_IDENTIFIER, challenge_material, offered_alpn
from gateway.acme_sni import AcmeSni
from gateway.dns.answers import DnsAnswers
from gateway.dns.wire import Responder
from gateway.tls import load_material, server_context
from tests.federation.test_view import LAYOUT, base_facts

KEY_AUTHZ = "tok-abc.thumb-xyz"


def _client_hello(alpn: list[str] | None, sni: str = "alpn.example.com") -> bytes:
    ctx = ssl.create_default_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_the_offered_alpn_is_read_from_a_real_client_hello() -> None:
    hello = _client_hello(["acme-tls/1"])
    assert offered_alpn(hello) == ("acme-tls/1",)
    assert offered_alpn(_client_hello(["h2", "http/1.1"])) == ("h2", "http/1.1")
    assert offered_alpn(_client_hello(None)) == ()
    assert offered_alpn(hello[:3]) is None and offered_alpn(hello[:-1]) is None  # more to come
    assert offered_alpn(b"GET / HTTP/1.1\r\n\r\n") == ()  # not TLS: nothing offered
    assert offered_alpn(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00") == ()  # not a ClientHello
    garbage = b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\xff\xff\xff\xff"
    assert offered_alpn(garbage) == ()  # truncated body: no crash
    # a hostile client cuts its ClientHello into tiny records: not reassembled (bounded
    # work per connection), so it is served the normal certificate
    body = hello[5:]
    chunks = [body[i : i + 16] for i in range(0, len(body), 16)]
    tiny = b"".join(b"\x16\x03\x01" + len(c).to_bytes(2, "big") + c for c in chunks)
    assert offered_alpn(tiny) == ()
    two = b"\x16\x03\x01" + (100).to_bytes(2, "big") + body[:100]
    two += b"\x16\x03\x01" + (len(body) - 100).to_bytes(2, "big") + body[100:]
    assert offered_alpn(two) == ("acme-tls/1",)  # a ClientHello over two records is read


async def _handshakes(port: int) -> dict[str, tuple[str | None, x509.Certificate]]:
    out = {}
    for label, sni, alpn in (
        ("acme", "alpn.example.com", ["acme-tls/1"]),
        ("browser", "alpn.example.com", ["h2", "http/1.1"]),
        ("no-alpn", "alpn.example.com", None),
        ("acme-other-name", "other.example.com", ["acme-tls/1"]),
    ):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        _, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=sni)
        obj = w.get_extra_info("ssl_object")
        der = obj.getpeercert(binary_form=True)
        out[label] = (obj.selected_alpn_protocol(), x509.load_der_x509_certificate(der))
        w.close()
    return out


def _is_valid_challenge(cert: x509.Certificate, name: str) -> bool:
    """What RFC 8737 (and OpenBao's validator) checks of the challenge certificate."""
    ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    digest = hashlib.sha256(KEY_AUTHZ.encode()).digest()
    return (
        ext.critical
        and ext.value.public_bytes() == b"\x04\x20" + digest  # type: ignore[attr-defined]
        and san.get_values_for_type(x509.DNSName) == [name]
        and cert.issuer == cert.subject
    )


async def _alpn_scenario() -> None:
    public = server_context()
    load_material(public, challenge_material("normal.example.com", "n.n"))  # any certificate
    sni = AcmeSni()
    sni.attach(public)
    sni.challenges({"alpn.example.com": KEY_AUTHZ})
    assert public.sslobject_class is not ssl.SSLObject  # peeking while a challenge waits
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=public)
    port = server.sockets[0].getsockname()[1]
    try:
        got = await _handshakes(port)
        assert got["acme"][0] == "acme-tls/1"
        assert _is_valid_challenge(got["acme"][1], "alpn.example.com")
        for normal in ("browser", "no-alpn", "acme-other-name"):
            assert _cn(got[normal][1]) == "normal.example.com", normal  # the normal one
        assert sni.challenge_handshakes == 1
        sni.challenges({})  # the order is done: no peeking, nobody gets a challenge
        assert public.sslobject_class is ssl.SSLObject
        got = await _handshakes(port)
        assert {_cn(c) for _, c in got.values()} == {"normal.example.com"}
    finally:
        server.close()


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_tls_alpn_challenge_only_for_clients_offering_acme_tls_1(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    run(_alpn_scenario())


def test_challenge_records_reach_the_view_and_hostile_ones_are_rejected() -> None:
    digest = "A" * 43
    f = base_facts()
    f.put(LAYOUT.acme_alpn("alpn.example.com"), KEY_AUTHZ.encode())
    f.put(LAYOUT.acme_dns("wild.example.com"), digest.encode())
    f.put(LAYOUT.acme_dns("*.wild.example.com"), ("B" * 43).encode())
    f.put(LAYOUT.acme_alpn("*.example.com"), KEY_AUTHZ.encode())  # no wildcard by ALPN
    f.put(LAYOUT.acme_alpn("bad.example.com"), b"no dot here")
    f.put(LAYOUT.acme_dns("short.example.com"), b"abc")
    f.put(LAYOUT.acme_dns("bad name!"), digest.encode())
    view = f.view()
    assert dict(view.acme_alpn) == {"alpn.example.com": KEY_AUTHZ}
    assert dict(view.acme_txt) == {"_acme-challenge.wild.example.com": (digest, "B" * 43)}
    assert sorted(r.key.rsplit("/", 2)[-1] for r in view.rejected) == [
        "*.example.com", "bad name!", "bad.example.com", "short.example.com",
    ]  # fmt: skip
    f.delete(LAYOUT.acme_dns("wild.example.com"))
    f.delete(LAYOUT.acme_alpn("alpn.example.com"))
    view = f.view(view)
    assert dict(view.acme_txt) == {"_acme-challenge.wild.example.com": ("B" * 43,)}
    assert not view.acme_alpn


ZONED = """\
apiVersion: fedgate/v1
kind: Federation
metadata: {{name: z}}
clusters:
  - name: eu
    region: eu-west-1
    cloud: aws
    gateway: {{eastWest: "https://127.0.0.1:15443"}}
    publicEntry: {{hostname: lb.elsewhere.net}}
services:
  - name: web
    tls: acme
    routes: [{{host: "{host}"}}]
    port: 8080
    clusters: [eu]
    endpoints: {{eu: ["127.0.0.1:9"]}}
zones: [{{name: example.com}}]
"""


def _ask(responder: Responder, view: Any, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    wire, _ = responder.respond(view, query.to_wire(), "127.0.0.1", tcp=False)
    assert wire is not None
    return dns.message.from_wire(wire)


def test_dns_01_txt_answered_before_a_wildcard_route_and_its_cname() -> None:
    view = view_from_federation(
        Manifest.from_yaml(ZONED.format(host="*.wild.example.com")), now=time.time()
    )
    responder = Responder(DnsAnswers())
    name = "_acme-challenge.wild.example.com"
    # no challenge: the wildcard route owns the name and answers its CNAME for any type
    before = _ask(responder, view, name, "TXT")
    assert [r.rdtype for r in before.answer] == [dns.rdatatype.CNAME]
    view = dataclasses.replace(view, acme_txt=MappingProxyType({name: ("A" * 43, "B" * 43)}))
    txt = _ask(responder, view, name, "TXT")
    assert txt.rcode() == 0 and txt.answer[0].rdtype == dns.rdatatype.TXT
    assert sorted(b"".join(r.strings).decode() for r in txt.answer[0]) == ["A" * 43, "B" * 43]
    assert txt.answer[0].ttl == 0
    cname = _ask(responder, view, name, "CNAME")  # what OpenBao asks first: no CNAME
    assert cname.rcode() == 0 and not cname.answer and cname.authority  # NODATA
    assert _ask(responder, view, "_acme-challenge.other.example.org", "TXT").rcode() == 5


def test_wildcard_acme_hosts_need_a_zone() -> None:
    Manifest.from_yaml(ZONED.format(host="*.wild.example.com"))  # in the zone: DNS-01
    with pytest.raises(ManifestError) as err:
        Manifest.from_yaml(ZONED.format(host="*.shop.example.org"))
    text = str(err.value)
    assert ":13:" in text and "services[0].routes[0].host" in text  # located
    assert "cannot have tls: acme outside the zones" in text and "example.com" in text


def test_acme_expiry_is_a_global_health_certificate_warning() -> None:
    view = view_from_federation(
        Manifest.from_yaml(ZONED.format(host="www.example.com")), now=time.time()
    )
    now = time.time()
    fine = GatewayRecord(
        id="gw-1", cluster="eu", acme_name="www.example.com",
        acme_not_after=now + 30 * 86400, acme_renew_at=now + 10 * 86400,
    )  # fmt: skip
    overdue = dataclasses.replace(
        fine, id="gw-2", acme_not_after=now + 3600, acme_renew_at=now - 3600,
        acme_problem="www.example.com: urn:ietf:params:acme:error:rateLimited: slow down",
    )  # fmt: skip
    view = dataclasses.replace(view, gateways=MappingProxyType({"gw-1": fine, "gw-2": overdue}))
    body = global_health(view, now=now)
    expiring = body["certificates"]["expiring"]
    assert [(e["gateway"], e["source"], e["name"]) for e in expiring] == [
        ("gw-2", "acme", "www.example.com")
    ]
    assert expiring[0]["renewal_failing"] is True
    assert 3500 < expiring[0]["expires_in"] <= 3600
    gw = next(g for c in body["clusters"] for g in c["gateways"] if g["id"] == "gw-2")
    assert gw["acme_warning"] is True and gw["acme_name"] == "www.example.com"
    # fedgate health says which certificate
    from federation.commands.health import render

    assert "ACME certificate www.example.com of gw-2 (eu): renewal failing" in render(body)


def _authz(identifier: str, offered: tuple[str, ...], wildcard: bool = False) -> Any:
    from acme import messages

    return messages.Authorization.from_json(
        {
            "identifier": {"type": "dns", "value": identifier},
            "status": "pending",
            "wildcard": wildcard,
            "challenges": [
                {"type": t, "url": f"https://ca.test/c/{t}", "status": "pending",
                 "token": "VGhpcyBpcyBhIHRva2VuIG9mIDMyIGJ5dGVzISEhISE"}
                for t in offered
            ],
        }
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "preferred", "offered", "zoned", "picked"),
    [
        ("a.example.com", "tls-alpn-01", ("http-01", "tls-alpn-01"), False, "tls-alpn-01"),
        ("a.example.com", "http-01", ("http-01", "tls-alpn-01", "dns-01"), True, "http-01"),
        ("a.example.com", "http-01", ("tls-alpn-01", "dns-01"), True, "dns-01"),
        ("*.example.com", "tls-alpn-01", ("dns-01",), True, "dns-01"),
        ("*.example.com", "http-01", ("dns-01",), False, None),
        ("a.example.com", "dns-01", ("http-01", "dns-01"), False, None),
        ("127.0.0.1", "tls-alpn-01", ("http-01", "tls-alpn-01"), False, None),
    ],
)  # fmt: skip
def test_the_challenge_answered(
    name: str, preferred: str, offered: tuple[str, ...], zoned: bool, picked: str | None
) -> None:
    from federation.acme_client import AcmeConfig, AcmeOrderer, AcmeProblem

    o = AcmeOrderer(
        AcmeConfig("https://ca.test/dir", challenge=preferred), store=None,  # type: ignore[arg-type]
        lock=None, dns_zone=lambda _n: zoned,  # type: ignore[arg-type]
    )  # fmt: skip
    authz = _authz(name.removeprefix("*."), offered, wildcard=name.startswith("*."))
    if picked is None:
        with pytest.raises(AcmeProblem, match=r"no challenge to answer .*offered"):
            o._pick(name, authz)
    else:
        assert o._pick(name, authz)[0] == picked
