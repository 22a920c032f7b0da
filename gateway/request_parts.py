"""The parts of an HTTP/1.1 request that ``gateway/protocol.py`` keeps between reads:
a request kept for its replay, the split of a request target (cached), method names."""

from __future__ import annotations

import urllib.parse
from typing import Any

import httptools


class KnownRequest:
    """A request that came whole in one read (no body, keep-alive): its bytes and what
    parsing them gave (the scope before dispatch, its headers a tuple: shared by the
    replays, which read it only; ``_own`` copies it for an ASGI app); ``memo``: what the
    app decided for it, for its next replay (``gateway/fastpath.py``)."""

    __slots__ = ("data", "fast", "keep_alive", "memo", "scope")

    def __init__(self, scope: Any, keep_alive: bool, fast: bool) -> None:
        self.data = b""
        self.scope = scope
        self.keep_alive = keep_alive
        self.fast = fast  # a GET: may be served by callbacks
        self.memo: Any = None


def own_scope(scope: Any) -> Any:
    """A copy of a request's scope for an ASGI app (its own headers list and state)."""
    own = scope.copy()
    own["headers"] = list(scope["headers"])
    own["state"] = {}
    return own


KNOWN_MAX = 4096  # bytes of a request kept for its replay (per connection)
UNREPEATED_MAX = 8  # requests kept in a row without a replay before keeping fewer

METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}

# request target -> (raw path, path, query string): a parse cache for short targets
TARGETS: dict[bytes, tuple[bytes, str, bytes]] = {}
_TARGET_CACHE_SIZE = 4096
_TARGET_CACHE_MAX_LEN = 512


def parse_target(url: bytes) -> tuple[bytes, str, bytes]:
    """uvicorn's split of a request target (raises like ``httptools.parse_url``)."""
    parsed = httptools.parse_url(url)
    raw_path = parsed.path
    path = raw_path.decode("ascii")
    if "%" in path:
        path = urllib.parse.unquote(path)
    target = (raw_path, path, parsed.query or b"")
    if len(url) <= _TARGET_CACHE_MAX_LEN:
        if len(TARGETS) >= _TARGET_CACHE_SIZE:
            TARGETS.clear()
        TARGETS[url] = target
    return target
