"""TLS for the gateway: SSLContexts built from Vault material, hot swap, peer identity.

The three :class:`ssl.SSLContext` objects of :class:`TlsContexts` are created once and
never replaced: listeners and connection pools keep references to them. New material
(certificate, key, CA bundle) is loaded *into* them with ``load_cert_chain`` and
``load_verify_locations``. OpenSSL copies a context's certificate and key into each
connection when the connection is created, so a reload affects new handshakes only;
established connections keep the certificate they were set up with.

Trust anchors are only ever added (OpenSSL has no "remove a CA" call on a live
context): after a CA rotation both the old and the new CA are trusted until restart,
which is what a CA roll-over needs anyway.

Only TLS 1.2 and newer are accepted, on every context.

East-west identity is checked both ways: a client gateway speaks for another cluster
(``x-fedgate-forwarded``) only with a gateway SPIFFE ID of a cluster that exists and
names that same cluster (:func:`peer_gateway_cluster`, :func:`forwarded_matches`); a
server dialled as a cluster's gateway must present that cluster's gateway SPIFFE ID and
the cluster must have a live gateway (:func:`upstream_gateway_error`).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from federation.model import RoutingView

SPIFFE_SCHEME = "spiffe://"


@dataclass
class TlsContexts:
    """The gateway's TLS contexts; the objects never change, certificates are swapped inside."""

    public_server: ssl.SSLContext | None
    east_west_server: ssl.SSLContext | None  # CERT_REQUIRED, CA from Vault
    east_west_client: ssl.SSLContext | None  # presents the gateway's east-west certificate


@dataclass(frozen=True, slots=True)
class CertificateMaterial:
    """PEM material for one certificate: leaf (+ intermediates), its key, the CA bundle."""

    certificate: str  # leaf first, then any intermediates
    private_key: str
    ca_bundle: str  # the CA(s) that verify peers


# ------------------------------------------------------------------ contexts


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def server_context(*, require_client_cert: bool = False) -> ssl.SSLContext:
    """A server context without material yet; ``require_client_cert`` for mutual TLS."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    ctx.set_alpn_protocols(["h2", "http/1.1"])  # HTTP/2 (gateway/h2/listen.py)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


def client_context() -> ssl.SSLContext:
    """A client context (east-west): verifies the server against the loaded CA bundle.

    Host names are not checked: gateways are addressed by IP or by names that are not in
    their east-west certificate; the peer is identified by its SPIFFE ID instead
    (:func:`peer_identity`), and the caller checks it against the trust domain.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def build_contexts(*, public: bool = True, east_west: bool = True) -> TlsContexts:
    """Empty contexts (no material yet): load it with :func:`load_material`."""
    return TlsContexts(
        public_server=server_context() if public else None,
        east_west_server=server_context(require_client_cert=True) if east_west else None,
        east_west_client=client_context() if east_west else None,
    )


def load_material(
    ctx: ssl.SSLContext, material: CertificateMaterial, *, own_cert: bool = True
) -> None:
    """Load ``material`` into the live ``ctx``: certificate + key, and the CA bundle.

    The PEM text goes through files in a private temporary folder (mode 0700, removed
    at once): ``ssl`` loads certificates and keys from files only. Raises
    :class:`ssl.SSLError` (the context is left as it was) if the key does not match.
    """
    with tempfile.TemporaryDirectory(prefix="fedgate-tls-") as tmp:
        os.chmod(tmp, 0o700)
        cert = os.path.join(tmp, "cert.pem")
        key = os.path.join(tmp, "key.pem")
        ca = os.path.join(tmp, "ca.pem")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(material.private_key)
        with open(cert, "w") as f:
            f.write(material.certificate)
        with open(ca, "w") as f:
            f.write(material.ca_bundle)
        if own_cert:
            # check the pair on a scratch context first: a failed load_cert_chain on the
            # live context could leave it with a certificate and no matching key
            probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            probe.load_cert_chain(cert, key)
            ctx.load_cert_chain(cert, key)
        if material.ca_bundle.strip() and ctx.verify_mode != ssl.CERT_NONE:
            ctx.load_verify_locations(cafile=ca)


def check_material(material: CertificateMaterial) -> None:
    """Raise :class:`ssl.SSLError` if the certificate and key do not load as a pair, or
    the CA bundle does not load (checked on a scratch context)."""
    load_material(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), material)


def install(
    contexts: TlsContexts,
    *,
    public: CertificateMaterial | None,
    east_west: CertificateMaterial | None,
) -> None:
    """Load new material into every context that uses it (new handshakes only).

    Every certificate/key pair is checked first, so a bad one changes no context."""
    for material in (public, east_west):
        if material is not None:
            check_material(material)
    if public is not None and contexts.public_server is not None:
        load_material(contexts.public_server, public)
    if east_west is not None:
        if contexts.east_west_server is not None:
            load_material(contexts.east_west_server, east_west)
        if contexts.east_west_client is not None:
            load_material(contexts.east_west_client, east_west)


# ------------------------------------------------------------------ identity


