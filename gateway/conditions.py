"""A route's request conditions (method, headers, query parameters), compiled once per
view and evaluated against one request.

Header names and values are compared as bytes, lower-case names as the ASGI server
gives them; a header sent more than once holds a condition when one of its values
does. The request's headers and query are indexed once, on the first condition that
needs them (:class:`RequestView`). A run of routes told apart by one exact header value
(tenant, version) is one dict lookup (:class:`Dispatch`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl

from federation.model import RouteConditions, ValueMatch
from gateway.hygiene import Headers

T = TypeVar("T")
_EXACT, _PREFIX, _PRESENT, _ABSENT = 0, 1, 2, 3
_KINDS = {"exact": _EXACT, "prefix": _PREFIX, "present": _PRESENT, "absent": _ABSENT}


class Conditions:
    """A route's conditions compiled for matching (header names and values as bytes)."""

    __slots__ = ("dispatch_key", "headers", "methods", "query", "rank", "source")

    def __init__(self, c: RouteConditions) -> None:
        self.source = c
        self.methods = c.methods
        self.headers = tuple(
            (v.name.encode(), _KINDS[v.kind], v.value.encode(), v) for v in c.headers
        )
        self.query = tuple((v.name, _KINDS[v.kind], v.value, v) for v in c.query)
        # precedence: a method condition first, then more header, then more query ones
        self.rank = (-(1 if self.methods else 0), -len(self.headers), -len(self.query))
        # the header name when this is one exact header condition alone (see Dispatch)
        self.dispatch_key: bytes | None = None
        if not self.methods and not self.query and len(self.headers) == 1:
            name, kind, _, _ = self.headers[0]
            self.dispatch_key = name if kind == _EXACT else None


def _holds(kind: int, want: Any, values: list[Any] | None) -> bool:
    if values is None:
        return kind == _ABSENT
    if kind == _EXACT:
        return want in values
    if kind == _PREFIX:
        for v in values:  # noqa: SIM110 (a loop: no generator on the request path)
            if v.startswith(want):
                return True
        return False
    return kind == _PRESENT


def _multidict(pairs: Iterable[tuple[Any, Any]]) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = {}
    for name, value in pairs:
        values = out.get(name)
        if values is None:
            out[name] = [value]
        else:
            values.append(value)
    return out


def _parse_query(raw: bytes) -> dict[str, list[str]]:
    """``a=1&b=x%20y`` -> {"a": ["1"], "b": ["x y"]}; only pieces with "%" or "+" are
    unquoted (the common plain query costs a split)."""
    out: dict[str, list[str]] = {}
    if not raw:
        return out
    for piece in raw.decode("utf-8", "replace").split("&"):
        if not piece:
            continue
        if "%" in piece or "+" in piece:
            pairs = parse_qsl(piece, keep_blank_values=True)
            if not pairs:
                continue
            name, value = pairs[0]
        else:
            name, _, value = piece.partition("=")
        values = out.get(name)
        if values is None:
            out[name] = [value]
        else:
            values.append(value)
    return out


class RequestView:
    """What conditions look at; headers and query indexed once, on first need."""

    __slots__ = ("_headers", "_query", "headers", "method", "raw_query")

    def __init__(self, method: str, headers: Headers, raw_query: bytes) -> None:
        self.method = method
        self.headers = headers
        self.raw_query = raw_query
        self._headers: dict[bytes, list[bytes]] | None = None
        self._query: dict[str, list[str]] | None = None

    def header_values(self) -> dict[bytes, list[bytes]]:
        if self._headers is None:
            self._headers = _multidict(self.headers)
        return self._headers

    def failing(self, cond: Conditions) -> str | ValueMatch | None:
        """The first condition that does not hold ("method" or the ValueMatch), or None."""
        if cond.methods and self.method not in cond.methods:
            return "method"
        if cond.headers:
            by_name = self._headers
            if by_name is None:
                by_name = self.header_values()
            for name, kind, want, source in cond.headers:
                if not _holds(kind, want, by_name.get(name)):
                    return source
        if cond.query:
            query = self._query
            if query is None:
                query = self._query = _parse_query(self.raw_query)
            for qname, kind, qwant, source in cond.query:
                if not _holds(kind, qwant, query.get(qname)):
                    return source
        return None


class Dispatch(Generic[T]):
    """A run of same-rank routes, each with one exact header condition on the same header
    and nothing else (routing by tenant, version, ...): one dict lookup instead of a
    condition per route. The first route in precedence order wins when the request
    carries the header more than once."""

    __slots__ = ("by_value", "name")

    def __init__(self, name: bytes, run: list[tuple[Conditions, T]]) -> None:
        self.name = name
        self.by_value: dict[bytes, tuple[int, T]] = {}
        for i, (cond, match) in enumerate(run):
            self.by_value.setdefault(cond.headers[0][2], (i, match))

    def pick(self, request: RequestView) -> T | None:
        values = request.header_values().get(self.name)
        if values is None:
            return None
        if len(values) == 1:
            hit = self.by_value.get(values[0])
            return hit[1] if hit is not None else None
        hits = [h for h in map(self.by_value.get, values) if h is not None]
        return min(hits, key=lambda h: h[0])[1] if hits else None


def describe_conditions(c: RouteConditions | None) -> str:
    """``method in [GET, HEAD], header x-canary = '1', query debug present``, or ``any request``."""
    if c is None:
        return "any request"
    parts = []
    if c.methods:
        parts.append(f"method in [{', '.join(sorted(c.methods))}]")
    parts += [f"header {_describe(v)}" for v in c.headers]
    parts += [f"query {_describe(v)}" for v in c.query]
    return ", ".join(parts)


def _describe(v: ValueMatch) -> str:
    if v.kind == "exact":
        return f"{v.name} = {v.value!r}"
    if v.kind == "prefix":
        return f"{v.name} starts with {v.value!r}"
    return f"{v.name} {v.kind}"


def why_not(failing: str | ValueMatch, request: RequestView) -> str:
    if isinstance(failing, str):
        return f"method {request.method} not accepted"
    return f"needs {_describe(failing)}"
