"""The manifest's ``protocol`` and ``retries.grpcStatus``: converted, encoded for etcd,
and defaulted so that a service stored before these fields existed still decodes."""

from __future__ import annotations

import json

from federation import codec
from federation.manifest import parse_manifest
from federation.model import Retries, Service

GRPC = """\
apiVersion: fedgate/v1
kind: Federation
metadata: {name: tiny}
clusters:
  - name: aws-eu-west-1
    region: eu-west-1
    cloud: aws
    gateway: {eastWest: "https://gw.example.net:15443"}
services:
  - name: echo
    routes: [{host: echo.example.com}]
    port: 50051
    clusters: [aws-eu-west-1]
    protocol: grpc
    retries: {grpcStatus: [unavailable, resource-exhausted]}
  - name: web
    routes: [{host: web.example.com}]
    port: 8080
    clusters: [aws-eu-west-1]
"""


def test_protocol_and_grpc_status_convert_and_round_trip() -> None:
    fed = parse_manifest(GRPC, filename="m.yaml")
    echo, web = fed.services
    assert (echo.protocol, web.protocol) == ("grpc", "http")
    assert echo.retries.grpc_status == frozenset({14, 8})
    assert web.retries.grpc_status == Retries().grpc_status == frozenset({14})
    assert codec.decode(Service, codec.encode(echo)) == echo


def test_a_service_stored_without_the_new_fields_still_decodes() -> None:
    fed = parse_manifest(GRPC, filename="m.yaml")
    plain = json.loads(codec.encode(fed.services[1]))
    del plain["protocol"]
    del plain["retries"]["grpc_status"]
    old = codec.decode(Service, json.dumps(plain))
    assert old.protocol == "http" and old.retries.grpc_status == frozenset({14})
