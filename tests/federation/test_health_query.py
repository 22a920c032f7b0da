"""``/v1/health/global`` at scale: filters, paging, worst first, bounded by default."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from types import MappingProxyType

import pytest

from bench.genmanifest import generate
from federation.globalhealth import global_health
from federation.healthquery import HealthQuery, QueryError, parse_query
from federation.manifest import parse_manifest
from federation.manifest_view import view_from_federation
from federation.model import HealthState, RoutingView
from tests.federation.views import NOW, gateway, health, sample_view

U, D = HealthState.UNHEALTHY, HealthState.DEGRADED


def big_view(clusters: int = 1000) -> RoutingView:
    """The generated federation, every service healthy everywhere, two gateways per
    cluster; then two clusters down and one service degraded."""
    fed = parse_manifest(generate(clusters), filename="gen.yaml")
    view = view_from_federation(fed, now=NOW, revision=50)
    states = {(s.name, c): HealthState.HEALTHY for s in fed.services for c in s.clusters}
    down = {fed.clusters[3].name, fed.clusters[700 % clusters].name}
    for s in fed.services:
        for c in s.clusters:
            if c in down:
                states[(s.name, c)] = U
    sick = fed.services[5]
    states[(sick.name, sick.clusters[0])] = D
    gws = {
        f"{c.name}-gw{n}": gateway(c.name, n, applied_revision=50)
        for c in fed.clusters
        for n in (1, 2)
    }
    return replace(
        view,
        health=MappingProxyType({k: health(k[0], k[1], v) for k, v in states.items()}),
        gateways=MappingProxyType(gws),
    )


@pytest.fixture(scope="module")
def view1000() -> RoutingView:
    return big_view()


def test_default_is_bounded_and_leads_with_what_is_unhealthy(view1000: RoutingView) -> None:
    started = time.process_time()
    body = global_health(view1000, now=NOW)
    first = time.process_time() - started
    size = len(json.dumps(body))
    assert size < 600_000, size  # the whole answer was ~40 MB of rows at this size
    summary = body["summary"]
    assert summary["clusters"] == 1000 and summary["unhealthy"] == 2
    assert summary["services"] == 2000 and summary["gateways"] == 2000
    page = body["page"]
    assert page["clusters"] == {"total": 1000, "returned": 100, "next_offset": 100}
    assert page["services"]["total"] == 2000 and page["services"]["returned"] == 100
    states = [c["state"] for c in body["clusters"]]
    assert states.count("unhealthy") == 2  # the worst are on the first page
    degraded_services = [s["name"] for s in body["services"] if s["state"] != "healthy"]
    assert len(degraded_services) >= 40  # every service running in a down cluster
    # the second request on the same view reuses the per-view index
    started = time.process_time()
    global_health(view1000, now=NOW + 1)
    assert time.process_time() - started < first


def test_filters(view1000: RoutingView) -> None:
    body = global_health(view1000, now=NOW, query=HealthQuery(states=frozenset({"unhealthy"})))
    assert [c["state"] for c in body["clusters"]] == ["unhealthy", "unhealthy"]
    assert body["page"]["clusters"]["total"] == 2
    assert body["summary"]["clusters"] == 1000  # the summary is never filtered

    name = body["clusters"][0]["name"]
    body = global_health(view1000, now=NOW, query=HealthQuery(clusters=frozenset({name})))
    assert [c["name"] for c in body["clusters"]] == [name]
    assert body["services"] and all(
        [r["cluster"] for r in s["clusters"]] == [name] for s in body["services"]
    )

    body = global_health(view1000, now=NOW, query=HealthQuery(services=frozenset({"svc-00005"})))
    assert [s["name"] for s in body["services"]] == ["svc-00005"]
    assert len(body["clusters"]) == 20  # the clusters that run it
    assert body["services"][0]["state"] == "degraded"

    body = global_health(view1000, now=NOW, query=HealthQuery(search="r0042"))
    assert [c["name"] for c in body["clusters"]] == ["aws-r0042"]
    body = global_health(view1000, now=NOW, query=HealthQuery(search="svc-0001"))
    assert len(body["services"]) == 10 and not body["clusters"]


def test_paging_walks_every_item_once(view1000: RoutingView) -> None:
    seen: list[str] = []
    offset: int | None = 0
    pages = 0
    while offset is not None and pages < 20:
        body = global_health(view1000, now=NOW, query=HealthQuery(limit=300, offset=offset))
        seen += [c["name"] for c in body["clusters"]]
        offset = body["page"]["clusters"]["next_offset"]
        pages += 1
    assert pages == 4 and len(seen) == len(set(seen)) == 1000


def test_small_federation_keeps_its_grouped_order() -> None:
    view = sample_view(states={("checkout", "onprem-fra1"): U})
    names = [c["name"] for c in global_health(view, now=NOW)["clusters"]]
    assert names == ["aws-eu-west-1", "aws-us-east-1", "gcp-europe-west4", "onprem-fra1"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bogus": "1"}, "unknown query parameter 'bogus'"),
        ({"state": "sick"}, "unknown state 'sick'"),
        ({"state": ""}, "query parameter 'state' is empty"),
        ({"limit": "0"}, "'limit' must be an integer 1-1000"),
        ({"limit": "5000"}, "'limit' must be an integer 1-1000"),
        ({"offset": "-1"}, "'offset' must be an integer"),
        ({"q": "x" * 300}, "'q': at most 253 characters"),
    ],
)
def test_bad_query_is_one_line(params: dict[str, str], message: str) -> None:
    with pytest.raises(QueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_query(params)


def test_query_parses() -> None:
    q = parse_query({"cluster": "a, b", "state": "unhealthy,degraded", "q": " Shop ", "limit": "5"})
    assert q.clusters == frozenset({"a", "b"}) and q.states == frozenset({"unhealthy", "degraded"})
    assert (q.search, q.limit, q.offset) == ("shop", 5, 0)
