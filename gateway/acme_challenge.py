"""HTTP-01 answers: ``GET /.well-known/acme-challenge/{token}`` from the routing view.

The orderer publishes each token's key authorization in etcd
(``{p}acme/challenge/{token}``, under its lease); the watch puts them in the view
(``RoutingView.acme_challenges``), so whichever gateway of whichever cluster the ACME
server reaches answers -- a dict lookup, never an await on the request path.
:func:`lookup` is the one early check the dispatcher makes before routing; a token the
federation did not publish falls through to routing (a backend may run its own ACME
client).
"""

from __future__ import annotations

from collections.abc import Mapping

PREFIX = "/.well-known/acme-challenge/"


def lookup(path: str, tokens: Mapping[str, str]) -> bytes | None:
    """The key authorization to answer ``path`` with, or None (not ours: route it)."""
    if not tokens or not path.startswith(PREFIX):
        return None
    value = tokens.get(path[len(PREFIX) :])
    return value.encode() if value is not None else None
