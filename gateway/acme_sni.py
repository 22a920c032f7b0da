"""SNI selection of ACME certificates on the public listener.

One :class:`ssl.SSLContext` per ACME name, created once and never replaced (the same
rule as :mod:`gateway.tls`): a renewal loads the new chain *into* it, so established
connections keep theirs and new handshakes get the new one. The public context's
``sni_callback`` switches a handshake to the name's context (exact name first, then a
one-label wildcard); a name without a certificate yet stays on the public context --
the Vault PKI certificate -- and is listed by :meth:`AcmeSni.missing` for health.
The callback is a dict lookup: nothing blocks a handshake.

TLS-ALPN-01 (``gateway/acme_alpn.py``): while the view holds challenges
(:meth:`AcmeSni.challenges`), a handshake whose ClientHello offers ``acme-tls/1`` for a
name with a pending challenge is switched to that name's challenge context instead.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from gateway.acme_alpn import ACME_TLS_1, PeekingSSLObject, challenge_context
from gateway.tls import CertificateMaterial, load_material, server_context


def _lookup_names(server_name: str) -> tuple[str, ...]:
    name = server_name.lower().rstrip(".")
    head, dot, rest = name.partition(".")
    return (name, f"*.{rest}") if dot and head else (name,)


class AcmeSni:
    def __init__(self) -> None:
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._wanted: set[str] = set()
        # TLS-ALPN-01: name -> (key authorization, its challenge context)
        self._challenges: dict[str, tuple[str, ssl.SSLContext]] = {}
        self._public: ssl.SSLContext | None = None
        self.challenge_handshakes = 0  # handshakes answered with a challenge certificate

    def challenges(self, pending: Mapping[str, str]) -> None:
        """The TLS-ALPN-01 challenges of the view (name -> key authorization): a context
        per new or changed one, the gone ones dropped; peeking only while any is pending.
        Nothing to do without a public TLS listener (:meth:`attach`)."""
        if self._public is None:
            return
        for name in self._challenges.keys() - pending.keys():
            del self._challenges[name]
        for name, key_authz in pending.items():
            have = self._challenges.get(name)
            if have is None or have[0] != key_authz:
                self._challenges[name] = (key_authz, challenge_context(name, key_authz))
        if self._public is not None:
            self._public.sslobject_class = PeekingSSLObject if self._challenges else ssl.SSLObject

    def want(self, names: set[str]) -> None:
        """The names the manifest marks ``tls: acme`` for this gateway."""
        self._wanted = {n.lower() for n in names}

    def install(self, name: str, fullchain_pem: str, key_pem: str) -> None:
        """Load (or reload) the certificate of ``name``; new handshakes only."""
        material = CertificateMaterial(fullchain_pem, key_pem, "")
        ctx = self._contexts.get(name.lower())
        if ctx is None:
            ctx = server_context()
            load_material(ctx, material)
            self._contexts[name.lower()] = ctx
        else:
            load_material(ctx, material)

    def missing(self) -> list[str]:
        return sorted(self._wanted - self._contexts.keys())

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        if not server_name:
            return None
        for n in _lookup_names(server_name):
            ctx = self._contexts.get(n)
            if ctx is not None:
                return ctx
        return None

    def attach(self, public: ssl.SSLContext) -> None:
        """Make ``public`` pick a name's context by SNI (falls back to itself)."""

        def pick(sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
            if self._challenges and server_name:
                offered = getattr(sock, "offered_alpn", None)
                hit = self._challenges.get(server_name.lower().rstrip("."))
                if hit is not None and offered and ACME_TLS_1 in offered:
                    sock.context = hit[1]
                    self.challenge_handshakes += 1
                    return None
            ctx = self.context_for(server_name)
            if ctx is not None:
                sock.context = ctx
            return None

        self._public = public
        public.sni_callback = pick
