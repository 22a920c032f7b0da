"""Host, path and request conditions to a route, over one routing view.

A :class:`RouteTable` is compiled once per view (in a :class:`~gateway.types.ViewHolder`
listener) and then only read. Matching costs O(length of host + path) whatever the
number of routes:

* the host: a dict lookup for an exact host, then a walk of a trie of labels from the
  right for wildcard hosts (``*.example.com`` matches one or more labels in front, the
  longest suffix first);
* the path: a walk of that host's trie of path segments; a prefix matches on a segment
  boundary (``/api`` and ``/api/`` match ``/api`` and ``/api/x``, not ``/apix``);
* the candidates of one (host, prefix), longest prefix first, each in precedence order:
  a route with a method condition before one without, then more header conditions,
  then more query conditions, then services by name and routes in manifest order. The
  first whose conditions hold wins; if none at a prefix, the next shorter one is tried,
  then the wildcard hosts. Conditions are only evaluated for routes that have some.

A :class:`RouteMatch` is precomputed per route: the owning service (with the route's
timeout applied), the resolved weighted split, and what the request path must apply
(``gateway.rules``).
"""

from __future__ import annotations

import random
import zlib
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, replace

from federation.model import Route, RouteConditions, RoutingView, Service
from gateway.conditions import (
    Conditions,
    Dispatch,
    RequestView,
    describe_conditions,
    why_not,
)
from gateway.hygiene import BACKEND_HEADER, Headers


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """The result of matching: the route, its owning service and what to apply."""

    service: Service  # the owning service, with the route's timeout applied
    route: Route
    prefix: str = ""  # the route prefix without trailing "/" ("" for "/")
    backends: tuple[Service, ...] = ()  # a weighted split, resolved; empty: ``service``
    cumulative: tuple[int, ...] = ()  # running sum of the backends' weights
    plain: bool = True  # no rule and no split: nothing to apply but forwarding
    rewrites: bool = False  # request headers, path or host to rewrite

    def pick(self, headers: Headers, forwarded: bool = False) -> Service:
        """The service for this request: the owner, or one of a weighted split (the one
        the first gateway picked when ``forwarded``; sticky by header or cookie hash)."""
        backends = self.backends
        if not backends:
            return self.service
        if forwarded:
            for name, value in headers:
                if name == BACKEND_HEADER:
                    for s in backends:
                        if s.name.encode() == value:
                            return s
        total = self.cumulative[-1]
        key = _sticky_key(self.route, headers)
        point = zlib.crc32(key) % total if key is not None else int(random.random() * total)
        return backends[bisect_right(self.cumulative, point)]


def _sticky_key(route: Route, headers: Headers) -> bytes | None:
    sticky = route.sticky
    if sticky is None:
        return None
    if sticky.header:
        name = sticky.header.encode()
        for n, v in headers:
            if n == name:
                return v
        return None
    cookie = sticky.cookie.encode() + b"="
    for n, v in headers:
        if n == b"cookie":
            for part in v.split(b";"):
                part = part.strip()
                if part.startswith(cookie):
                    return part[len(cookie) :]
    return None


DISPATCH_MIN = 4  # runs at least this long become a Dispatch


def _compress(entries: list[_Entry]) -> tuple[_Fast, ...]:
    """``entries`` (in precedence order) with long single-header runs as one Dispatch."""
    out: list[_Fast] = []
    i = 0
    while i < len(entries):
        first = entries[i][0]
        key = first.dispatch_key if first is not None else None
        j = i + 1
        if first is not None and key is not None:
            while j < len(entries):
                cond = entries[j][0]
                if cond is None or cond.dispatch_key != key or cond.rank != first.rank:
                    break
                j += 1
        if key is not None and j - i >= DISPATCH_MIN:
            run = [(c, m) for c, m in entries[i:j] if c is not None]
            out.append((Dispatch(key, run), None))
        else:
            out.extend(entries[i:j])
        i = j
    return tuple(out)


# one candidate: (compiled conditions or None, match); and the form matching walks
_Entry = tuple[Conditions | None, RouteMatch]
_Fast = tuple[Conditions | None, RouteMatch] | tuple["Dispatch[RouteMatch]", None]


class _Node:
    """A path segment trie node: the routes whose prefix ends here, in precedence order."""

    __slots__ = ("children", "entries", "listed")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.listed: tuple[_Entry, ...] = ()  # every route here, in precedence order
        self.entries: tuple[_Fast, ...] = ()  # the same, as matching walks them


