"""TLS-ALPN-01 answers (RFC 8737) on the public TLS listener, by every gateway.

The orderer publishes the key authorization of a name in etcd (``{p}acme/alpn/{name}``);
the watch puts it in the view (``RoutingView.acme_alpn``), and each gateway builds its
own self-signed certificate for the name carrying the SHA-256 of the key authorization
in the critical acmeIdentifier extension (:func:`challenge_context`). A handshake gets
it only when the client *offers* ``acme-tls/1`` and names the host by SNI; every other
client of that name keeps the normal certificate.

Python's ``ssl`` chooses the certificate in the SNI callback, before ALPN, and shows no
offered protocols there. So while a challenge is pending the public context makes its
connections with :class:`PeekingSSLObject` (``SSLContext.sslobject_class``), which reads
the ClientHello's ALPN list from the incoming bytes before OpenSSL consumes them (they
are put back untouched); the SNI callback (``gateway/acme_sni.py``) then reads
:attr:`PeekingSSLObject.offered_alpn`. Without pending challenges the context makes
plain :class:`ssl.SSLObject`: nothing is peeked.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.tls import CertificateMaterial, load_material, server_context

ACME_TLS_1 = "acme-tls/1"
ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # id-pe-acmeIdentifier
# a ClientHello longer than this, or cut into more records, is not looked at (it gets
# the normal certificate): real ones fit one record; this bounds the work per connection
MAX_HELLO = 16 * 1024 + 4 * 5
MAX_RECORDS = 4


def offered_alpn(data: bytes) -> tuple[str, ...] | None:
    """The ALPN protocols a TLS ClientHello (its records, from the first byte) offers;
    () when it offers none or is not a ClientHello; None while it is incomplete."""
    hello = bytearray()
    pos = 0
    for _ in range(MAX_RECORDS):  # reassemble the handshake message from its records
        if len(data) < pos + 5:
            return None
        if data[pos] != 22:  # not a handshake record
            return ()
        size = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if len(data) < pos + 5 + size:
            return None
        hello += data[pos + 5 : pos + 5 + size]
        pos += 5 + size
        if len(hello) >= 4:
            if hello[0] != 1:  # not a ClientHello
                return ()
            need = 4 + int.from_bytes(hello[1:4], "big")
            if len(hello) >= need:
                return _alpn_extension(bytes(hello[4:need]))
    return ()  # cut into too many records: not looked at


def _alpn_extension(body: bytes) -> tuple[str, ...]:
    try:
        p = 2 + 32  # client_version, random
        p += 1 + body[p]  # session id
        p += 2 + int.from_bytes(body[p : p + 2], "big")  # cipher suites
        p += 1 + body[p]  # compression methods
        end = p + 2 + int.from_bytes(body[p : p + 2], "big")
        p += 2
        while p + 4 <= end:
            typ = int.from_bytes(body[p : p + 2], "big")
            size = int.from_bytes(body[p + 2 : p + 4], "big")
            if typ == 16:  # application_layer_protocol_negotiation
                ext = body[p + 4 : p + 4 + size]
                names: list[str] = []
                q = 2
                while q < len(ext):
                    n = ext[q]
                    names.append(ext[q + 1 : q + 1 + n].decode("ascii", "replace"))
                    q += 1 + n
                return tuple(names)
            p += 4 + size
    except IndexError:
        pass
    return ()


class PeekingSSLObject(ssl.SSLObject):
    """An :class:`ssl.SSLObject` that learns the offered ALPN before the SNI callback."""

    _incoming: ssl.MemoryBIO | None
    _hello: bytes
    offered_alpn: tuple[str, ...] | None

    @classmethod
    def _create(
        cls, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, *args: Any, **kwargs: Any
    ) -> PeekingSSLObject:
        self: PeekingSSLObject = super()._create(  # type: ignore[misc]
            incoming, outgoing, *args, **kwargs
        )
        self._incoming, self._hello, self.offered_alpn = incoming, b"", None
        return self

    def do_handshake(self) -> None:
        incoming = self._incoming
        if incoming is not None:
            data = incoming.read()
            if data:
                incoming.write(data)  # put back: OpenSSL reads the same bytes
            self._hello += data
            self.offered_alpn = offered_alpn(self._hello)
            if self.offered_alpn is not None or len(self._hello) > MAX_HELLO:
                self._incoming, self._hello = None, b""  # decided: peek no more
        super().do_handshake()


def challenge_material(name: str, key_authorization: str) -> CertificateMaterial:
    """A self-signed certificate for ``name`` with the acmeIdentifier extension (critical,
    the DER OCTET STRING of SHA-256 of the key authorization), and its key."""
    digest = hashlib.sha256(key_authorization.encode()).digest()
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return CertificateMaterial(cert_pem, key_pem.decode(), "")


def challenge_context(name: str, key_authorization: str) -> ssl.SSLContext:
    """The context a validation handshake for ``name`` is switched to: ALPN
    ``acme-tls/1`` only, the challenge certificate."""
    ctx = server_context()
    ctx.set_alpn_protocols([ACME_TLS_1])
    load_material(ctx, challenge_material(name, key_authorization))
    return ctx
