"""global_health(): the whole federation from one routing view."""

from __future__ import annotations

import json

from federation.globalhealth import (
    CERT_WARN_SECONDS,
    RENEWAL_GRACE_SECONDS,
    cluster_state,
    global_health,
)
from federation.model import HealthState, Rejection, RoutingView
from tests.federation.views import CLUSTERS, NOW, gateway, health, sample_view

H, D, U, K = HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY, HealthState.UNKNOWN


def by_name(body: dict[str, object], kind: str) -> dict[str, dict[str, object]]:
    items = body[kind]
    assert isinstance(items, list)
    return {item["name"]: item for item in items}


def test_every_cluster_with_identity_state_and_score() -> None:
    body = global_health(sample_view(), now=NOW)
    clusters = by_name(body, "clusters")
    assert set(clusters) == {c.name for c in CLUSTERS}
    aws = clusters["aws-eu-west-1"]
    assert aws["region"] == "eu-west-1" and aws["cloud"] == "aws"
    assert aws["environment"] == "prod" and aws["tier"] == 0 and aws["labels"] == {"zone": "eu"}
    assert aws["state"] == "healthy" and aws["score"] == 0.95
    assert clusters["onprem-fra1"]["tier"] == 1
    assert body["summary"] == {
        "clusters": 4, "healthy": 4, "degraded": 0, "unhealthy": 0, "unknown": 0,
        "gateways": 4, "services": 2, "services_serving": 2,
        "services_by_state": {"healthy": 2, "degraded": 0, "unhealthy": 0, "unknown": 0},
    }  # fmt: skip
    # grouped order: cloud, environment, tier, name
    assert [c["name"] for c in body["clusters"]] == [
        "aws-eu-west-1", "aws-us-east-1", "gcp-europe-west4", "onprem-fra1",
    ]  # fmt: skip
    json.dumps(body, allow_nan=False)  # plain JSON


def test_cluster_with_every_service_down_is_unhealthy_and_partial_is_degraded() -> None:
    view = sample_view(
        states={
            ("checkout", "gcp-europe-west4"): U,
            ("search", "gcp-europe-west4"): U,
            ("checkout", "aws-eu-west-1"): U,
        }
    )
    body = global_health(view, now=NOW)
    clusters = by_name(body, "clusters")
    assert clusters["gcp-europe-west4"]["state"] == "unhealthy"
    assert clusters["gcp-europe-west4"]["score"] == 0.0
    assert "every observed service is unhealthy" in clusters["gcp-europe-west4"]["reasons"]
    assert clusters["aws-eu-west-1"]["state"] == "degraded"
    assert clusters["aws-eu-west-1"]["reasons"] == ["1 of 2 services unhealthy"]
    assert body["summary"]["unhealthy"] == 1 and body["summary"]["degraded"] == 1
    services = by_name(body, "services")
    checkout = {r["cluster"]: r for r in services["checkout"]["clusters"]}
    assert checkout["gcp-europe-west4"]["state"] == "unhealthy"
    assert checkout["gcp-europe-west4"]["healthy_endpoints"] == 0
    assert checkout["gcp-europe-west4"]["total_endpoints"] == 2
    assert services["checkout"]["state"] == "degraded" and services["checkout"]["serving"]


def test_service_down_everywhere_is_not_serving() -> None:
    view = sample_view(
        states={
            (s, c): U
            for s, c in [
                ("checkout", "aws-eu-west-1"),
                ("checkout", "gcp-europe-west4"),
                ("checkout", "onprem-fra1"),
            ]
        }
    )
    services = by_name(global_health(view, now=NOW), "services")
    assert services["checkout"]["state"] == "unhealthy"
    assert services["checkout"]["serving"] is False
    assert global_health(view, now=NOW)["summary"]["services_serving"] == 1


def test_per_service_row_carries_endpoints_error_rate_latency_observers() -> None:
    view = sample_view(states={("search", "aws-us-east-1"): D})
    services = by_name(global_health(view, now=NOW), "services")
    row = {r["cluster"]: r for r in services["search"]["clusters"]}["aws-us-east-1"]
    assert row == {
        "cluster": "aws-us-east-1", "state": "degraded", "score": 0.6,
        "healthy_endpoints": 1, "total_endpoints": 2, "error_rate": 0.2, "latency_ms": 3.0,
        "observers": 3, "down_votes": 0, "since": NOW - 60,
    }  # fmt: skip


def test_cluster_without_live_gateway() -> None:
    gws = tuple(gateway(c.name) for c in CLUSTERS if c.name != "onprem-fra1")
    clusters = by_name(global_health(sample_view(gateways=gws), now=NOW), "clusters")
    fra = clusters["onprem-fra1"]
    assert fra["live_gateways"] == 0 and fra["gateways"] == []
    assert fra["state"] == "degraded" and "no live gateway" in fra["reasons"]


def test_unknown_when_nothing_is_known() -> None:
    view = RoutingView(clusters={c.name: c for c in CLUSTERS})
    body = global_health(view, now=NOW)
    assert {c["state"] for c in body["clusters"]} == {"unknown"}
    assert body["convergence"]["share"] is None
    assert body["services"] == [] and body["source"] == "empty"


