"""The admin API in-process (httpx over ASGI): auth, probes, metrics, explain, page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from federation.api import create_admin_app
from federation.globalhealth import global_health
from federation.model import HealthState
from gateway.telemetry import Telemetry
from gateway.types import ViewHolder
from tests.federation.views import NOW, sample_view

TOKEN = "s3cret-token"
PROTECTED = [
    "/v1/health/global",
    "/v1/status",
    "/v1/trends",
    "/v1/routes/explain?host=shop.acme.com&path=/checkout",
    "/openapi.json",
    "/",
    "/metrics",
]
PUBLIC = ["/healthz", "/readyz"]


class Harness:
    def __init__(self) -> None:
        self.holder = ViewHolder(sample_view())
        self.ready = True
        self.explained: list[tuple[str, str, str, str | None]] = []
        self.telemetry = Telemetry(gateway_id="gw-a", cluster="aws-eu-west-1", access_log=False)
        self.app = create_admin_app(
            holder=self.holder,
            token=TOKEN,
            gateway_id="gw-a",
            cluster="aws-eu-west-1",
            telemetry=self.telemetry,
            explain=self.explain,
            ready=lambda: self.ready,
            status=lambda: {"watch": {"update_success": 3}},
            clock=lambda: NOW,
        )

    def explain(self, host: str, path: str, method: str, origin: str | None) -> dict[str, Any]:
        self.explained.append((host, path, method, origin))
        out: dict[str, Any] = {"request": {"host": host, "path": path}, "revision": 57}
        if host == "shop.acme.com":
            out["route"] = {"service": "checkout", "host": host, "pathPrefix": "/checkout"}
            out["candidates"] = [{"cluster": "aws-eu-west-1", "score": 0.9, "chosen": True}]
            out["plan"] = ["aws-eu-west-1"]
        else:
            out["route"] = None
        return out


@pytest.fixture
def h() -> Harness:
    return Harness()


@pytest.fixture
async def client(h: Harness) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=h.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as c:
        yield c


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("path", PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer s3cret-tokén".encode("latin-1")},
    ],
)
async def test_protected_routes_refuse_a_missing_or_wrong_token(
    client: httpx.AsyncClient, path: str, headers: dict[str, str | bytes]
) -> None:
    r = await client.get(path, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith('Bearer realm="fedgate"')
    assert "acme" not in r.text  # no federation data leaks


@pytest.mark.parametrize("path", PROTECTED)
async def test_protected_routes_accept_the_token(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path, headers=AUTH)
    assert r.status_code == 200


async def test_no_configured_token_refuses_everything(h: Harness) -> None:
    app = create_admin_app(
        holder=h.holder, token=None, gateway_id="g", cluster="c", telemetry=None,
        explain=h.explain, ready=lambda: True, status=dict,
    )  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c:
        for path in PROTECTED:
            r = await c.get(path, headers={"Authorization": "Bearer "})
            assert r.status_code == 401
        assert (await c.get("/healthz")).status_code == 200


@pytest.mark.parametrize("path", PUBLIC)
async def test_public_routes_need_no_token(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 200


async def test_readyz_follows_ready(client: httpx.AsyncClient, h: Harness) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True
    h.ready = False
    r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {
        "ready": False, "gateway": "gw-a", "cluster": "aws-eu-west-1", "view_source": "etcd",
        "revision": 57, "config_revision": 40,
    }  # fmt: skip
    assert (await client.get("/healthz")).status_code == 200


async def test_global_health_is_built_from_the_current_view(
    client: httpx.AsyncClient, h: Harness
) -> None:
    r = await client.get("/v1/health/global", headers=AUTH)
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == global_health(h.holder.view, now=NOW)
    h.holder.swap(sample_view(states={("checkout", "onprem-fra1"): HealthState.UNHEALTHY}))
    body = (await client.get("/v1/health/global", headers=AUTH)).json()
    states = {c["name"]: c["state"] for c in body["clusters"]}
    assert states["onprem-fra1"] == "unhealthy"


async def test_metrics_is_prometheus_text(client: httpx.AsyncClient, h: Harness) -> None:
    h.telemetry.set_view(h.holder.view)
    trace = h.telemetry.begin([])
    h.telemetry.end(
        trace, method="GET", host="shop.acme.com", path="/checkout", service="checkout",
        cluster="aws-eu-west-1", upstream="10.0.0.1:8080", status=200, duration=0.004,
        client="127.0.0.1", retries=0, forwarded=False,
    )  # fmt: skip
    r = await client.get("/metrics", headers=AUTH)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert "fedgate_requests" in families and "fedgate_request_duration_seconds" in families
    sample = families["fedgate_requests"].samples[0]
    assert sample.labels == {"service": "checkout", "cluster": "aws-eu-west-1", "code": "200"}
    assert sample.value == 1
    assert families["fedgate_view_revision"].samples[0].value == 40


async def test_metrics_without_telemetry_is_empty_text(h: Harness) -> None:
    app = create_admin_app(
        holder=h.holder, token=TOKEN, gateway_id="g", cluster="c", telemetry=None,
        explain=h.explain, ready=lambda: True, status=dict,
    )  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c:
        r = await c.get("/metrics", headers=AUTH)
        assert r.status_code == 200 and r.text == ""


async def test_explain_passes_the_query_to_the_composition_root(
    client: httpx.AsyncClient, h: Harness
) -> None:
    r = await client.get(
        "/v1/routes/explain",
        params={
            "host": "shop.acme.com",
            "path": "/checkout/x",
            "method": "post",
            "from": "onprem-fra1",
        },
        headers=AUTH,
    )
    assert r.status_code == 200
    assert r.json()["route"]["service"] == "checkout"
    assert h.explained == [("shop.acme.com", "/checkout/x", "POST", "onprem-fra1")]
    r = await client.get("/v1/routes/explain", params={"host": "shop.acme.com"}, headers=AUTH)
    assert h.explained[-1] == ("shop.acme.com", "/", "GET", None)


async def test_explain_no_route_is_404_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/routes/explain", params={"host": "nope.example"}, headers=AUTH)
    assert r.status_code == 404
    body = r.json()
    assert body["route"] is None and body["error"] and body["revision"] == 57


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "'host' is required"),
        ({"host": ""}, "'host' is required"),
        ({"host": "a b"}, "invalid host"),
        ({"host": "shop.acme.com", "path": "checkout"}, "must start with '/'"),
        ({"host": "shop.acme.com", "method": "GE T"}, "invalid method"),
        ({"host": "shop.acme.com", "from": "mars-1"}, "unknown cluster 'mars-1'"),
    ],
)
async def test_explain_bad_input_is_400(
    client: httpx.AsyncClient, h: Harness, params: dict[str, str], message: str
) -> None:
    r = await client.get("/v1/routes/explain", params=params, headers=AUTH)
    assert r.status_code == 400
    assert message in r.json()["error"]
    assert h.explained == []


async def test_status_reports_this_gateway(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/status", headers=AUTH)).json()
    assert body["gateway"] == "gw-a" and body["ready"] is True
    assert body["view"]["revision"] == 57 and body["view"]["clusters"] == 4
    assert body["details"] == {"watch": {"update_success": 3}}


async def test_page_and_assets(client: httpx.AsyncClient) -> None:
    r = await client.get("/", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert '<script src="/static/status.js"' in r.text
    anonymous = await client.get("/")
    assert anonymous.status_code == 401 and 'id="login-form"' in anonymous.text
    for asset, kind in [("status.js", "javascript"), ("status.css", "text/css")]:
        a = await client.get(f"/static/{asset}")
        assert a.status_code == 200 and kind in a.headers["content-type"]
    assert (await client.get("/static/../api.py")).status_code == 404
    assert (await client.get("/static/nope.js")).status_code == 404
    assert (await client.post("/static/status.js")).status_code == 405


async def test_unknown_route_and_wrong_method(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/nothing", headers=AUTH)
    assert r.status_code == 404 and r.json() == {"error": "not found"}
    r = await client.post("/healthz")
    assert r.status_code == 405 and r.json() == {"error": "method not allowed"}


async def test_openapi_documents_every_route(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json", headers=AUTH)).json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/healthz", "/readyz", "/metrics", "/v1/health/global", "/v1/status",
        "/v1/trends", "/v1/routes/explain", "/v1/dns/explain", "/openapi.json", "/",
        "/static/{file}",
    }  # fmt: skip
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer",
        "description": "The admin token (admin.tokenFile in gateway.yaml).",
    }  # fmt: skip
    for path in ("/healthz", "/readyz"):
        assert doc["paths"][path]["get"]["security"] == []
    for path in ("/v1/health/global", "/v1/routes/explain", "/openapi.json", "/", "/metrics"):
        assert "security" not in doc["paths"][path]["get"]  # the global bearerAuth applies
        assert "401" in doc["paths"][path]["get"]["responses"]


async def test_global_health_filters_and_refuses_a_bad_query(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/health/global?state=healthy&limit=1", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["filter"]["state"] == ["healthy"] and len(body["clusters"]) == 1
    assert body["page"]["clusters"]["next_offset"] == 1
    for query in ("state=sick", "limit=0", "bogus=1", "offset=x"):
        r = await client.get(f"/v1/health/global?{query}", headers=AUTH)
        assert r.status_code == 400 and set(r.json()) == {"error"}, query


async def test_trends_sample_this_gateways_counters() -> None:
    from federation.trends import Totals, Trends

    now = [0.0]
    totals = [Totals(0, 0, 0)]
    trends = Trends(lambda: totals[0], interval=10, window=900, clock=lambda: now[0])
    trends.maybe_sample()
    now[0], totals[0] = 10.0, Totals(500, 50, 3)
    trends.maybe_sample()
    now[0], totals[0] = 15.0, Totals(900, 50, 3)
    trends.maybe_sample()  # too soon: no sample
    now[0] = 30.0
    (p1, p2) = trends.series()["points"]  # type: ignore[misc]
    assert p1["requests_per_second"] == 50.0 and p1["error_rate"] == 0.1
    assert p1["failovers"] == 3
    assert p2["seconds"] == 20.0 and p2["requests_per_second"] == 20.0
    now[0], totals[0] = 40.0, Totals(5, 0, 0)  # the counters restarted
    assert trends.series()["points"] == []
    for i in range(200):  # the window is bounded
        now[0], totals[0] = 50.0 + 10 * i, Totals(10 + i, 0, 0)
        trends.maybe_sample()
    assert len(trends.series()["points"]) <= 91
