"""Header hygiene: what a request and a response may carry across the gateway.

* Hop-by-hop headers (RFC 9110 section 7.6.1) and every header named in ``Connection``
  are removed in both directions; the gateway sets its own framing upstream.
* ``X-Forwarded-For/-Proto/-Host`` (and RFC 7239 ``Forwarded``) from the client are kept
  only when the client is a trusted proxy (``trustedProxies``); otherwise they are
  replaced by what the gateway saw.
* The gateway's own headers (``x-fedgate-*``) are trusted only on the east-west listener;
  on the public one they are removed, except the hop counter, which only grows.

Header names arrive lower-case (uvicorn and the upstream client lower them).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from federation.model import HOP_BY_HOP_HEADERS

Headers = Sequence[tuple[bytes, bytes]]

# hop-by-hop headers (RFC 9110 7.6.1): defined with the model, where route rules are
# checked against them too
HOP_BY_HOP: frozenset[bytes] = HOP_BY_HOP_HEADERS

FORWARDED_HEADER = b"x-fedgate-forwarded"  # origin cluster of a cross-cluster hop
HOPS_HEADER = b"x-fedgate-hops"  # how many gateways the request went through
PEER_HEADER = b"x-fedgate-peer"  # the origin gateway's verified client identity
BACKEND_HEADER = b"x-fedgate-backend"  # the service a weighted split picked at the first hop
MAX_HOPS = 4

# request headers the gateway always drops (it sets its own): framing, hop-by-hop, internal
_REQUEST_DROP: frozenset[bytes] = HOP_BY_HOP | {
    b"content-length",
    b"expect",  # the gateway answers 100-continue itself and sends the body right away
    FORWARDED_HEADER,
    HOPS_HEADER,
    PEER_HEADER,
    BACKEND_HEADER,
}
_CLIENT_FORWARDED: frozenset[bytes] = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)
_REQUEST_DROP_TRACE = _REQUEST_DROP | {b"traceparent"}  # when the gateway sends its own
RESPONSE_DROP: frozenset[bytes] = HOP_BY_HOP
RESPONSE_DROP_NO_BODY: frozenset[bytes] = HOP_BY_HOP | {b"content-length"}  # 204 and 304


def connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


class TrustedProxies:
    """Client addresses whose ``X-Forwarded-*`` headers are believed."""

    __slots__ = ("_cache", "_networks")

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, address: object) -> bool:
        if not self._networks or not isinstance(address, str):
            return False
        hit = self._cache.get(address)
        if hit is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                hit = False
            else:
                hit = any(ip in n for n in self._networks)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[address] = hit
        return hit


def request_headers(
    headers: Headers,
    *,
    client_ip: str,
    scheme: str,
    host: bytes,
    trust_forwarded: bool,
    traceparent: bytes | None,
    hops: int,
    forwarded_from: bytes | None = None,
    peer: bytes | None = None,
) -> list[tuple[bytes, bytes]]:
    """The headers to send upstream (without framing: the caller adds it)."""
    out: list[tuple[bytes, bytes]] = []
    xff = xfp = xfh = None
    named: set[bytes] | None = None
    drop = _REQUEST_DROP if traceparent is None else _REQUEST_DROP_TRACE
    for name, value in headers:
        if name in drop:
            if name == b"connection":
                tokens = connection_tokens(value)
                named = tokens if named is None else named | tokens
            continue
        if name in _CLIENT_FORWARDED:
            if not trust_forwarded:
                continue
            if name == b"x-forwarded-for":
                xff = value if xff is None else xff + b", " + value
                continue
            if name == b"x-forwarded-proto":
                xfp = value
                continue
            if name == b"x-forwarded-host":
                xfh = value
                continue
        out.append((name, value))
    if named:
        named -= {b"close", b"keep-alive"}
        if named:
            out = [(n, v) for n, v in out if n not in named]
    ip = client_ip.encode("ascii")
    out.append((b"x-forwarded-for", xff + b", " + ip if xff else ip))
    out.append((b"x-forwarded-proto", xfp or scheme.encode("ascii")))
    out.append((b"x-forwarded-host", xfh or host))
    if traceparent is not None:
        out.append((b"traceparent", traceparent))
    if hops:
        out.append((HOPS_HEADER, str(hops).encode("ascii")))
    if forwarded_from is not None:
        out.append((FORWARDED_HEADER, forwarded_from))
        if peer is not None:
            out.append((PEER_HEADER, peer))
    return out


def response_headers(headers: Headers, status: int = 200) -> list[tuple[bytes, bytes]]:
    """Upstream response headers without hop-by-hop ones. Content-Length (checked by the
    parser) is kept, except on 204 and 304, which have no body; Transfer-Encoding goes
    (the server re-chunks a body without a length)."""
    out: list[tuple[bytes, bytes]] = []
    named: set[bytes] | None = None
    drop = RESPONSE_DROP_NO_BODY if status == 204 or status == 304 else RESPONSE_DROP
    for name, value in headers:
        if name in drop:
            if name == b"connection" and value != b"keep-alive" and value != b"close":
                tokens = connection_tokens(value)
                named = tokens if named is None else named | tokens
            continue
        out.append((name, value))
    if named:
        out = [(n, v) for n, v in out if n not in named]
    return out


def last_forwarded_for(headers: Headers) -> str | None:
    """The right-most X-Forwarded-For entry (the address the previous hop saw)."""
    found: bytes | None = None
    for name, value in headers:
        if name == b"x-forwarded-for":
            found = value
    if not found:
        return None
    last = found.rsplit(b",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last.decode("ascii")))
    except (ValueError, UnicodeDecodeError):
        return None


def upstream_head(
    method: bytes,
    target: bytes,
    host: bytes,
    headers: Headers,
    *,
    client_ip: str,
    scheme: str,
    trust_forwarded: bool,
    traceparent: bytes | None,
    hops: int,
) -> bytes:
    """The request line and :func:`request_headers` serialized, for a request without a
    body (the callback fast path). The header rules live only in :func:`request_headers`.

    The header block depends on the head's headers and the arguments, not on the target:
    without a traceparent it is kept by all of them (:data:`_BLOCKS`), so a client that
    sends the same headers with a new target each time costs one lookup."""
    key: tuple[object, ...] | None = None
    if traceparent is None:
        key = (host, client_ip, scheme, trust_forwarded, hops, *headers)
        block = _BLOCKS.get(key)
        if block is not None:
            return b"".join((method, b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n", block))
    parts: list[bytes] = []
    for name, value in request_headers(
        headers,
        client_ip=client_ip,
        scheme=scheme,
        host=host,
        trust_forwarded=trust_forwarded,
        traceparent=traceparent,
        hops=hops,
    ):
        if name != b"host":
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    block = b"".join(parts)
    if key is not None and sum(len(n) + len(v) for n, v in headers) <= _BLOCK_MAX_BYTES:
        if len(_BLOCKS) >= _BLOCKS_MAX:
            _BLOCKS.clear()
        _BLOCKS[key] = block
    return b"".join((method, b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n", block))


# upstream_head's header blocks by what makes them (host, client, scheme, trust, hops and
# the headers), heads of up to 2 KiB of headers: ~4 MB at most
_BLOCKS: dict[tuple[object, ...], bytes] = {}
_BLOCKS_MAX = 1024
_BLOCK_MAX_BYTES = 2048
