"""What the ACME challenges publish through etcd, and what every gateway reads back.

The orderer (the holder of a name's lock) publishes under its lease:

- HTTP-01: ``{p}acme/challenge/{token}`` = the key authorization
  (``gateway/acme_challenge.py`` answers ``/.well-known/acme-challenge/{token}``);
- TLS-ALPN-01: ``{p}acme/alpn/{name}`` = the key authorization (RFC 8737: every gateway
  builds its own self-signed certificate for ``name`` carrying its SHA-256 in the
  critical acmeIdentifier extension, served to clients offering ``acme-tls/1``:
  ``gateway/acme_alpn.py``);
- DNS-01: ``{p}acme/dns/{name}`` = the TXT value (base64url SHA-256 of the key
  authorization) of ``_acme-challenge.<name>`` (``*.`` left off), answered by every
  gateway's DNS listener (``gateway/dns/resolve.py``).

The values are checked like any etcd value (``federation/view.py``): a hostile one is
rejected, never answered.
"""

from __future__ import annotations

import re

from federation.manifest.values import check_route_host

TXT_LABEL = "_acme-challenge"
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_KEY_AUTHZ = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def txt_name(name: str) -> str:
    """The owner of the DNS-01 TXT record of ``name`` (RFC 8555 section 8.4)."""
    name = name.lower().rstrip(".")
    return f"{TXT_LABEL}.{name[2:] if name.startswith('*.') else name}"


def check_acme_challenge(form: str, name: str, value: str) -> None:
    """``form`` is ``alpn`` or ``dns``; raises ValueError (one line) when the name or the
    value is not what an orderer publishes."""
    try:
        host = check_route_host(name)
    except ValueError as exc:
        raise ValueError(f"acme {form} name: {exc}") from None
    if form == "alpn":
        if host.startswith("*."):
            raise ValueError("acme alpn name: TLS-ALPN-01 cannot prove a wildcard")
        if not _KEY_AUTHZ.fullmatch(value):
            raise ValueError("acme alpn value is not a key authorization (token.thumbprint)")
    elif len(value) != 43 or not _B64URL.fullmatch(value):
        raise ValueError("acme dns value is not a base64url SHA-256 digest")