def test_convergence_share_and_lagging_gateways() -> None:
    gws = (
        gateway("aws-eu-west-1", applied_revision=40),
        gateway("aws-eu-west-1", 2, applied_revision=38),
        gateway("gcp-europe-west4", applied_revision=40),
        gateway("onprem-fra1", applied_revision=40),
    )
    body = global_health(sample_view(gateways=gws), now=NOW)
    conv = body["convergence"]
    assert conv["config_revision"] == 40 and conv["gateways"] == 4 and conv["on_newest"] == 3
    assert conv["share"] == 0.75
    assert conv["lagging"] == [
        {"gateway": "aws-eu-west-1-gw2", "cluster": "aws-eu-west-1", "applied_revision": 38}
    ]
    aws = by_name(body, "clusters")["aws-eu-west-1"]
    assert [g["converged"] for g in aws["gateways"]] == [True, False]
    assert aws["live_gateways"] == 2


def test_newest_revision_is_the_highest_applied_one_when_the_view_is_older() -> None:
    gws = (gateway("aws-eu-west-1", applied_revision=45), gateway("gcp-europe-west4"))
    conv = global_health(sample_view(gateways=gws), now=NOW)["convergence"]
    assert conv["config_revision"] == 45 and conv["on_newest"] == 1 and conv["share"] == 0.5


def test_certificates_expiring_or_failing_renewal_are_flagged() -> None:
    gws = (
        gateway("aws-eu-west-1", cert_not_after=NOW + CERT_WARN_SECONDS - 1),
        gateway("gcp-europe-west4", renewal_failing=True, vault_ok=False),
        gateway("onprem-fra1", cert_not_after=NOW - 10),
        gateway("aws-us-east-1", cert_not_after=None, vault_ok=None, cert_serial=None),
    )
    body = global_health(sample_view(gateways=gws), now=NOW)
    expiring = {e["gateway"]: e for e in body["certificates"]["expiring"]}
    assert set(expiring) == {"aws-eu-west-1-gw1", "gcp-europe-west4-gw1", "onprem-fra1-gw1"}
    assert expiring["aws-eu-west-1-gw1"]["expires_in"] == CERT_WARN_SECONDS - 1
    assert expiring["gcp-europe-west4-gw1"]["renewal_failing"] is True
    assert expiring["gcp-europe-west4-gw1"]["vault_ok"] is False
    gw = {g["id"]: g for c in body["clusters"] for g in c["gateways"]}
    assert gw["onprem-fra1-gw1"]["cert_expired"] is True
    assert gw["aws-us-east-1-gw1"]["cert_warning"] is False
    assert gw["aws-us-east-1-gw1"]["cert_expires_in"] is None
    assert gw["aws-eu-west-1-gw1"]["cert_expired"] is False


def test_a_short_lived_certificate_renewing_on_time_is_not_flagged() -> None:
    """A 1 h certificate renewed at 2/3 of its life: flagged only once renewal is overdue."""
    on_time = gateway("aws-eu-west-1", cert_not_after=NOW + 3000, cert_renew_at=NOW + 600)
    overdue = gateway(
        "gcp-europe-west4",
        cert_not_after=NOW + 1000,
        cert_renew_at=NOW - RENEWAL_GRACE_SECONDS - 1,
    )
    body = global_health(sample_view(gateways=(on_time, overdue)), now=NOW)
    gw = {g["id"]: g for c in body["clusters"] for g in c["gateways"]}
    assert gw["aws-eu-west-1-gw1"]["cert_warning"] is False
    assert gw["gcp-europe-west4-gw1"]["cert_warning"] is True
    expiring = {e["gateway"] for e in body["certificates"]["expiring"]}
    assert expiring == {"gcp-europe-west4-gw1"}


def test_rejected_items_and_revisions() -> None:
    rej = (Rejection("/fedgate/services/bad", "field routes: missing", 55),)
    body = global_health(sample_view(rejected=rej, revision=60, config_revision=41), now=NOW)
    assert body["rejected"] == [
        {"key": "/fedgate/services/bad", "error": "field routes: missing", "revision": 55}
    ]
    assert body["revision"] == 60 and body["config_revision"] == 41


def test_service_without_health_yet_counts_endpoints_from_the_view() -> None:
    view = sample_view()
    health_map = dict(view.health)
    del health_map[("checkout", "onprem-fra1")]
    from dataclasses import replace

    body = global_health(replace(view, health=health_map), now=NOW)
    row = {r["cluster"]: r for r in by_name(body, "services")["checkout"]["clusters"]}[
        "onprem-fra1"
    ]
    assert (
        row["state"] == "unknown" and row["healthy_endpoints"] == 2 and row["total_endpoints"] == 2
    )
    assert row["since"] is None


def test_cluster_state_rules() -> None:
    h = lambda st: health("s", "c", st)  # noqa: E731
    assert cluster_state([h(H), h(H)], live_gateways=1) == ("healthy", [])
    assert cluster_state([h(H), h(K)], live_gateways=1) == ("healthy", [])
    assert cluster_state([h(U), h(K)], live_gateways=1)[0] == "unhealthy"
    assert cluster_state([h(D), h(H)], live_gateways=1)[0] == "degraded"
    assert cluster_state([None, None], live_gateways=1) == (
        "unknown",
        ["no service has been observed yet"],
    )
    assert cluster_state([], live_gateways=1) == ("healthy", [])
    assert cluster_state([], live_gateways=0) == ("unknown", ["no live gateway"])
    assert cluster_state([h(H)], live_gateways=0) == ("degraded", ["no live gateway"])
