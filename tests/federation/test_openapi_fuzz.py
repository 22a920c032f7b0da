"""schemathesis over /openapi.json, in-process against the admin ASGI app.

Every generated request (valid and invalid) must get an answer that matches the
document (status code, content type, headers, body schema) and never a server error;
every operation with a security requirement must refuse a missing or a wrong token.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from federation.api import create_admin_app
from federation.model import HealthState
from federation.openapi import openapi_document
from gateway.telemetry import Telemetry
from gateway.types import ViewHolder
from tests.federation.views import CLUSTERS, gateway, sample_view

TOKEN = "fuzz-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WRONG = [{}, {"Authorization": "Bearer not-the-token"}, {"Authorization": f"Basic {TOKEN}"}]


def _explain(
    host: str, path: str, method: str, origin: str | None, headers: object = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "request": {"host": host, "path": path, "method": method, "from": origin},
        "revision": 57,
        "config_revision": 40,
    }
    if host.endswith("acme.com"):
        out["route"] = {"service": "checkout", "host": host, "pathPrefix": "/"}
        out["candidates"] = [{"cluster": "aws-eu-west-1", "score": 0.9, "chosen": True}]
        out["plan"] = ["aws-eu-west-1"]
        out["decision"] = "served in aws-eu-west-1 (local endpoints)"
    else:
        out["route"] = None
    return out


# a view with every kind of state: unhealthy, degraded, a lagging gateway, an expiring cert
VIEW = sample_view(
    states={
        ("checkout", "onprem-fra1"): HealthState.UNHEALTHY,
        ("search", "aws-us-east-1"): HealthState.DEGRADED,
    },
    gateways=(
        gateway("aws-eu-west-1"),
        gateway("aws-eu-west-1", 2, applied_revision=38, stale=True),
        gateway("gcp-europe-west4", cert_not_after=None, vault_ok=None, cert_serial=None),
        gateway("onprem-fra1", renewal_failing=True, vault_ok=False, cert_not_after=1.0),
    ),
)
assert len(VIEW.clusters) == len(CLUSTERS)

telemetry = Telemetry(gateway_id="gw-fuzz", cluster="aws-eu-west-1", access_log=False)
telemetry.set_view(VIEW)
APP = create_admin_app(
    holder=ViewHolder(VIEW),
    token=TOKEN,
    gateway_id="gw-fuzz",
    cluster="aws-eu-west-1",
    telemetry=telemetry,
    explain=_explain,
    ready=lambda: (
        True
    ),  # 503 (not ready) is tested in test_api.py; here it would count as a server error
    status=lambda: {"watch": {"update_success": 1}},
)

# the document the app serves (checked below); loaded from a dict so that schemathesis
# also fuzzes /openapi.json itself (it leaves out the path a schema was loaded from)
DOCUMENT = openapi_document(clusters=sorted(VIEW.clusters))
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.app = APP


def _secured(case: Any) -> bool:
    raw = case.operation.definition.raw
    security = raw.get("security", schema.raw_schema.get("security", []))
    return bool(security)


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_admin_api_conforms_to_its_document(case: Any) -> None:
    original = dict(case.headers or {})
    case.call_and_validate(headers=AUTH)
    if _secured(case):
        # the same request (any method, any parameters) without the token, with a wrong one
        anonymous = {k: v for k, v in original.items() if k.lower() != "authorization"}
        for headers in WRONG:
            case.headers = dict(anonymous)
            response = case.call(headers=headers)
            assert response.status_code == 401, (case.method, case.path, headers, response.text)
            assert response.headers["www-authenticate"][0].startswith("Bearer")
            assert "acme" not in response.text


def test_every_operation_is_fuzzed() -> None:
    served = schemathesis.openapi.from_asgi("/openapi.json", APP, headers=AUTH)
    assert served.raw_schema == DOCUMENT
    operations = [r.ok() for r in schema.get_all_operations()]
    assert {op.path for op in operations} == set(schema.raw_schema["paths"])
    secured = {op.path for op in operations if op.definition.raw.get("security", [{}])}
    assert secured == {
        "/v1/health/global",
        "/v1/status",
        "/v1/trends",
        "/v1/routes/explain",
        "/v1/dns/explain",
        "/openapi.json",
        "/",
        "/metrics",  # it names services, clusters, health and certificate expiry
    }
