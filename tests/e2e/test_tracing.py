"""One trace across gateways: a client's traceparent, the access logs and the OTLP spans."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from federation.devstack.localfed import DEMO_HOST, ClusterSpec, LocalFederation
from tests.support.ports import free_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class OtlpReceiver:
    """A real OTLP/HTTP endpoint: keeps the protobuf bodies POSTed to /v1/traces."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path == "/v1/traces":
                    receiver.bodies.append(body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def exporters_of(self, trace_id: str, gateway_ids: list[str]) -> set[str]:
        """The gateways (resource ``service.instance.id``) that exported a span of the trace."""
        raw = bytes.fromhex(trace_id)
        return {
            gw for body in self.bodies if raw in body for gw in gateway_ids if gw.encode() in body
        }

    def spans_of(self, trace_id: str) -> list[tuple[str, int, dict[str, object]]]:
        """(gateway, span kind, attributes) of every exported span of the trace."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        raw = bytes.fromhex(trace_id)
        found = []
        for body in list(self.bodies):
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for rs in request.resource_spans:
                gw = next(
                    (a.value.string_value for a in rs.resource.attributes
                     if a.key == "service.instance.id"), "",
                )  # fmt: skip
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        if span.trace_id == raw:
                            attrs: dict[str, object] = {
                                a.key: a.value.string_value or a.value.int_value
                                for a in span.attributes
                            }
                            found.append((gw, int(span.kind), attrs))
        return found

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def fed(otlp: OtlpReceiver) -> Iterator[LocalFederation]:
    topology = (
        ClusterSpec("aws-eu-west-1", "aws", "eu-west-1", 0, "127.0.0.61"),
        ClusterSpec("gcp-europe-west4", "gcp", "europe-west4", 0, "127.0.0.62"),
    )
    telemetry = {
        "logFormat": "json",
        "accessLog": True,
        "tracing": {"enabled": True, "otlpEndpoint": otlp.url},
    }
    with LocalFederation(topology=topology, use_vault=False, telemetry=telemetry) as f:
        yield f


def access_lines(fed: LocalFederation, cluster: str, trace_id: str) -> list[dict[str, object]]:
    lines = []
    for line in fed.gateways[cluster].proc.log.read_text(errors="replace").splitlines():
        if trace_id in line:
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def test_a_client_trace_crosses_clusters_with_one_trace_id(
    fed: LocalFederation, otlp: OtlpReceiver
) -> None:
    fed.kill_backends("aws-eu-west-1")  # requests entering aws are served by gcp
    entry = fed.gateways["aws-eu-west-1"]

    def crossed() -> bool:
        req = urllib.request.Request(
            entry.public_url + "/traced",
            headers={"Host": DEMO_HOST, "traceparent": TRACEPARENT},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.headers.get("x-served-by", "").startswith("gcp-europe-west4/")

    wait_for(crossed, timeout=15, interval=0.2, what="a request served across clusters")
    # the access log is written in batches, and the requests before the crossing one may
    # have failed (the local backends just died): wait for the answered one's line
    entry_lines = wait_for(
        lambda: [
            line
            for line in access_lines(fed, "aws-eu-west-1", TRACE_ID)
            if line.get("status") == 200
        ],
        timeout=10,
        what="entry log of the answered request",
    )
    remote_lines = wait_for(
        lambda: access_lines(fed, "gcp-europe-west4", TRACE_ID), timeout=10, what="remote log"
    )
    assert all(line["trace_id"] == TRACE_ID for line in entry_lines + remote_lines)
    # the remote gateway's span is a child of the entry's, not of the client's parent
    assert {line["span_id"] for line in entry_lines}.isdisjoint(
        {line["span_id"] for line in remote_lines}
    )
    assert any(line.get("forwarded") for line in remote_lines)
    # the access log carries bytes, protocol and user agent
    entry = entry_lines[-1]
    assert entry["bytes_out"] > 0 and entry["protocol"] == "HTTP/1.1"
    assert entry["user_agent"].startswith("Python-urllib")
    # both gateways exported spans of that trace over OTLP (one export body per gateway)
    ids = ["aws-eu-west-1-gw-1", "gcp-europe-west4-gw-1"]
    wait_for(
        lambda: otlp.exporters_of(TRACE_ID, ids) == set(ids),
        timeout=10,
        what="spans of the trace from both gateways",
    )
    # the entry gateway's try to gcp is a CLIENT span (kind 3) under its SERVER span (2)
    spans = wait_for(
        lambda: [
            sp for sp in otlp.spans_of(TRACE_ID)
            if sp[0] == "aws-eu-west-1-gw-1" and sp[1] == 3
            and sp[2].get("fedgate.upstream_cluster") == "gcp-europe-west4"
        ],
        timeout=10, what="a CLIENT span per upstream try",
    )  # fmt: skip
    assert spans[0][2]["server.port"]
    servers = [sp for sp in otlp.spans_of(TRACE_ID) if sp[1] == 2]
    assert servers and all(sp[2]["url.scheme"] == "http" for sp in servers)
