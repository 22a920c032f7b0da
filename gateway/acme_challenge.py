"""HTTP-01 answers: ``GET /.well-known/acme-challenge/{token}`` from the routing view.

The orderer publishes each token's key authorization in etcd
(``{p}acme/challenge/{token}``, under its lease); the watch puts them in the view, so
whichever gateway of whichever cluster the ACME server reaches answers -- a dict
lookup, never an await on the request path. :func:`answer` is the one early check
the dispatcher makes before routing.
"""

from __future__ import annotations

from collections.abc import Mapping

PREFIX = "/.well-known/acme-challenge/"
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def is_challenge(path: str) -> bool:
    return path.startswith(PREFIX)


def answer(path: str, tokens: Mapping[str, str]) -> tuple[int, bytes]:
    """(status, body) for a challenge path: 200 with the key authorization, or 404."""
    token = path[len(PREFIX) :].split("?", 1)[0]
    if not token or len(token) > 256 or not set(token) <= _TOKEN_CHARS:
        return 404, b"unknown ACME token\n"
    value = tokens.get(token)
    if value is None:
        return 404, b"unknown ACME token\n"
    return 200, value.encode()
