"""Upstream answer heads llhttp accepted, byte for byte: a whole keep-alive answer framed
by Content-Length that arrives in one read and starts with one of them is taken as parsed
then, without parsing it again (see ``UpstreamConnection.data_received``).

Backends repeat their answer heads; the Date header changes once a second, so a few
entries serve a steady load. Bounded: at most 256 heads of at most 2 KiB each.
"""

from __future__ import annotations

HeaderList = tuple[tuple[bytes, bytes], ...]

_HEADS_MAX = 256
_HEAD_MAX = 2048
_LAST_MAX = 16384  # bytes of the last answer kept for the comparison


class KnownHead:
    """A response head llhttp accepted; ``relay``: what a relay derived from it, kept for
    the next answer with this head (the fast path's serialized head for the client)."""

    __slots__ = ("headers", "length", "relay", "status")

    def __init__(self, status: int, headers: HeaderList, length: int) -> None:
        self.status = status
        self.headers = headers
        self.length = length  # its Content-Length
        self.relay: bytes | None = None


_HEADS: dict[bytes, KnownHead] = {}

# the last whole answer found, and what was found: a backend answers the same bytes again
# (until its Date header turns), found by one comparison
_last: bytes = b""
_last_found: tuple[KnownHead, int] | None = None


def find(data: bytes) -> tuple[KnownHead, int] | None:
    """The known head ``data`` begins with and where it ends, when the rest of ``data`` is
    exactly its body (no byte missing, none past it); else None."""
    global _last, _last_found
    if data == _last:
        return _last_found
    end = data.find(b"\r\n\r\n") + 4
    known = _HEADS.get(data[:end]) if end > 3 else None
    if known is None or len(data) - end != known.length:
        return None
    found = (known, end)
    if len(data) <= _LAST_MAX:
        _last = data
        _last_found = found
    return found


def remember(data: bytes, status: int, headers: HeaderList, body_length: int) -> None:
    """``data`` was parsed as exactly one whole answer that can be taken again as is (the
    caller checked: 2xx-5xx but 204/304, Content-Length framing, keep-alive, parser between
    answers): keep its head, unless something came before it (an informational answer)
    or after its body, or it is large."""
    end = data.find(b"\r\n\r\n") + 4
    if end < 4 or end > _HEAD_MAX or len(data) - end != body_length:
        return
    if len(_HEADS) >= _HEADS_MAX:
        _HEADS.clear()
    _HEADS[data[:end]] = KnownHead(status, headers, body_length)
