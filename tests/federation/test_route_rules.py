"""Routing rules in the manifest: every rule kind parsed into the model, every mistake a
located one-line error, and the model through the etcd codec unchanged."""

from __future__ import annotations

import json

import pytest

from federation import codec
from federation.manifest import ManifestError, parse_manifest
from federation.model import (
    HeaderRules,
    Redirect,
    Route,
    RouteConditions,
    Service,
    Sticky,
    ValueMatch,
    WeightedBackend,
)

HEAD = """\
apiVersion: fedgate/v1
kind: Federation
metadata: {name: tiny}
clusters:
  - name: c1
    region: r1
    cloud: aws
    gateway: {eastWest: "https://gw.example.net:15443"}
    kubernetes: {}
services:
  - name: shop-v2
    routes: [{host: v2.shop.test}]
    port: 8080
    clusters: [c1]
  - name: shop-v1
    port: 8080
    clusters: [c1]
    routes:
"""  # the first route of shop-v1 is on line 19


def manifest(*routes: str) -> str:
    return HEAD + "".join(f"      - {r}\n" for r in routes)


GOOD = manifest(
    "{host: shop.test, pathPrefix: /api, match: {methods: [GET, POST], headers: "
    "[{name: X-Canary, exact: '1'}, {name: X-User, prefix: beta-}, {name: X-Debug, "
    "present: true}, {name: X-Old, present: false}], query: [{name: v, exact: '2'}]}, "
    "backends: [{service: shop-v1, weight: 90}, {service: shop-v2, weight: 10}], "
    "sticky: {cookie: session}, requestHeaders: {add: {X-From: gw}, set: {X-Env: prod}, "
    "remove: [X-Internal]}, responseHeaders: {remove: [Server]}, "
    "rewrite: {pathPrefix: /v2, host: api.internal}, timeout: 5s}",
    "{host: shop.test, pathPrefix: /api}",
    "{host: shop.test, pathPrefix: /old, redirect: {scheme: https, pathPrefix: /new, status: 301}}",
)


def test_every_rule_kind_reaches_the_model_and_survives_the_codec() -> None:
    fed = parse_manifest(GOOD, filename="m.yaml")
    shop = next(s for s in fed.services if s.name == "shop-v1")
    api, plain, old = shop.routes
    assert api.match == RouteConditions(
        methods=frozenset({"GET", "POST"}),
        headers=(
            ValueMatch("x-canary", "exact", "1"),
            ValueMatch("x-user", "prefix", "beta-"),
            ValueMatch("x-debug", "present"),
            ValueMatch("x-old", "absent"),
        ),
        query=(ValueMatch("v", "exact", "2"),),
    )
    assert api.backends == (WeightedBackend("shop-v1", 90), WeightedBackend("shop-v2", 10))
    assert api.sticky == Sticky(cookie="session")
    assert api.request_headers == HeaderRules(
        add=(("x-from", "gw"),), set=(("x-env", "prod"),), remove=("x-internal",)
    )
    assert api.response_headers == HeaderRules(remove=("server",))
    assert (api.rewrite_path_prefix, api.rewrite_host, api.timeout) == ("/v2", "api.internal", 5.0)
    assert plain == Route(host="shop.test", path_prefix="/api")
    assert old.redirect == Redirect(scheme="https", path_prefix="/new", status=301)
    assert codec.decode(Service, codec.encode(shop)) == shop


def test_a_route_without_rules_decodes_from_an_old_etcd_value() -> None:
    old = b'{"host":"a.test","path_prefix":"/"}'
    assert codec.decode(Route, old) == Route(host="a.test")


