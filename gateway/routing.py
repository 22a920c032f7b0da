"""Host, path and request conditions to a route, over one routing view.

A :class:`RouteTable` is made per view (in a :class:`~gateway.types.ViewHolder`
listener, from the previous one) and then only read. Matching costs O(length of host
+ path) whatever the number of routes:

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

A :class:`RouteMatch` is precomputed per route (``gateway.route_index``): the owning
service (with the route's timeout applied), the resolved weighted split, and what the
request path must apply (``gateway.rules``). A new view rebuilds only the (host,
prefix) groups that a changed service touches.
"""

from __future__ import annotations

from federation.model import RoutingView
from gateway.conditions import RequestView, describe_conditions, why_not
from gateway.hygiene import Headers
from gateway.route_index import EMPTY, Index, Node, RouteMatch, build_index

__all__ = ["RouteMatch", "RouteTable", "split_host"]


class RouteTable:
    """Routes of one view, indexed for matching a request's host, path and conditions."""

    __slots__ = ("_exact", "_index", "_labels", "_wild")

    def __init__(self, index: Index) -> None:
        self._index = index
        self._exact = index.exact
        self._wild = index.wild
        self._labels = index.labels

    @classmethod
    def build(cls, view: RoutingView, previous: RouteTable | None = None) -> RouteTable:
        """The table of ``view``. With ``previous`` (the table of the view before), only
        the (host, prefix) groups a changed service touches are rebuilt, and
        ``previous`` itself is returned when no service changed (an endpoint, gateway or
        health write)."""
        index = build_index(view, previous._index if previous is not None else EMPTY)
        if previous is not None and index is previous._index:
            return previous
        return cls(index)

    def _roots(self, host: str) -> list[Node]:
        """The route tries that may serve ``host``: exact first, then wildcards by the
        longest suffix; the label in front of a wildcard must not be empty."""
        roots: list[Node] = []
        node = self._exact.get(host)
        if node is not None:
            roots.append(node)
        if self._labels.children:
            labels = host.split(".")
            hnode = self._labels
            wilds: list[Node] = []
            for i in range(len(labels) - 1, 0, -1):
                next_node = hnode.children.get(labels[i])
                if next_node is None:
                    break
                hnode = next_node
                if hnode.suffix is not None and labels[i - 1]:
                    wilds.append(self._wild[hnode.suffix])
            roots.extend(reversed(wilds))
        return roots

    @staticmethod
    def _chain(root: Node, path: str) -> list[Node]:
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
        return sum(self._index.per_host.values())


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
