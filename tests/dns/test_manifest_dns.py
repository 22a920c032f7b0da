"""The DNS parts of the manifest: zones, public entries, a service's dns; located errors;
the zones travel through etcd (the federation key) and snapshots into the view."""

from __future__ import annotations

import ipaddress

import pytest

from federation.etcd import KV
from federation.keys import KeyLayout
from federation.manifest import Manifest, ManifestError, check_manifest_text
from federation.model import NearestRule, PublicEntry, ServiceDns, Zone
from federation.snapshot import decode_view, encode_view
from federation.store import desired_items
from federation.view import build_view

GOOD = """\
apiVersion: fedgate/v1
kind: Federation
metadata: {name: acme}
clusters:
  - name: aws-1
    region: eu-west-1
    cloud: aws
    gateway: {eastWest: "https://gw.aws.example.net:15443"}
    publicEntry: {addresses: [203.0.113.10, "2001:DB8::10"]}
  - name: gcp-1
    region: europe-west4
    cloud: gcp
    gateway: {eastWest: "https://gw.gcp.example.net:15443"}
    publicEntry: {hostname: lb.gcp.example.net}
services:
  - name: web
    routes: [{host: shop.acme.com}, {host: "*.shop.acme.com"}]
    port: 8080
    clusters: [aws-1, gcp-1]
    endpoints: {aws-1: ["10.0.0.1:8080"], gcp-1: ["10.1.0.1:8080"]}
    dns:
      strategy: nearest
      ttl: 10s
      nearest:
        - {cidr: 10.20.0.0/16, clusters: [gcp-1, aws-1]}
zones:
  - {name: acme.com, hostmaster: ops.acme.com, ttl: 5m, negativeTtl: 2s}
"""


def test_every_dns_field_reaches_the_model() -> None:
    fed = Manifest.from_yaml(GOOD)
    aws, gcp = fed.clusters
    assert aws.public_entry == PublicEntry(addresses=("203.0.113.10", "2001:db8::10"))
    assert gcp.public_entry == PublicEntry(hostname="lb.gcp.example.net")
    assert fed.services[0].dns == ServiceDns(
        strategy="nearest",
        ttl=10.0,
        nearest=(NearestRule(ipaddress.ip_network("10.20.0.0/16"), ("gcp-1", "aws-1")),),
    )
    assert fed.zones == (Zone("acme.com", "ops.acme.com", 300.0, 2.0),)


def test_zones_travel_through_etcd_and_snapshots() -> None:
    fed = Manifest.from_yaml(GOOD)
    layout = KeyLayout("/fedgate/")
    kvs = {
        k: KV(key=k, value=v, mod_revision=i + 1, create_revision=i + 1, lease=0)
        for i, (k, v) in enumerate(desired_items(fed, layout).items())
    }
    view = build_view(kvs, layout=layout, revision=10, previous=None, now=0.0)
    assert not view.rejected and view.zones == fed.zones
    assert view.clusters["gcp-1"].public_entry == fed.clusters[1].public_entry
    assert view.services["web"].dns == fed.services[0].dns
    assert decode_view(encode_view(view)).zones == fed.zones
    # a federation key without zones (as older versions wrote it) still reads
    plain = dict(kvs)
    key = layout.federation()
    plain[key] = KV(key=key, value=b'{"name":"acme"}', mod_revision=1, create_revision=1, lease=0)
    assert build_view(plain, layout=layout, revision=10, previous=None, now=0.0).zones == ()
    # a bad zone list is rejected, the previous zones keep serving
    plain[key] = KV(key, b'{"name":"acme","zones":[{"nope":1}]}', 11, 1, 0)
    again = build_view(plain, layout=layout, revision=11, previous=view, now=0.0)
    assert again.rejected and again.zones == fed.zones


BAD = [
    (
        'publicEntry: {addresses: [203.0.113.10, "2001:DB8::10"]}',
        "publicEntry: {addresses: [203.0.113.10], hostname: x.example.net}",
        "clusters[0].publicEntry",
        "exactly one of addresses",
    ),
    (
        'publicEntry: {addresses: [203.0.113.10, "2001:DB8::10"]}',
        "publicEntry: {addresses: [203.0.113.300]}",
        "clusters[0].publicEntry.addresses[0]",
        "not an IP address",
    ),
    (
        "publicEntry: {hostname: lb.gcp.example.net}",
        "publicEntry: {hostname: '*.gcp.example.net'}",
        "clusters[1].publicEntry.hostname",
        "wildcard is not allowed",
    ),
    ("ttl: 10s", "ttl: 1500ms", "services[0].dns.ttl", "whole seconds"),
    ("strategy: nearest", "strategy: geo", "services[0].dns.strategy", "healthiest"),
    ("strategy: nearest", "strategy: weighted", "services[0].dns.nearest", "only allowed"),
    (
        "{cidr: 10.20.0.0/16, clusters: [gcp-1, aws-1]}",
        "{cidr: 10.20.0.0/16, clusters: [gcp-1, azure-9]}",
        "services[0].dns.nearest[0].clusters[1]",
        "not one of this service's clusters",
    ),
    (
        "{cidr: 10.20.0.0/16, clusters: [gcp-1, aws-1]}",
        "{cidr: 10.20.0.1/16, clusters: [gcp-1]}",
        "services[0].dns.nearest[0].cidr",
        "host bits set",
    ),
    (
        "  - {name: acme.com, hostmaster: ops.acme.com, ttl: 5m, negativeTtl: 2s}",
        "  - {name: acme.com}\n  - {name: eu.acme.com}",
        "zones[1].name",
        "overlaps zone 'acme.com'",
    ),
    (
        "  - {name: acme.com, hostmaster: ops.acme.com, ttl: 5m, negativeTtl: 2s}",
        "  - {name: acme.com, ttl: 25h}",
        "zones[0].ttl",
        "0s..24h",
    ),
]


@pytest.mark.parametrize(("old", "new", "path", "message"), BAD, ids=[b[2] for b in BAD])
def test_located_errors(old: str, new: str, path: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(ManifestError) as info:
        Manifest.from_yaml(GOOD.replace(old, new))
    found = [i for i in info.value.issues if i.path == path and message in i.message]
    assert found, "\n".join(info.value.lines)


def test_nearest_needs_rules_and_ordered_takes_an_order() -> None:
    text = GOOD.replace("strategy: nearest", "strategy: ordered").replace(
        "      nearest:\n        - {cidr: 10.20.0.0/16, clusters: [gcp-1, aws-1]}\n",
        "      order: [gcp-1, aws-1]\n",
    )
    assert Manifest.from_yaml(text).services[0].dns.order == ("gcp-1", "aws-1")
    bare = GOOD.replace(
        "      nearest:\n        - {cidr: 10.20.0.0/16, clusters: [gcp-1, aws-1]}\n", ""
    )
    with pytest.raises(ManifestError) as info:
        Manifest.from_yaml(bare)
    assert any("needs nearest" in i.message for i in info.value.issues)


def test_warns_when_no_cluster_has_a_public_entry() -> None:
    text = GOOD.replace(
        '    publicEntry: {addresses: [203.0.113.10, "2001:DB8::10"]}\n', ""
    ).replace("    publicEntry: {hostname: lb.gcp.example.net}\n", "")
    warnings = check_manifest_text(text).warnings
    assert any("publicEntry" in w.message for w in warnings)
