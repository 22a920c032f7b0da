"""A matched route's rules over the request and response head: pure functions.

The request path calls them at one place per step (``gateway.app``):

* :func:`redirect_for` right after the route matched: answer with a redirect instead;
* :meth:`RouteMatch.pick <gateway.routing.RouteMatch.pick>`: the service of a weighted
  split (the per-route timeout is already folded into the service by the route table);
* :func:`apply_request_rules` on the head sent to a local endpoint: request headers
  add/set/remove, path prefix rewrite, host rewrite. A request forwarded to another
  cluster's gateway goes there unchanged and that gateway applies the same rules;
* :func:`apply_header_rules` (or :func:`response_rules_send`) on the response head, at
  the gateway the client talks to.

Header names are lower case bytes, as the ASGI server and the upstream client give them.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import quote

from federation.model import HeaderRules
from gateway.routing import RouteMatch
from gateway.types import Message, Scope, Send

HeaderList = list[tuple[bytes, bytes]]
_SAFE_PATH = "/:@!$&'()*+,;=-._~"  # characters kept as they are when re-quoting a path
_DEFAULT_PORT = {"http": 80, "https": 443}


@lru_cache(maxsize=4096)
def _compiled(
    rules: HeaderRules,
) -> tuple[frozenset[bytes], tuple[tuple[bytes, bytes], ...]]:
    """(names to drop, headers to append), as bytes, once per rule set."""
    drop = frozenset(n.encode() for n in rules.remove) | {n.encode() for n, _ in rules.set}
    append = tuple((n.encode(), v.encode()) for n, v in (*rules.set, *rules.add))
    return drop, append


def apply_header_rules(rules: HeaderRules | None, headers: HeaderList) -> HeaderList:
    """``remove`` and ``set`` drop every value of their names, then ``set`` and ``add``
    append theirs."""
    if rules is None:
        return headers
    drop, append = _compiled(rules)
    out = [(n, v) for n, v in headers if n not in drop] if drop else list(headers)
    out.extend(append)
    return out


def replace_prefix(match: RouteMatch, raw_path: bytes, path: str, new: str) -> bytes:
    """``raw_path`` with the matched route prefix replaced by ``new`` ("/" strips it).
    ``path`` is the decoded path the route matched (used when the prefix is
    percent-encoded in the raw path)."""
    prefix = match.prefix.encode()
    if raw_path.startswith(prefix) and (
        len(raw_path) == len(prefix) or raw_path[len(prefix)] == 0x2F
    ):
        rest = raw_path[len(prefix) :]
    else:
        rest = quote(path[len(match.prefix) :], safe=_SAFE_PATH).encode()
    return new.rstrip("/").encode() + rest or b"/"


def apply_request_rules(
    match: RouteMatch, target: bytes, path: str, host: bytes, headers: HeaderList
) -> tuple[bytes, bytes, HeaderList]:
    """The request target (path and query), Host and headers to send upstream.

    ``target`` is the raw request target, ``path`` the decoded path the route matched."""
    route = match.route
    if route.rewrite_path_prefix is not None:
        raw_path, sep, query = target.partition(b"?")
        target = replace_prefix(match, raw_path, path, route.rewrite_path_prefix) + sep + query
    if route.rewrite_host is not None:
        host = route.rewrite_host.encode()
    return target, host, apply_header_rules(route.request_headers, headers)


def redirect_for(
    match: RouteMatch, scheme: str, host: bytes, scope: Scope, path: str
) -> tuple[int, bytes] | None:
    """(status, Location) when the route redirects; ``host`` is the request's Host
    header, ``scope`` gives the raw path and query, ``path`` is the decoded path."""
    r = match.route.redirect
    if r is None:
        return None
    query: bytes = scope.get("query_string", b"")
    target: bytes = scope["raw_path"] + (b"?" + query if query else b"")
    new_scheme = r.scheme or scheme
    if r.host is None and r.port is None and r.scheme is None:
        authority = host  # keep the Host header as the client sent it
    else:
        name, port = _host_and_port(host)
        if r.host is not None:
            name = r.host.encode()
        if r.port is not None:
            port = r.port
        elif r.scheme is not None or r.host is not None:
            port = None  # the new scheme's or host's default port
        if port is None or port == _DEFAULT_PORT.get(new_scheme):
            authority = name
        else:
            authority = name + b":%d" % port
    raw_path, sep, query = target.partition(b"?")
    if r.path is not None:
        raw_path = r.path.encode()
    elif r.path_prefix is not None:
        raw_path = replace_prefix(match, raw_path, path, r.path_prefix)
    return r.status, new_scheme.encode() + b"://" + authority + raw_path + sep + query


def _host_and_port(host: bytes) -> tuple[bytes, int | None]:
    if host.startswith(b"["):
        end = host.find(b"]")
        name, rest = host[: end + 1], host[end + 1 :]
    else:
        name, _, port = host.partition(b":")
        rest = b":" + port if port else b""
    return name, int(rest[1:]) if rest[1:].isdigit() else None


def response_rules_send(rules: HeaderRules, send: Send) -> Send:
    """``send`` with the route's response header rules applied to the response head."""

    async def send_with_rules(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": apply_header_rules(rules, list(message["headers"]))}
        await send(message)

    return send_with_rules


def _headers_text(rules: HeaderRules) -> str:
    parts = [f"add {n}: {v}" for n, v in rules.add] + [f"set {n}: {v}" for n, v in rules.set]
    parts += [f"remove {n}" for n in rules.remove]
    return ", ".join(parts)


def describe_route(match: RouteMatch) -> list[str]:
    """The rules of a matched route, one line each (for ``fedgate explain``)."""
    route = match.route
    out: list[str] = []
    if route.redirect is not None:
        r = route.redirect
        given = (
            ("scheme", r.scheme),
            ("host", r.host),
            ("port", r.port),
            ("path", r.path),
            ("path prefix", r.path_prefix),
        )
        parts = [f"{k} {v}" for k, v in given if v]
        out.append(f"redirect {r.status}: " + ", ".join(parts))
    if route.backends:
        split = ", ".join(f"{b.service} {b.weight}" for b in route.backends)
        live = {s.name for s in match.backends}
        gone = [b.service for b in route.backends if b.service not in live and b.weight > 0]
        sticky = route.sticky
        how = ""
        if sticky is not None:
            how = f", sticky by header {sticky.header}" if sticky.header else ""
            how = how or f", sticky by cookie {sticky.cookie}"
        out.append(f"split by weight: {split}{how}")
        if gone:
            out.append(f"left out of the split (not in the view): {', '.join(gone)}")
    if route.request_headers is not None:
        out.append("request headers: " + _headers_text(route.request_headers))
    if route.response_headers is not None:
        out.append("response headers: " + _headers_text(route.response_headers))
    if route.rewrite_path_prefix is not None:
        out.append(f"rewrite path prefix {route.path_prefix} -> {route.rewrite_path_prefix}")
    if route.rewrite_host is not None:
        out.append(f"rewrite host -> {route.rewrite_host}")
    if route.timeout is not None:
        out.append(f"timeout {route.timeout:g}s (instead of the service's)")
    return out
