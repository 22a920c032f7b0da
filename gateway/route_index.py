"""The compiled route index that ``gateway.routing`` walks, built from a view and then
updated per changed service.

Per route, once: a :class:`RouteMatch` (the owning service with the route's timeout
folded in, the resolved weighted split, what the request path must apply) and its
compiled conditions. Per host: a trie of path segments whose nodes hold that prefix's
routes in precedence order. Wildcard hosts also get a trie of labels, from the right.

:func:`build_index` starts from the previous index: only the hosts that a changed
service's routes touch (before or after the change), or that split traffic to a changed
service, are rebuilt; the others are shared with the previous index. A first build is
the same walk from an empty index. Indexes are never changed once built: requests in
flight keep the table they started with.
"""

from __future__ import annotations

import random
import zlib
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from federation.model import Route, RouteConditions, RoutingView, Service
from gateway.conditions import Conditions, Dispatch
from gateway.hygiene import BACKEND_HEADER, Headers

DISPATCH_MIN = 4  # runs of single-header routes at least this long become a Dispatch


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


def compile_match(services: Mapping[str, Service], service: Service, route: Route) -> RouteMatch:
    """The :class:`RouteMatch` of one route of ``service`` (``services``: the view's, to
    resolve a weighted split; a backend the view does not have is left out)."""
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
        s = services.get(b.service)
        if s is None or b.weight <= 0:
            continue
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


# one candidate: (compiled conditions or None, match); and the form matching walks
Entry = tuple[Conditions | None, RouteMatch]
Fast = tuple[Conditions | None, RouteMatch] | tuple["Dispatch[RouteMatch]", None]


class Node:
    """A path segment trie node: the routes whose prefix ends here, in precedence order."""

    __slots__ = ("children", "entries", "listed")

    def __init__(self) -> None:
        self.children: dict[str, Node] = {}
        self.listed: tuple[Entry, ...] = ()  # every route here, in precedence order
        self.entries: tuple[Fast, ...] = ()  # the same, as matching walks them


class HostNode:
    """A label trie node for wildcard hosts, labels from the right."""

    __slots__ = ("children", "suffix")

    def __init__(self) -> None:
        self.children: dict[str, HostNode] = {}
        self.suffix: str | None = None  # "example.com" when "*.example.com" has routes


def _compress(entries: list[Entry]) -> tuple[Fast, ...]:
    """``entries`` (in precedence order) with long single-header runs as one Dispatch."""
    out: list[Fast] = []
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


HostKey = tuple[bool, str]  # (wildcard, host without the "*.")
PrefixKey = tuple[HostKey, tuple[str, ...]]  # a host and a path prefix's segments


class _Raw(NamedTuple):
    """One route as its host keeps it, to rebuild that host's trie."""

    segs: tuple[str, ...]  # the path prefix's segments
    order: tuple[tuple[int, int, int], str, int]  # (condition rank, service, route index)
    source: RouteConditions | None
    cond: Conditions | None
    match: RouteMatch


def _host_key(route: Route) -> HostKey:
    host = route.host.lower().rstrip(".")
    return (True, host[2:]) if host.startswith("*.") else (False, host)


def _raw(
    services: Mapping[str, Service],
    service: Service,
    index: int,
    route: Route,
    compiled: dict[RouteConditions, Conditions],
) -> _Raw:
    cond = None
    if route.match is not None:  # identical conditions are compiled once per build
        cond = compiled.get(route.match)
        if cond is None:
            cond = compiled[route.match] = Conditions(route.match)
    bare = route.path_prefix.rstrip("/")
    return _Raw(
        segs=tuple(bare.split("/")[1:]) if bare else (),
        order=(cond.rank if cond is not None else (0, 0, 0), service.name, index),
        source=route.match,
        cond=cond,
        match=compile_match(services, service, route),
    )


def _fill(node: Node, group: Sequence[_Raw]) -> int:
    """Set ``node``'s routes from the routes of its prefix; how many it keeps (the same
    conditions twice at one prefix: the first in order wins)."""
    if len(group) == 1:  # the common case: one route per host and prefix
        node.listed = ((group[0].cond, group[0].match),)
        node.entries = node.listed
        return 1
    seen: set[RouteConditions | None] = set()
    kept: list[Entry] = []
    for r in sorted(group, key=lambda r: r.order):
        if r.source not in seen:
            seen.add(r.source)
            kept.append((r.cond, r.match))
    node.listed = tuple(kept)
    node.entries = _compress(kept)
    return len(kept)


def _clone(node: Node) -> Node:
    copy = Node()
    copy.children = dict(node.children)
    copy.listed, copy.entries = node.listed, node.entries
    return copy