CASES = [
    # (route, expected path, message fragment, line)
    (
        "{host: a.test, match: {methods: [get]}}",
        "services[1].routes[0].match.methods[0]",
        "did you mean 'GET'?",
        19,
    ),
    (
        "{host: a.test, match: {methods: [GET, GET]}}",
        "services[1].routes[0].match.methods[1]",
        "method 'GET' is listed twice",
        19,
    ),
    (
        "{host: a.test, match: {headers: [{name: X-A, exact: '1', prefix: '2'}]}}",
        "services[1].routes[0].match.headers[0]",
        "give exactly one of exact, prefix or present, got exact and prefix",
        19,
    ),
    (
        "{host: a.test, match: {query: [{name: v}]}}",
        "services[1].routes[0].match.query[0]",
        "give exactly one of exact, prefix or present, got none",
        19,
    ),
    (
        "{host: a.test, match: {headers: [{name: 'bad name', present: true}]}}",
        "services[1].routes[0].match.headers[0].name",
        "not a valid header name",
        19,
    ),
    (
        "{host: a.test, match: {header: []}}",
        "services[1].routes[0].match.header",
        "did you mean 'headers'?",
        19,
    ),
    (
        "{host: a.test, backends: [{service: shop-v3}]}",
        "services[1].routes[0].backends[0].service",
        "unknown service 'shop-v3' (did you mean 'shop-v2'?)",
        19,
    ),
    (
        "{host: a.test, backends: [{service: shop-v2}, {service: shop-v2}]}",
        "services[1].routes[0].backends[1].service",
        "service 'shop-v2' is listed twice",
        19,
    ),
    (
        "{host: a.test, backends: [{service: shop-v2, weight: 0}]}",
        "services[1].routes[0].backends",
        "every weight is 0",
        19,
    ),
    (
        "{host: a.test, backends: [{service: shop-v2, weight: 10001}]}",
        "services[1].routes[0].backends[0].weight",
        "must be <= 10000, got 10001",
        19,
    ),
    (
        "{host: a.test, backends: [{service: shop-v2}], sticky: {cookie: s}}",
        "services[1].routes[0].sticky",
        "sticky needs a split: backends with two or more services",
        19,
    ),
    (
        "{host: a.test, backends: [{service: shop-v2}, {service: shop-v1}], "
        "sticky: {cookie: s, header: X-U}}",
        "services[1].routes[0].sticky",
        "give exactly one of header or cookie, got header and cookie",
        19,
    ),
    (
        "{host: a.test, requestHeaders: {set: {Host: b.test}}}",
        "services[1].routes[0].requestHeaders.set.Host",
        "header 'Host' is set by the gateway itself (use rewrite.host)",
        19,
    ),
    (
        "{host: a.test, responseHeaders: {add: {X-Fedgate-Hops: '1'}}}",
        "services[1].routes[0].responseHeaders.add.X-Fedgate-Hops",
        "is set by the gateway itself",
        19,
    ),
    (
        "{host: a.test, requestHeaders: {set: {X-A: '1'}, remove: [x-a]}}",
        "services[1].routes[0].requestHeaders.remove[0]",
        "header 'x-a' is already in set",
        19,
    ),
    (
        '{host: a.test, requestHeaders: {add: {X-A: "a\\r\\nX-Evil: 1"}}}',
        "services[1].routes[0].requestHeaders.add.X-A",
        "a header value holds visible ASCII only",
        19,
    ),
    (
        "{host: a.test, rewrite: {}}",
        "services[1].routes[0].rewrite",
        "give pathPrefix, host or both",
        19,
    ),
    (
        "{host: a.test, rewrite: {pathPrefix: v2}}",
        "services[1].routes[0].rewrite.pathPrefix",
        "must start with '/'",
        19,
    ),
    (
        "{host: a.test, rewrite: {host: '*.b.test'}}",
        "services[1].routes[0].rewrite.host",
        "a wildcard is only allowed in a route's host",
        19,
    ),
    (
        "{host: a.test, redirect: {status: 200, scheme: https}}",
        "services[1].routes[0].redirect.status",
        "301, 302, 303, 307 or 308",
        19,
    ),
    (
        "{host: a.test, redirect: {scheme: ftp}}",
        "services[1].routes[0].redirect.scheme",
        "'http' or 'https'",
        19,
    ),
    (
        "{host: a.test, redirect: {status: 301}}",
        "services[1].routes[0].redirect",
        "give at least one of scheme, host, port, path or pathPrefix",
        19,
    ),
    (
        "{host: a.test, redirect: {path: /a, pathPrefix: /b}}",
        "services[1].routes[0].redirect.pathPrefix",
        "give path or pathPrefix, not both",
        19,
    ),
    (
        "{host: a.test, redirect: {scheme: https}, backends: [{service: shop-v2}]}",
        "services[1].routes[0].backends",
        "a redirect route answers by itself: remove backends (or the redirect)",
        19,
    ),
    (
        "{host: a.test, redirect: {port: 0}}",
        "services[1].routes[0].redirect.port",
        "a port is 1..65535",
        19,
    ),
    (
        "{host: a.test, timeout: 5}",
        "services[1].routes[0].timeout",
        "expected a duration with a unit",
        19,
    ),
]


@pytest.mark.parametrize(("route", "path", "message", "line"), CASES, ids=lambda c: str(c)[:40])
def test_rule_mistakes_are_located_errors(route: str, path: str, message: str, line: int) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(manifest(route), filename="m.yaml")
    found = [i for i in info.value.issues if i.path == path and message in i.message]
    assert found, f"no {path}: {message!r} in:\n" + "\n".join(info.value.lines)
    assert found[0].line == line
    assert all("\n" not in text for text in info.value.lines)


def test_same_host_and_prefix_needs_other_conditions() -> None:
    text = manifest(
        "{host: a.test, match: {headers: [{name: X-A, present: true}, {name: X-B, exact: '1'}]}}",
        "{host: a.test, pathPrefix: /, match: {headers: [{name: x-b, exact: '1'}, "
        "{name: x-a, present: true}]}}",
        "{host: a.test, match: {headers: [{name: x-b, exact: '2'}]}}",
    )
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, filename="m.yaml")
    assert [(i.path, i.line) for i in info.value.issues] == [("services[1].routes[1]", 20)]
    assert "with the same match conditions" in info.value.issues[0].message


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"request_headers": {"add": [["x-a", "1\r\nx-evil: 1"]]}}, "invalid value of x-a"),
        ({"response_headers": {"remove": ["Bad Name"]}}, "invalid header name 'Bad Name'"),
        ({"rewrite_host": "a.test\r\nx: y"}, "invalid rewrite host"),
        ({"rewrite_path_prefix": "v2"}, "invalid rewrite path prefix 'v2'"),
        ({"redirect": {"status": 200}}, "not a redirect status: 200"),
        ({"redirect": {"path": "/a b"}}, "invalid path '/a b'"),
        ({"backends": [{"service": "x", "weight": -1}]}, "a weight is >= 0, got -1"),
        ({"sticky": {"header": "", "cookie": ""}}, "sticky: one of header or cookie"),
        ({"match": {"headers": [{"name": "x", "kind": "regex"}]}}, "expected one of"),
        ({"timeout": -1.0}, "invalid timeout -1.0"),
    ],
)
def test_a_hostile_route_from_etcd_is_a_one_line_decode_error(
    route: dict[str, object], message: str
) -> None:
    plain = json.loads(codec.encode(Route(host="a.test")))
    with pytest.raises(codec.CodecError) as info:
        codec.decode(Route, json.dumps({**plain, **route}))
    assert message in str(info.value) and "\n" not in str(info.value)
