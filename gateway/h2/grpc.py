"""The gRPC vocabulary the gateway needs: status codes, ``grpc-timeout``, and the
trailers-only answer a gateway error becomes on a gRPC request (never an HTML or text
502: a gRPC client reads ``grpc-status``, so that is where the reason goes)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

from federation.model import GRPC_STATUS_CODES

CODES = GRPC_STATUS_CODES  # name -> code (federation/model.py)
UNAVAILABLE = 14
DEADLINE_EXCEEDED = 4

# the HTTP status of a gateway answer -> the gRPC status the client sees
_FROM_HTTP: dict[int, int] = {
    400: CODES["INTERNAL"],  # a malformed request (bad Host, dot segments)
    401: CODES["UNAUTHENTICATED"],
    403: CODES["PERMISSION_DENIED"],  # access policy
    404: CODES["UNIMPLEMENTED"],  # no route for this host and path (= method)
    408: DEADLINE_EXCEEDED,  # the request body did not arrive in time
    413: CODES["RESOURCE_EXHAUSTED"],  # body limit
    429: CODES["RESOURCE_EXHAUSTED"],  # rate limit
    499: CODES["CANCELLED"],
    502: UNAVAILABLE,
    503: UNAVAILABLE,  # no healthy upstream, breaker open
    504: DEADLINE_EXCEEDED,
    508: CODES["ABORTED"],  # too many gateway hops
}

GRPC_CONTENT_TYPE = b"application/grpc"
_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def is_grpc(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Is this request a gRPC call (``content-type: application/grpc[+proto|...]``)?"""
    for name, value in headers:
        if name == b"content-type":
            return value[:16] == GRPC_CONTENT_TYPE and value[16:17] in (b"", b"+", b";")
    return False


def status_of(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The ``grpc-status`` among these headers or trailers (None: absent or malformed)."""
    for name, value in headers:
        if name == b"grpc-status":
            return int(value) if value.isdigit() and len(value) <= 2 else None
    return None


def parse_timeout(value: bytes) -> float | None:
    """``grpc-timeout`` (1 to 8 digits and a unit: H M S m u n) -> seconds; None if
    malformed (a malformed value is ignored, as gRPC servers do)."""
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or len(digits) > 8:
        return None
    scale = _UNITS.get(unit)
    return int(digits) * scale if scale is not None else None


def call_timeout(headers: Iterable[tuple[bytes, bytes]]) -> float | None:
    """The call's ``grpc-timeout`` in seconds (None: absent or malformed)."""
    for name, value in headers:
        if name == b"grpc-timeout":
            return parse_timeout(value)
    return None


def status_from_http(status: int) -> int:
    return _FROM_HTTP.get(status, CODES["UNKNOWN"])


def error_headers(code: int, message: str) -> list[tuple[bytes, bytes]]:
    """The header block of a trailers-only gRPC answer (HTTP 200, one HEADERS frame
    that ends the stream)."""
    quoted = urllib.parse.quote(message[:512], safe=" !#$&'()*+,/:;=?@[]~").encode("ascii")
    return [
        (b":status", b"200"),
        (b"content-type", GRPC_CONTENT_TYPE),
        (b"grpc-status", str(code).encode("ascii")),
        (b"grpc-message", quoted),
    ]
