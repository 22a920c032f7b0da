"""A throwaway certificate authority for loopback test servers (etcd over mutual TLS).

Production material comes from Vault PKI or the site's own CA; this one only serves the
demo and the tests (``EtcdCluster(tls=True)``, forged east-west identities).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

UTC = datetime.UTC


@dataclass(frozen=True, slots=True)
class IssuedFiles:
    """PEM files of one issued certificate (and the CA that signed it)."""

    cert: str
    key: str
    ca: str


@dataclass(frozen=True, slots=True)
class Issued:
    cert_pem: str
    key_pem: str
    ca_pem: str


class TestCa:
    """A self-signed EC P-256 CA."""

    __test__ = False  # not a pytest class

    def __init__(self, name: str = "fedgate test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(
        self,
        common_name: str,
        *,
        ips: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
        uris: tuple[str, ...] = (),
        not_before_hours: float = -1.0,
        hours: float = 24.0,
    ) -> Issued:
        """A leaf for server and client use; ``hours`` < 0 gives an expired one."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(UTC)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        names += [x509.UniformResourceIdentifier(u) for u in uris]
        start = now + datetime.timedelta(hours=not_before_hours)
        end = now + datetime.timedelta(hours=hours)
        if end <= start:
            start = end - datetime.timedelta(hours=1)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            ca_pem=self.pem,
        )

    def write(self, folder: Path, name: str, issued: Issued) -> IssuedFiles:
        """Write ``name.pem``, ``name-key.pem`` (0600) and ``ca.pem`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        cert, key, ca = folder / f"{name}.pem", folder / f"{name}-key.pem", folder / "ca.pem"
        cert.write_text(issued.cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(issued.key_pem)
        ca.write_text(issued.ca_pem)
        return IssuedFiles(str(cert), str(key), str(ca))