class _HostNode:
    """A label trie node for wildcard hosts, labels from the right."""

    __slots__ = ("children", "routes")

    def __init__(self) -> None:
        self.children: dict[str, _HostNode] = {}
        self.routes: _Node | None = None  # routes of "*.<the labels down to here>"


def _with_timeout(service: Service, timeout: float | None) -> Service:
    if timeout is None or timeout == service.timeouts.request:
        return service
    return replace(
        service,
        timeouts=replace(service.timeouts, request=timeout),
        retries=replace(
            service.retries, per_try_timeout=min(service.retries.per_try_timeout, timeout)
        ),
    )


def _compile(view: RoutingView, service: Service, route: Route) -> RouteMatch:
    if (
        not route.backends
        and route.timeout is None
        and route.request_headers is None
        and route.response_headers is None
        and route.rewrite_path_prefix is None
        and route.rewrite_host is None
        and route.redirect is None
    ):  # the common case: a route without rules
        return RouteMatch(service=service, route=route, prefix=route.path_prefix.rstrip("/"))
    owner = _with_timeout(service, route.timeout)
    backends: list[Service] = []
    cumulative: list[int] = []
    total = 0
    for b in route.backends:
        s = view.services.get(b.service)
        if s is None or b.weight <= 0:
            continue  # a service the view does not have (rejected): not split to
        total += b.weight
        backends.append(_with_timeout(s, route.timeout))
        cumulative.append(total)
    rewrites = (
        route.request_headers is not None
        or route.rewrite_path_prefix is not None
        or route.rewrite_host is not None
    )
    plain = not (
        backends or rewrites or route.response_headers is not None or route.redirect is not None
    )
    return RouteMatch(
        service=owner,
        route=route,
        prefix=route.path_prefix.rstrip("/"),
        backends=tuple(backends),
        cumulative=tuple(cumulative),
        plain=plain,
        rewrites=rewrites,
    )


