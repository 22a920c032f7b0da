"""Bad input loses nothing: a bad item in etcd is rejected while the last good view serves."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator

import pytest

from federation.devstack.localfed import DEMO_HOST, ClusterSpec, LocalFederation
from federation.keys import KeyLayout
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

TOPOLOGY = (
    ClusterSpec("aws-eu-west-1", "aws", "eu-west-1", 0, "127.0.0.41"),
    ClusterSpec("onprem-fra1", "onprem", "fra1", 1, "127.0.0.42"),
)


@pytest.fixture(scope="module")
def fed() -> Iterator[LocalFederation]:
    with LocalFederation(topology=TOPOLOGY, use_vault=False) as f:
        yield f


def etcd_put(fed: LocalFederation, key: str, value: bytes) -> None:
    assert fed.etcd is not None
    body = json.dumps(
        {"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(value).decode()}
    ).encode()
    req = urllib.request.Request(f"{fed.etcd.endpoint}/v3/kv/put", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def get(fed: LocalFederation, host: str = DEMO_HOST) -> tuple[int, str]:
    gw = fed.gateways["aws-eu-west-1"]
    req = urllib.request.Request(gw.public_url + "/x", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("x-served-by", "")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def explain(fed: LocalFederation) -> str:
    gw = fed.gateways["aws-eu-west-1"]
    req = urllib.request.Request(
        f"{gw.admin_url}/v1/routes/explain?host={DEMO_HOST}&path=/x",
        headers={"Authorization": f"Bearer {fed.admin_token}"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read().decode()[:2000]


def metric(fed: LocalFederation, name: str) -> float:
    gw = fed.gateways["aws-eu-west-1"]
    req = urllib.request.Request(
        gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {fed.admin_token}"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_a_bad_service_in_etcd_is_rejected_and_the_last_good_route_keeps_serving(
    fed: LocalFederation,
) -> None:
    # the first request after start is served by the own cluster: a just-started gateway
    # judges its cluster by its own evidence while its probes have not reported, not by
    # the other cluster's vote from before it listened (tests/gateway/test_placement.py)
    first = get(fed)
    assert first[0] == 200 and first[1].startswith("aws-eu-west-1/"), (first, explain(fed))
    rejected_before = metric(fed, 'fedgate_view_updates_total{result="rejected"')
    layout = KeyLayout()
    # a service that names an unknown cluster, and one that is not even JSON
    bad = {
        "name": "shop",
        "routes": [{"host": DEMO_HOST, "path_prefix": "/"}],
        "port": 8080,
        "clusters": ["nowhere"],
    }
    etcd_put(fed, layout.service("shop"), json.dumps(bad).encode())
    etcd_put(fed, layout.cluster("aws-eu-west-1"), b"{not json")

    def rejected() -> list[dict[str, object]]:
        body = fed.admin_get("aws-eu-west-1", "/v1/health/global")
        return [r for r in body["rejected"] if str(r["key"]).endswith(("/shop", "/aws-eu-west-1"))]

    rows = wait_for(lambda: len(rejected()) == 2 and rejected(), timeout=10, what="rejections")
    assert {str(r["key"]) for r in rows} == {
        layout.service("shop"),
        layout.cluster("aws-eu-west-1"),
    }
    assert all(r["error"] for r in rows)
    # the previous good values keep serving: same route, same local cluster
    for _ in range(50):
        status, served = get(fed)
        assert status == 200 and served.startswith("aws-eu-west-1/")
    assert metric(fed, 'fedgate_view_updates_total{result="rejected"') > rejected_before
    # a malformed request is a 4xx for that client only
    assert get(fed, host="bad host")[0] == 400
    assert get(fed)[0] == 200


def test_a_restarted_gateway_serves_its_first_request_from_its_own_cluster() -> None:
    """The other cluster saw this gateway gone and voted its cluster unreachable; the
    vote is still in etcd when the gateway comes back. Its first request is served
    locally (before: sometimes by the tier-1 cluster, then ramped back over 5 s)."""
    with LocalFederation(topology=TOPOLOGY, use_vault=False) as f:
        f.kill_gateway("aws-eu-west-1")

        def voted_down() -> bool:
            body = f.admin_get("onprem-fra1", "/v1/health/global?cluster=aws-eu-west-1")
            rows = [c for s in body["services"] for c in s["clusters"]]
            return any(r["cluster"] == "aws-eu-west-1" and r["state"] == "unhealthy" for r in rows)

        wait_for(voted_down, timeout=20, interval=0.1, what="aws voted down by onprem")
        f.restart_gateway("aws-eu-west-1")  # started again, then waited for until ready
        first = get(f)
        assert first[0] == 200 and first[1].startswith("aws-eu-west-1/"), (first, explain(f))
