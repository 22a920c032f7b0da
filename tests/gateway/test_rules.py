"""A matched route's rules as pure functions (gateway.rules)."""

from __future__ import annotations

from typing import Any

from federation.model import HeaderRules, Redirect, Route, Service
from gateway.routing import RouteMatch, RouteTable
from gateway.rules import (
    apply_header_rules,
    apply_request_rules,
    describe_route,
    redirect_for,
    replace_prefix,
    response_rules_send,
)
from gateway.types import Message
from tests.gateway.harness import view_of


def matched(route: Route, path: str = "/") -> RouteMatch:
    svc = Service(name="s", routes=(route,), port=80, clusters=("c1",))
    m = RouteTable.build(view_of([svc])).match(route.host, path)
    assert m is not None
    return m


def scope(raw_path: bytes, query: bytes = b"") -> dict[str, Any]:
    return {"raw_path": raw_path, "query_string": query}


def test_redirect_keeps_what_it_does_not_change() -> None:
    same_host = matched(Route("a.test", "/old", redirect=Redirect(path_prefix="/new")), "/old")
    assert redirect_for(same_host, "http", b"a.test:8080", scope(b"/old/x", b"q=1"), "/old/x") == (
        302,
        b"http://a.test:8080/new/x?q=1",
    )
    to_https = matched(Route("a.test", "/", redirect=Redirect(scheme="https", status=308)))
    assert redirect_for(to_https, "http", b"a.test:8080", scope(b"/p"), "/p") == (
        308,
        b"https://a.test/p",  # a new scheme: its default port
    )
    v6 = matched(Route("a.test", "/", redirect=Redirect(port=8443, path="/login")))
    assert redirect_for(v6, "https", b"[::1]:80", scope(b"/x", b"a=b"), "/x") == (
        302,
        b"https://[::1]:8443/login?a=b",
    )
    default_port = matched(Route("a.test", "/", redirect=Redirect(scheme="https", port=443)))
    assert redirect_for(default_port, "http", b"a.test", scope(b"/"), "/") == (
        302,
        b"https://a.test/",
    )
    assert redirect_for(matched(Route("a.test")), "http", b"a.test", scope(b"/"), "/") is None


def test_prefix_replacement_on_raw_and_encoded_paths() -> None:
    m = matched(Route("a.test", "/api/"), "/api/x")
    assert replace_prefix(m, b"/api/x%2Fy", "/api/x/y", "/v2") == b"/v2/x%2Fy"  # raw kept
    assert replace_prefix(m, b"/api", "/api", "/") == b"/"
    assert replace_prefix(m, b"/%61pi/caf%C3%A9", "/api/café", "/") == b"/caf%C3%A9"
    root = matched(Route("a.test", "/"), "/x")
    assert replace_prefix(root, b"/x", "/x", "/base") == b"/base/x"


def test_request_rules_rewrite_target_host_and_headers() -> None:
    route = Route(
        "a.test",
        "/api",
        rewrite_path_prefix="/v1",
        rewrite_host="in.test",
        request_headers=HeaderRules(add=(("x-a", "1"),), set=(("x-b", "2"),), remove=("x-c",)),
    )
    m = matched(route, "/api/u")
    hdrs = [(b"x-b", b"old"), (b"x-c", b"gone"), (b"x-a", b"0"), (b"accept", b"*/*")]
    target, host, out = apply_request_rules(m, b"/api/u?z=%20", "/api/u", b"a.test", hdrs)
    assert (target, host) == (b"/v1/u?z=%20", b"in.test")
    assert out == [(b"x-a", b"0"), (b"accept", b"*/*"), (b"x-b", b"2"), (b"x-a", b"1")]
    assert hdrs[0] == (b"x-b", b"old")  # the input is not changed
    assert apply_header_rules(None, hdrs) is hdrs
    assert describe_route(m) == [
        "request headers: add x-a: 1, set x-b: 2, remove x-c",
        "rewrite path prefix /api -> /v1",
        "rewrite host -> in.test",
    ]


async def test_response_rules_touch_only_the_response_head() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    wrapped = response_rules_send(HeaderRules(remove=("server",)), send)
    await wrapped({"type": "http.response.start", "status": 200, "headers": [(b"server", b"x")]})
    await wrapped({"type": "http.response.body", "body": b"server"})
    assert sent[0]["headers"] == [] and sent[1]["body"] == b"server"
