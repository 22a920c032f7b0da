"""Host and path to a route, over one routing view.

A :class:`RouteTable` is compiled once per view (in a :class:`~gateway.types.ViewHolder`
listener) and then only read. Matching is: an exact host before a wildcard host
(``*.example.com`` matches one or more labels in front, the longest suffix wins), then
the longest path prefix among that host's routes. A prefix matches on a segment
boundary or as a plain string prefix ending in ``/`` (``/api`` matches ``/api`` and
``/api/x`` but not ``/apix``).
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.model import Route, RoutingView, Service


@dataclass(frozen=True, slots=True)
class RouteMatch:
    service: Service
    route: Route


# one host's routes, longest prefix first: (prefix, prefix without trailing slash, match)
_Entries = tuple[tuple[str, str, RouteMatch], ...]


def _match_prefix(entries: _Entries, path: str) -> RouteMatch | None:
    for prefix, bare, match in entries:
        if path.startswith(prefix):
            if prefix.endswith("/") or len(path) == len(prefix) or path[len(prefix)] in "/?":
                return match
        elif path == bare:  # "/api/" also matches "/api"
            return match
    return None


class RouteTable:
    """Routes of one view, indexed for matching a request's host and path."""

    __slots__ = ("_exact", "_wild")

    def __init__(self, exact: dict[str, _Entries], wild: dict[str, _Entries]) -> None:
        self._exact = exact
        self._wild = wild  # suffix without the "*", e.g. ".example.com"

    @classmethod
    def build(cls, view: RoutingView) -> RouteTable:
        exact: dict[str, list[tuple[str, str, RouteMatch]]] = {}
        wild: dict[str, list[tuple[str, str, RouteMatch]]] = {}
        for name in sorted(view.services):  # deterministic when two services claim a route
            service = view.services[name]
            for route in service.routes:
                host = route.host.lower().rstrip(".")
                prefix = route.path_prefix or "/"
                bare = prefix.rstrip("/") or "/"
                entry = (prefix, bare, RouteMatch(service=service, route=route))
                if host.startswith("*."):
                    wild.setdefault(host[1:], []).append(entry)
                else:
                    exact.setdefault(host, []).append(entry)

        def order(d: dict[str, list[tuple[str, str, RouteMatch]]]) -> dict[str, _Entries]:
            out: dict[str, _Entries] = {}
            for host, entries in d.items():
                seen: set[str] = set()
                kept = []
                for e in sorted(entries, key=lambda e: -len(e[0])):  # stable: first name wins
                    if e[0] not in seen:
                        seen.add(e[0])
                        kept.append(e)
                out[host] = tuple(kept)
            return out

        return cls(order(exact), order(wild))

    def match(self, host: str, path: str) -> RouteMatch | None:
        """``host`` lower case without port; exact host > wildcard; longest prefix."""
        entries = self._exact.get(host)
        if entries is not None:
            found = _match_prefix(entries, path)
            if found is not None:
                return found
        if self._wild:
            dot = host.find(".")
            while dot > 0:  # the label in front must not be empty
                entries = self._wild.get(host[dot:])
                if entries is not None:
                    found = _match_prefix(entries, path)
                    if found is not None:
                        return found
                dot = host.find(".", dot + 1)
        return None

    def __len__(self) -> int:
        return sum(len(e) for e in self._exact.values()) + sum(len(e) for e in self._wild.values())


def split_host(value: bytes) -> str | None:
    """The Host header value -> lower-case host name without port; None if malformed."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    if text.startswith("["):  # IPv6 literal
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and (not rest.startswith(":") or not rest[1:].isdigit()):
            return None
        return host.lower()
    host, sep, port = text.partition(":")
    if sep and not port.isdigit():
        return None
    if not host or any(c in host for c in " \t/\\@,;"):
        return None
    return host.lower().rstrip(".")
