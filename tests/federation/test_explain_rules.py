"""``fedgate explain`` with routing rules: which route matched and why, against a real
admin API whose explain is the gateway's own (``explain_request`` over a routing view)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from federation.cli import main
from federation.commands.serve_explain import explain_request
from federation.model import (
    HeaderRules,
    Redirect,
    Route,
    RouteConditions,
    Sticky,
    ValueMatch,
    WeightedBackend,
)
from gateway.placement import Placement
from gateway.types import ViewHolder
from tests.federation.admin_server import AdminServer
from tests.gateway.harness import service, view_of

TOKEN = "explain-rules-token"

SHOP = replace(
    service("shop", "shop.test"),
    routes=(
        Route("shop.test", "/"),
        Route(
            "shop.test",
            "/api",
            match=RouteConditions(
                methods=frozenset({"GET"}), headers=(ValueMatch("x-canary", "exact", "1"),)
            ),
            backends=(WeightedBackend("shop", 90), WeightedBackend("shop-v2", 10)),
            sticky=Sticky(header="x-user"),
            request_headers=HeaderRules(add=(("x-from", "gw"),)),
            rewrite_path_prefix="/v2",
            timeout=5.0,
        ),
        Route("shop.test", "/api", match=RouteConditions(query=(ValueMatch("v", "present"),))),
        Route("shop.test", "/old", redirect=Redirect(scheme="https", status=301)),
    ),
)
VIEW = view_of([SHOP, service("shop-v2", "v2.shop.test")])


@pytest.fixture
def admin() -> Iterator[AdminServer]:
    def explain(
        host: str,
        path: str,
        method: str,
        origin: str | None,
        headers: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        return explain_request(
            VIEW, Placement("c1"), host=host, path=path, method=method,
            origin=origin or "c1", headers=headers or (),
        )  # fmt: skip

    with AdminServer(ViewHolder(VIEW), TOKEN, explain=explain) as server:
        yield server


def explain(admin: AdminServer, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["explain", "--admin", admin.url, "--token", TOKEN, *args]) == 0
    return capsys.readouterr().out


def test_explain_shows_the_rule_that_matched_and_why(
    admin: AdminServer, capsys: pytest.CaptureFixture[str]
) -> None:
    out = explain(
        admin, capsys, "--host", "shop.test", "--path", "/api/x?v=1", "--header", "X-Canary: 1"
    )
    assert "route      service shop (host shop.test, path prefix /api)" in out
    assert "split by weight: shop 90, shop-v2 10, sticky by header x-user" in out
    assert "request headers: add x-from: gw" in out
    assert "rewrite path prefix /api -> /v2" in out
    assert "timeout 5s" in out
    assert "match shop (shop.test/api; method in [GET], header x-canary = '1')" in out
    users = [f"u{i}" for i in range(40)]
    picked = {
        explain(admin, capsys, "--host", "shop.test", "--path", "/api", "--header", "x-canary:1",
                "--header", f"x-user:{u}").count("backend    shop-v2 (picked by the split)")
        for u in users
    }  # fmt: skip
    assert picked == {0, 1}  # sticky by x-user: some users get shop-v2, the others shop
    plain = explain(admin, capsys, "--host", "shop.test", "--path", "/api/x?v=1")
    assert "no    shop (shop.test/api; method in [GET], header x-canary = '1'): needs x-canary" in (
        plain
    )
    assert "match shop (shop.test/api; query v present): longest prefix, every condition" in plain
    post = explain(admin, capsys, "--host", "shop.test", "--path", "/api", "--method", "POST")
    assert "method POST not accepted" in post and "needs v present" in post
    assert "match shop (shop.test/; any request)" in post
    old = explain(admin, capsys, "--host", "shop.test", "--path", "/old/a", "--json")
    body = json.loads(old)
    assert body["route"]["rules"] == ["redirect 301: scheme https"]
    assert body["decision"] == "answered by the gateway with a redirect (no backend)"


def test_explain_refuses_a_malformed_header(admin: AdminServer) -> None:
    r = httpx.get(
        f"{admin.url}/v1/routes/explain",
        params={"host": "shop.test", "header": "no colon"},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert r.status_code == 400 and "expected NAME:VALUE" in r.json()["error"]