def _patch(
    old: Node | None,
    host: HostKey,
    prefixes: Iterable[tuple[str, ...]],
    groups: Mapping[PrefixKey, Sequence[_Raw]],
) -> Node:
    """A copy of one host's trie ``old`` with the routes of ``prefixes`` set from
    ``groups``: only the nodes on the paths to those prefixes are new, every other
    subtree is shared with ``old`` (which is not changed)."""
    root = _clone(old) if old is not None else Node()
    fresh = {id(root)}
    for segs in prefixes:
        node = root
        for seg in segs:
            child = node.children.get(seg)
            if child is None:
                child = Node()
            elif id(child) not in fresh:
                child = _clone(child)
            else:
                node = child
                continue
            fresh.add(id(child))
            node.children[seg] = child
            node = child
        group = groups.get((host, segs), ())
        if group:
            _fill(node, group)
        else:
            node.listed = node.entries = ()
    return root


def _label_trie(suffixes: Iterable[str]) -> HostNode:
    root = HostNode()
    for suffix in suffixes:
        node = root
        for label in reversed(suffix.split(".")):
            child = node.children.get(label)
            if child is None:
                child = node.children[label] = HostNode()
            node = child
        node.suffix = suffix
    return root


@dataclass(frozen=True, slots=True)
class Index:
    """Everything matching walks, and what an update needs to touch only what changed."""

    services: Mapping[str, Service]  # what the index was built from
    exact: Mapping[str, Node]  # exact host -> its trie
    wild: Mapping[str, Node]  # wildcard suffix ("example.com") -> its trie
    labels: HostNode  # the wildcard suffixes, labels from the right
    groups: Mapping[PrefixKey, tuple[_Raw, ...]]  # the routes of one host and prefix
    counts: Mapping[PrefixKey, int]  # how many of them match (duplicates left out)
    per_host: Mapping[HostKey, int]  # routes per host
    touches: Mapping[str, frozenset[PrefixKey]]  # service -> what its change rebuilds


EMPTY = Index({}, {}, {}, HostNode(), {}, {}, {}, {})


def build_index(view: RoutingView, previous: Index = EMPTY) -> Index:
    """The index of ``view``, sharing with ``previous`` every host and prefix that no
    changed service touches (``previous`` itself when no service changed)."""
    new, old = view.services, previous.services
    if new is old:
        return previous
    changed = {n for n, s in new.items() if old.get(n) is not s}
    changed.update(n for n in old if n not in new)
    if not changed:
        return previous
    compiled: dict[RouteConditions, Conditions] = {}
    touched: set[PrefixKey] = set()
    added: dict[PrefixKey, list[_Raw]] = {}
    touches = dict(previous.touches)
    for name in changed:
        touched |= previous.touches.get(name, frozenset())
        service = new.get(name)
        if service is None:
            continue  # its keys stay in ``touches``: a split to it resolves again if it returns
        mine: set[PrefixKey] = set()
        for i, route in enumerate(service.routes):
            raw = _raw(new, service, i, route, compiled)
            key = (_host_key(route), raw.segs)
            mine.add(key)
            added.setdefault(key, []).append(raw)
            for b in route.backends:  # a change of the backend recompiles this split
                touches[b.service] = touches.get(b.service, frozenset()) | {key}
        touched |= mine
        touches[name] = touches.get(name, frozenset()) | mine
    groups, counts = dict(previous.groups), dict(previous.counts)
    by_host: dict[HostKey, list[tuple[str, ...]]] = {}
    for key in touched:
        keep: list[_Raw] = []
        for r in previous.groups.get(key, ()):
            service_name = r.order[1]
            if service_name in changed:
                continue
            route = r.match.route
            if route.backends and any(b.service in changed for b in route.backends):
                r = _raw(new, new[service_name], r.order[2], route, compiled)
            keep.append(r)
        keep += added.get(key, ())
        if keep:
            groups[key] = tuple(keep)
        else:
            groups.pop(key, None)
        by_host.setdefault(key[0], []).append(key[1])
    exact, wild = dict(previous.exact), dict(previous.wild)
    per_host = dict(previous.per_host)
    for host, prefixes in by_host.items():
        total = per_host.get(host, 0)
        for segs in prefixes:
            key = (host, segs)
            n = len({r.source for r in groups.get(key, ())})  # _fill keeps one per source
            total += n - counts.pop(key, 0)
            if n:
                counts[key] = n
        table = wild if host[0] else exact
        if total:
            per_host[host] = total
            table[host[1]] = _patch(table.get(host[1]), host, prefixes, groups)
        else:  # the host has no route left
            per_host.pop(host, None)
            table.pop(host[1], None)
    labels = previous.labels
    if wild.keys() != previous.wild.keys():
        labels = _label_trie(wild)
    return Index(new, exact, wild, labels, groups, counts, per_host, touches)
