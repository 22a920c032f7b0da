"""SNI selection of ACME certificates on the public listener.

One :class:`ssl.SSLContext` per ACME name, created once and never replaced (the same
rule as :mod:`gateway.tls`): a renewal loads the new chain *into* it, so established
connections keep theirs and new handshakes get the new one. The public context's
``sni_callback`` switches a handshake to the name's context (exact name first, then a
one-label wildcard); a name without a certificate yet stays on the public context --
the Vault PKI certificate -- and is listed by :meth:`AcmeSni.missing` for health.
The callback is a dict lookup: nothing blocks a handshake.
"""

from __future__ import annotations

import ssl

from gateway.tls import CertificateMaterial, load_material, server_context


def _lookup_names(server_name: str) -> tuple[str, ...]:
    name = server_name.lower().rstrip(".")
    head, dot, rest = name.partition(".")
    return (name, f"*.{rest}") if dot and head else (name,)


class AcmeSni:
    def __init__(self) -> None:
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._wanted: set[str] = set()

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
            ctx = self.context_for(server_name)
            if ctx is not None:
                sock.context = ctx
            return None

        public.sni_callback = pick