class RouteTable:
    """Routes of one view, indexed for matching a request's host, path and conditions."""

    __slots__ = ("_exact", "_services", "_size", "_wild")

    def __init__(
        self,
        exact: dict[str, _Node],
        wild: _HostNode,
        size: int,
        services: Mapping[str, Service] | None = None,
    ) -> None:
        self._exact = exact
        self._wild = wild
        self._size = size
        self._services = services  # what the table was built from

    def serves(self, services: Mapping[str, Service]) -> bool:
        """Was this table built from exactly these service objects? (A view that changed
        only endpoints, gateways or health keeps its services: no rebuild.)"""
        mine = self._services
        if mine is None:
            return False
        if mine is services:
            return True
        return len(mine) == len(services) and all(
            services.get(name) is s for name, s in mine.items()
        )

    @classmethod
    def build(cls, view: RoutingView, previous: RouteTable | None = None) -> RouteTable:
        """The table of ``view``; ``previous`` itself when it was built from the same
        service objects (O(services) identity checks instead of a rebuild)."""
        if previous is not None and previous.serves(view.services):
            return previous
        pending: dict[tuple[bool, str], dict[tuple[str, ...], list[tuple[object, ...]]]] = {}
        order = 0
        compiled: dict[RouteConditions, Conditions] = {}
        for name in sorted(view.services):  # deterministic when two services claim a route
            service = view.services[name]
            for route in service.routes:
                host = route.host.lower().rstrip(".")
                wild = host.startswith("*.")
                cond = None
                if route.match is not None:  # identical conditions are compiled once
                    cond = compiled.get(route.match)
                    if cond is None:
                        cond = compiled[route.match] = Conditions(route.match)
                rank = cond.rank if cond is not None else (0, 0, 0)
                match = _compile(view, service, route)
                per_host = pending.setdefault((wild, host[2:] if wild else host), {})
                bare = route.path_prefix.rstrip("/")
                segs = tuple(bare.split("/")[1:]) if bare else ()
                per_host.setdefault(segs, []).append((rank, order, route.match, cond, match))
                order += 1
        exact: dict[str, _Node] = {}
        wild_root = _HostNode()
        size = 0
        for (is_wild, host), prefixes in pending.items():
            if is_wild:
                hnode = wild_root
                for label in reversed(host.split(".")):
                    child = hnode.children.get(label)
                    if child is None:
                        child = hnode.children[label] = _HostNode()
                    hnode = child
                if hnode.routes is None:
                    hnode.routes = _Node()
                root = hnode.routes
            else:
                root = exact[host] = _Node()  # each host comes once from ``pending``
            for segs, entries in prefixes.items():
                node = root
                for seg in segs:
                    next_node = node.children.get(seg)
                    if next_node is None:
                        next_node = node.children[seg] = _Node()
                    node = next_node
                if len(entries) == 1:  # the common case: one route per host and prefix
                    node.listed = node.entries = ((entries[0][3], entries[0][4]),)  # type: ignore[assignment]
                    size += 1
                    continue
                seen: set[RouteConditions | None] = set()
                kept: list[_Entry] = []
                for e in sorted(entries, key=lambda e: (e[0], e[1])):
                    if e[2] not in seen:  # the same conditions twice: the first name wins
                        seen.add(e[2])  # type: ignore[arg-type]
                        kept.append((e[3], e[4]))  # type: ignore[arg-type]
                node.listed = tuple(kept)
                node.entries = _compress(kept)
                size += len(kept)
        return cls(exact, wild_root, size, view.services)

    def _roots(self, host: str) -> list[_Node]:
        """The route tries that may serve ``host``: exact first, then wildcards by the
        longest suffix; the label in front of a wildcard must not be empty."""
        roots: list[_Node] = []
        node = self._exact.get(host)
        if node is not None:
            roots.append(node)
        if self._wild.children:
            labels = host.split(".")
            hnode = self._wild
            wilds: list[_Node] = []
            for i in range(len(labels) - 1, 0, -1):
                next_node = hnode.children.get(labels[i])
                if next_node is None:
                    break
                hnode = next_node
                if hnode.routes is not None and labels[i - 1]:
                    wilds.append(hnode.routes)
            roots.extend(reversed(wilds))
        return roots

    @staticmethod
    def _chain(root: _Node, path: str) -> list[_Node]:
        """The nodes with routes along ``path``, shortest prefix first (none for a path
        that is not absolute, such as ``OPTIONS *``)."""
        if path[:1] != "/":
            return []
        found = [root] if root.entries else []
        if root.children:
            node = root
            for seg in path.split("/")[1:]:
                child = node.children.get(seg)
                if child is None:
                    break
                node = child
                if node.entries:
                    found.append(node)
        return found

    def match(
        self, host: str, path: str, method: str = "GET", headers: Headers = (), query: bytes = b""
    ) -> RouteMatch | None:
        """``host`` lower case without port; exact host > wildcard; longest prefix; then
        the first route of that prefix whose conditions hold."""
        node = self._exact.get(host)
        if node is not None and not node.children and node.entries and path[:1] == "/":
            cond, found = node.entries[0]
            if cond is None:  # the common case: one host, one route for every path
                return found
        request: RequestView | None = None
        for root in self._roots(host):
            for node in reversed(self._chain(root, path)):
                for cond, match in node.entries:
                    if cond is None:
                        return match
                    if request is None:
                        request = RequestView(method, headers, query)
                    if match is None:
                        hit = cond.pick(request)  # type: ignore[union-attr]
                        if hit is not None:
                            return hit
                    elif request.failing(cond) is None:  # type: ignore[arg-type]
                        return match
        return None

    def explain(
        self, host: str, path: str, method: str = "GET", headers: Headers = (), query: bytes = b""
    ) -> tuple[RouteMatch | None, list[dict[str, object]]]:
        """Like :meth:`match`, with every route considered and why it did or did not match
        (for ``fedgate explain``)."""
        request = RequestView(method, headers, query)
        considered: list[dict[str, object]] = []
        for root in self._roots(host):
            for node in reversed(self._chain(root, path)):
                for cond, match in node.listed:
                    route = match.route
                    row: dict[str, object] = {
                        "service": match.service.name,
                        "host": route.host,
                        "pathPrefix": route.path_prefix,
                        "conditions": describe_conditions(route.match),
                    }
                    failing = request.failing(cond) if cond is not None else None
                    row["matched"] = failing is None
                    row["reason"] = (
                        "longest prefix, " + ("every condition holds" if cond else "no conditions")
                        if failing is None
                        else why_not(failing, request)
                    )
                    considered.append(row)
                    if failing is None:
                        return match, considered
        return None, considered

    def __len__(self) -> int:
        return self._size


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