def uri_sans(cert: dict[str, object]) -> list[str]:
    """The URI subject alternative names of a decoded certificate (``getpeercert()``)."""
    sans = cert.get("subjectAltName") or ()
    out: list[str] = []
    if isinstance(sans, Iterable):
        for entry in sans:
            if isinstance(entry, tuple) and len(entry) == 2 and entry[0] == "URI":
                out.append(str(entry[1]))
    return out


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The verified peer certificate's single SPIFFE URI SAN, else ``None``.

    ``None`` when there is no TLS, no peer certificate, the certificate was not verified
    (``getpeercert()`` is empty then), or it carries zero or several URI SANs, or its one
    URI SAN is not a well-formed SPIFFE ID.
    """
    if ssl_object is None:
        return None
    try:
        cert = ssl_object.getpeercert()
    except (ValueError, ssl.SSLError):  # handshake not done
        return None
    if not cert:
        return None
    uris = uri_sans(cert)  # type: ignore[arg-type]
    if len(uris) != 1:
        return None
    uri = uris[0]
    return uri if parse_spiffe_id(uri) is not None else None


def parse_spiffe_id(uri: str) -> tuple[str, str] | None:
    """``spiffe://<trust-domain>/<path>`` -> (trust domain, path), else ``None``."""
    if not uri.startswith(SPIFFE_SCHEME):
        return None
    rest = uri[len(SPIFFE_SCHEME) :]
    domain, slash, path = rest.partition("/")
    if not domain or not slash or not path:
        return None
    if any(c in uri for c in "?#") or any(seg in ("", ".", "..") for seg in path.split("/")):
        return None
    if domain != domain.lower() or any(not (c.isalnum() or c in "-._") for c in domain):
        return None
    return domain, "/" + path


def in_trust_domain(identity: str | None, trust_domain: str) -> bool:
    """``identity`` is a SPIFFE ID of ``trust_domain``."""
    if identity is None:
        return False
    parsed = parse_spiffe_id(identity)
    return parsed is not None and parsed[0] == trust_domain


def gateway_spiffe_id(trust_domain: str, cluster: str) -> str:
    """The SPIFFE ID of a cluster's gateways: ``spiffe://<td>/cluster/<name>/gateway``."""
    return f"{SPIFFE_SCHEME}{trust_domain}/cluster/{cluster}/gateway"


def gateway_cluster(identity: str | None, trust_domain: str) -> str | None:
    """The cluster named by a gateway SPIFFE ID of ``trust_domain``, else ``None``."""
    if not in_trust_domain(identity, trust_domain):
        return None
    assert identity is not None
    parsed = parse_spiffe_id(identity)
    assert parsed is not None
    parts = parsed[1].split("/")
    if len(parts) == 4 and parts[1] == "cluster" and parts[3] == "gateway" and parts[2]:
        return parts[2]
    return None


# ------------------------------------------------------------------ east-west, both ways


def _domain_of(identity: str, trust_domain: str | None) -> str:
    """The trust domain to check ``identity`` against: ours, or (certificates from KV,
    no PKI trust domain configured) the identity's own."""
    if trust_domain is not None:
        return trust_domain
    parsed = parse_spiffe_id(identity)
    return parsed[0] if parsed is not None else ""


def peer_gateway_cluster(
    identity: str | None, trust_domain: str | None, clusters: Mapping[str, object]
) -> str | None:
    """The cluster an east-west *client* speaks for: the cluster of its gateway SPIFFE ID,
    when that cluster exists in the routing view; else ``None`` (not a gateway: a workload
    ID, another trust domain, or a cluster nobody registered)."""
    if identity is None:
        return None
    cluster = gateway_cluster(identity, _domain_of(identity, trust_domain))
    return cluster if cluster is not None and cluster in clusters else None


def forwarded_matches(forwarded: bytes, peer_cluster: str) -> bool:
    """``x-fedgate-forwarded`` names the cluster the client gateway's certificate names."""
    return forwarded == peer_cluster.encode()


def upstream_gateway_error(
    ssl_object: ssl.SSLObject | ssl.SSLSocket | None,
    *,
    trust_domain: str | None,
    cluster: str,
    view: RoutingView,
) -> str | None:
    """Why the *server* a gateway dialled for ``cluster`` is not one of its gateways, or
    ``None`` when it is: its verified certificate carries exactly the SPIFFE ID
    ``spiffe://<trust domain>/cluster/<cluster>/gateway`` and the view holds a live
    gateway (a lease-bound record) of that cluster. Checked once per new connection."""
    identity = peer_identity(ssl_object)
    if identity is None:
        return f"east-west {cluster}: the server certificate carries no SPIFFE ID"
    expected = gateway_spiffe_id(_domain_of(identity, trust_domain), cluster)
    if identity != expected:
        return f"east-west {cluster}: server identity {identity} is not {expected}"
    if not any(g.cluster == cluster for g in view.gateways.values()):
        return f"east-west {cluster}: no live gateway of that cluster in the view"
    return None
