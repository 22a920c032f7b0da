"""The Kubernetes API-server double itself, on the wire: shapes, versions, watch, 410,
restart and TokenReview (what the discovery and Vault tests rely on)."""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.support.kube_api import KubeApiServer

SLICES = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
SELECT = "labelSelector=kubernetes.io%2Fservice-name%3D"


@pytest.fixture
def api() -> Iterator[KubeApiServer]:
    with KubeApiServer(host="127.0.0.24", bookmark_interval=0.1) as server:
        yield server


def get(api: KubeApiServer, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(api.url + path, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def watch(api: KubeApiServer, path: str) -> tuple[list[dict[str, Any]], http.client.HTTPResponse]:
    """Every event of one watch, read until the server ends the (chunked) stream."""
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Transfer-Encoding") == "chunked"
    events = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    conn.close()
    return events, resp


def test_list_answers_an_endpointslice_list(api: KubeApiServer) -> None:
    api.add_service("shop", "checkout", ports=[("http", 8080), ("metrics", 9090, "TCP")])
    pods = api.scale("shop", "checkout", 2, zone="eu-1a")
    api.terminate_pod("shop", pods[1])
    api.add_service("shop", "cart")
    api.add_service("other", "checkout")
    code, body = get(api, SLICES.format(ns="shop") + "?" + SELECT + "checkout")
    assert code == 200
    assert body["kind"] == "EndpointSliceList" and body["apiVersion"] == "discovery.k8s.io/v1"
    assert int(body["metadata"]["resourceVersion"]) == api.resource_version
    (item,) = body["items"]
    meta = item["metadata"]
    assert item["kind"] == "EndpointSlice" and item["apiVersion"] == "discovery.k8s.io/v1"
    assert meta["namespace"] == "shop" and meta["name"].startswith("checkout-") and meta["uid"]
    assert meta["labels"]["kubernetes.io/service-name"] == "checkout"
    assert int(meta["resourceVersion"]) <= api.resource_version
    assert item["addressType"] == "IPv4"
    assert item["ports"] == [
        {"name": "http", "port": 8080, "protocol": "TCP"},
        {"name": "metrics", "port": 9090, "protocol": "TCP"},
    ]
    conds = sorted(
        json.dumps([e["conditions"], e["zone"], e["targetRef"]["kind"]], sort_keys=True)
        for e in item["endpoints"]
    )
    want = [
        [{"ready": True, "serving": True, "terminating": False}, "eu-1a", "Pod"],
        [{"ready": False, "serving": True, "terminating": True}, "eu-1a", "Pod"],
    ]
    assert conds == sorted(json.dumps(w, sort_keys=True) for w in want)
    # every namespace: /apis/discovery.k8s.io/v1/endpointslices
    _, everything = get(api, "/apis/discovery.k8s.io/v1/endpointslices")
    found = {
        (i["metadata"]["namespace"], i["metadata"]["labels"]["kubernetes.io/service-name"])
        for i in everything["items"]
    }
    assert found == {("shop", "checkout"), ("shop", "cart"), ("other", "checkout")}
    # the official client reads it into its models
    models = k8s.DiscoveryV1Api(k8s.ApiClient(api.configuration())).list_namespaced_endpoint_slice(
        "shop", label_selector="kubernetes.io/service-name=checkout"
    )
    assert len(models.items[0].endpoints) == 2
    assert models.metadata.resource_version == body["metadata"]["resourceVersion"]


def test_unknown_paths_answer_a_status(api: KubeApiServer) -> None:
    code, body = get(api, "/api/v1/namespaces/shop/pods")
    assert code == 404 and body["kind"] == "Status" and body["code"] == 404


def test_watch_streams_changes_after_a_version_then_ends(api: KubeApiServer) -> None:
    api.add_service("shop", "checkout")
    since = api.resource_version
    pods = api.scale("shop", "checkout", 2)
    api.set_pod("shop", pods[0], ready=False)
    api.add_service("shop", "other")  # filtered out by the selector
    api.delete_service("shop", "checkout")
    path = SLICES.format(ns="shop") + f"?watch=true&resourceVersion={since}&{SELECT}checkout"
    events, _ = watch(api, path + "&timeoutSeconds=1")
    kinds = [e["type"] for e in events]
    assert kinds == ["MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[0] > since
    assert all(
        e["object"]["metadata"]["labels"]["kubernetes.io/service-name"] == "checkout"
        for e in events
    )


def test_watch_sends_bookmarks_when_asked(api: KubeApiServer) -> None:
    api.add_service("shop", "checkout")
    since = api.resource_version
    api.add_service("shop", "other")  # moves the version on, not seen by the watch
    path = (
        SLICES.format(ns="shop")
        + f"?watch=true&resourceVersion={since}&allowWatchBookmarks=true&timeoutSeconds=1&"
        + SELECT
        + "checkout"
    )
    events, _ = watch(api, path)
    marks = [e for e in events if e["type"] == "BOOKMARK"]
    assert marks and all(e["type"] == "BOOKMARK" for e in events)
    assert int(marks[-1]["object"]["metadata"]["resourceVersion"]) == api.resource_version
    assert marks[-1]["object"]["kind"] == "EndpointSlice"
    # not asked: no bookmark
    events, _ = watch(api, path.replace("allowWatchBookmarks=true", "allowWatchBookmarks=false"))
    assert events == []


def test_a_stale_version_gets_410_gone(api: KubeApiServer) -> None:
    api.add_service("shop", "checkout")
    since = api.resource_version
    api.scale("shop", "checkout", 1)
    oldest = api.compact()
    path = SLICES.format(ns="shop") + f"?watch=true&resourceVersion={since}&timeoutSeconds=5"
    events, _ = watch(api, path)
    (error,) = events
    assert error["type"] == "ERROR"
    status = error["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    assert status["message"] == f"too old resource version: {since} ({oldest})"
    # the official client turns it into ApiException(410)
    w_api = k8s.DiscoveryV1Api(k8s.ApiClient(api.configuration()))
    from kubernetes import watch as k8s_watch

    with pytest.raises(k8s.ApiException) as exc:
        for _ in k8s_watch.Watch().stream(
            w_api.list_namespaced_endpoint_slice,
            "shop",
            resource_version=str(since),
            timeout_seconds=2,
        ):
            pass
    assert exc.value.status == 410
    assert api.stats["gone"] == 2


def test_an_expired_continue_token_gets_http_410(api: KubeApiServer) -> None:
    api.add_service("shop", "checkout", slice_size=1)
    api.scale("shop", "checkout", 3)
    code, first = get(api, SLICES.format(ns="shop") + "?limit=1")
    assert code == 200 and len(first["items"]) == 1
    token = first["metadata"]["continue"]
    assert first["metadata"]["remainingItemCount"] == 2
    code, second = get(api, SLICES.format(ns="shop") + f"?limit=1&continue={token}")
    assert code == 200
    assert second["items"][0]["metadata"]["name"] != first["items"][0]["metadata"]["name"]
    api.scale("shop", "checkout", 4)
    api.compact()
    code, gone = get(api, SLICES.format(ns="shop") + f"?limit=1&continue={token}")
    assert code == 410 and gone["reason"] == "Expired"


def test_restart_keeps_the_port_and_the_objects_and_cuts_watches(api: KubeApiServer) -> None:
    api.add_service("shop", "checkout")
    api.scale("shop", "checkout", 2)
    before = get(api, SLICES.format(ns="shop"))[1]
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.request(
        "GET", SLICES.format(ns="shop") + f"?watch=1&resourceVersion={api.resource_version}"
    )
    resp = conn.getresponse()
    api.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(api.url + "/healthz", timeout=1)
    with pytest.raises(http.client.IncompleteRead):
        resp.read()  # cut without the last chunk
    conn.close()
    api.start()
    after = get(api, SLICES.format(ns="shop"))[1]
    assert after == before
    api.restart(compact=True)
    assert api.stats["restarts"] == 1
    since = int(before["metadata"]["resourceVersion"]) - 1
    events, _ = watch(api, SLICES.format(ns="shop") + f"?watch=true&resourceVersion={since}")
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


# ---------------------------------------------------------------------- TokenReview


def review(
    api: KubeApiServer, token: str, *, audiences: list[str] | None = None, bearer: str | None = None
) -> tuple[int, dict[str, Any]]:
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, **({"audiences": audiences} if audiences else {})},
    }
    req = urllib.request.Request(
        api.url + "/apis/authentication.k8s.io/v1/tokenreviews",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {bearer}"} if bearer else {}),
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_tokenreview_authenticates_issued_tokens(api: KubeApiServer) -> None:
    token = api.issue_token("shop", "fedgate", audiences=("vault",), pod="fedgate-abc")
    code, body = review(api, token, audiences=["vault"])
    assert code == 201 and body["kind"] == "TokenReview"
    status = body["status"]
    assert status["authenticated"] is True
    user = status["user"]
    assert user["username"] == "system:serviceaccount:shop:fedgate"
    assert user["uid"] == api.service_account_uid("shop", "fedgate")
    assert set(user["groups"]) == {
        "system:serviceaccounts",
        "system:serviceaccounts:shop",
        "system:authenticated",
    }
    assert user["extra"]["authentication.kubernetes.io/pod-name"] == ["fedgate-abc"]
    assert status["audiences"] == ["vault"]
    # the JWT carries the same identity, signed with the issuer's key
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    assert claims["sub"] == "system:serviceaccount:shop:fedgate"
    assert claims["kubernetes.io"]["serviceaccount"]["uid"] == user["uid"]
    key = serialization.load_pem_public_key(api.issuer_public_key_pem.encode())
    key.verify(  # type: ignore[union-attr,call-arg]
        base64.urlsafe_b64decode(sig + "=="),
        f"{head}.{payload}".encode(),
        padding.PKCS1v15(),  # type: ignore[arg-type]
        hashes.SHA256(),  # type: ignore[arg-type]
    )


def test_tokenreview_refuses_unknown_revoked_and_wrong_audience(api: KubeApiServer) -> None:
    code, body = review(api, "no-such-token")
    assert code == 201 and not body["status"].get("authenticated")
    assert "invalid bearer token" in body["status"]["error"]
    token = api.issue_token("shop", "fedgate", audiences=("vault",))
    assert not review(api, token, audiences=["other"])[1]["status"].get("authenticated")
    api.revoke_token(token)
    assert not review(api, token)[1]["status"].get("authenticated")
    api.add_token("opaque", namespace="kube-system", service_account="reviewer")
    assert review(api, "opaque")[1]["status"]["user"]["username"].endswith("kube-system:reviewer")
    assert len(api.token_reviews) == 4


def test_tokenreview_callers_can_be_required_to_authenticate(api: KubeApiServer) -> None:
    token = api.issue_token("shop", "fedgate")
    reviewer = api.issue_token("kube-system", "vault-reviewer")
    api.require_reviewer(reviewer)
    code, body = review(api, token)
    assert code == 401 and body["kind"] == "Status"
    code, body = review(api, token, bearer=token)
    assert code == 403 and body["reason"] == "Forbidden"
    code, body = review(api, token, bearer=reviewer)
    assert code == 201 and body["status"]["authenticated"] is True
