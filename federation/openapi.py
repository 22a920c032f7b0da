"""The admin API's OpenAPI 3.1 document (hand-written: it is the contract, not a by-product).

Served at ``GET /openapi.json``; the schemathesis test fuzzes the admin app against it
(every answer must match its response schema, and every operation with a security
requirement must refuse a missing or wrong token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from federation.globalhealth import SCHEMA_VERSION

STATES = ["healthy", "degraded", "unhealthy", "unknown"]

# query parameter patterns of /v1/routes/explain (the API matches them with re.search)
HOST_PATTERN = r"^[A-Za-z0-9*._:\[\]-]{1,253}$"
PATH_PATTERN = r"^/"
METHOD_PATTERN = r"^[A-Za-z]{1,16}$"
HEADER_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}:[ -~]{0,1024}$"  # NAME:VALUE


def _nullable(type_: str) -> dict[str, Any]:
    return {"type": [type_, "null"]}


def _obj(props: dict[str, Any], *, extra: bool = False) -> dict[str, Any]:
    return {
        "type": "object",
        "required": sorted(props),
        "properties": props,
        "additionalProperties": extra,
    }


_STATE = {"type": "string", "enum": STATES}
_INT = {"type": "integer", "minimum": 0}
_NUM = {"type": "number"}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}

GATEWAY = _obj(
    {
        "id": _STR,
        "cluster": _STR,
        "public": _STR,
        "east_west": _STR,
        "admin": _STR,
        "applied_revision": _INT,
        "converged": _BOOL,
        "stale": _BOOL,
        "started_at": _NUM,
        "uptime": _nullable("number"),
        "cert_not_after": _nullable("number"),
        "cert_expires_in": _nullable("number"),
        "cert_serial": _nullable("string"),
        "cert_warning": _BOOL,
        "cert_expired": _BOOL,
        "vault_ok": _nullable("boolean"),
        "renewal_failing": _BOOL,
        # ACME (docs/tls.md): tls: acme hosts still on the Vault certificate, last problem
        "acme_missing": {"type": "array", "items": _STR},
        "acme_problem": _nullable("string"),
    }
)

CLUSTER = _obj(
    {
        "name": _STR,
        "region": _STR,
        "cloud": {"type": "string", "enum": ["aws", "gcp", "azure", "onprem", "other"]},
        "environment": _STR,
        "tier": {"type": "integer"},
        "labels": {"type": "object", "additionalProperties": _STR},
        "east_west": _STR,
        "state": _STATE,
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "reasons": {"type": "array", "items": _STR},
        "services": _obj({"total": _INT, **{s: _INT for s in STATES}}),
        "live_gateways": _INT,
        "gateways": {"type": "array", "items": {"$ref": "#/components/schemas/Gateway"}},
    }
)

SERVICE_CLUSTER = _obj(
    {
        "cluster": _STR,
        "state": _STATE,
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "healthy_endpoints": _INT,
        "total_endpoints": _INT,
        "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
        "latency_ms": {"type": "number", "minimum": 0},
        "observers": _INT,
        "down_votes": _INT,
        "since": _nullable("number"),
    }
)

SERVICE = _obj(
    {
        "name": _STR,
        "state": _STATE,
        "serving": _BOOL,
        "routes": {
            "type": "array",
            "items": _obj({"host": _STR, "path_prefix": _STR}),
        },
        "failover": {"type": "string", "enum": ["healthiest", "ordered"]},
        "clusters": {"type": "array", "items": {"$ref": "#/components/schemas/ServiceCluster"}},
    }
)

GLOBAL_HEALTH = _obj(
    {
        "schema": {"type": "integer", "const": SCHEMA_VERSION},
        "federation": _STR,
        "generated_at": _NUM,
        "revision": _INT,
        "config_revision": _INT,
        "source": {"type": "string", "enum": ["empty", "etcd", "snapshot", "manifest"]},
        "stale": _BOOL,
        "summary": _obj(
            {
                "clusters": _INT,
                **{s: _INT for s in STATES},
                "gateways": _INT,
                "services": _INT,
                "services_serving": _INT,
                "services_by_state": _obj({s: _INT for s in STATES}),
            }
        ),
        "convergence": _obj(
            {
                "config_revision": _INT,
                "gateways": _INT,
                "on_newest": _INT,
                "share": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "lagging": {
                    "type": "array",
                    "description": "At most `limit` of them; `lagging_total` counts all.",
                    "items": _obj({"gateway": _STR, "cluster": _STR, "applied_revision": _INT}),
                },
                "lagging_total": _INT,
            }
        ),
        "certificates": _obj(
            {
                "warn_before_seconds": _NUM,
                "expiring": {
                    "type": "array",
                    "items": _obj(
                        {
                            "gateway": _STR,
                            "cluster": _STR,
                            "cert_not_after": _nullable("number"),
                            "expires_in": _nullable("number"),
                            "renewal_failing": _BOOL,
                            "vault_ok": _nullable("boolean"),
                        }
                    ),
                },
                "expiring_total": _INT,
            }
        ),
        "filter": _obj(
            {
                "cluster": {"type": ["array", "null"], "items": _STR},
                "service": {"type": ["array", "null"], "items": _STR},
                "state": {"type": ["array", "null"], "items": _STATE},
                "q": _nullable("string"),
            }
        ),
        "page": _obj(
            {
                "limit": _INT,
                "offset": _INT,
                "clusters": {"$ref": "#/components/schemas/Page"},
                "services": {"$ref": "#/components/schemas/Page"},
            }
        ),
        "clusters": {"type": "array", "items": {"$ref": "#/components/schemas/Cluster"}},
        "services": {"type": "array", "items": {"$ref": "#/components/schemas/Service"}},
        "rejected": {
            "type": "array",
            "items": _obj({"key": _STR, "error": _STR, "revision": _INT}),
        },
        "rejected_total": _INT,
        "dns": {
            "type": "object",
            "description": "What the gateway's authoritative DNS answers (docs/dns.md): "
            "zones with their NS set, each service's answer now, the listener's counters; "
            "{enabled: false} when listen.dns is off.",
            "required": ["enabled"],
            "properties": {"enabled": _BOOL},
            "additionalProperties": True,
        },
    }
)

PAGE = _obj(
    {
        "total": {**_INT, "description": "Items matching the filters."},
        "returned": _INT,
        "next_offset": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "The `offset` of the next page; null on the last one.",
        },
    }
)

_STATE_LIST = (
    "^ *(healthy|degraded|unhealthy|unknown) *(, *(healthy|degraded|unhealthy|unknown) *)*$"
)

HEALTH_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "cluster",
        "in": "query",
        "description": "Only these clusters (comma-separated names), the services that run "
        "there, and those services' rows for these clusters.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 4096},
    },
    {
        "name": "service",
        "in": "query",
        "description": "Only these services (comma-separated names) and the clusters that "
        "run them.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 4096},
    },
    {
        "name": "state",
        "in": "query",
        "description": "Only clusters and services in one of these states (comma-separated).",
        "schema": {"type": "string", "pattern": _STATE_LIST},
    },
    {
        "name": "q",
        "in": "query",
        "description": "Search: clusters whose name, region or cloud, services whose name or a "
        "route host contains this text (case-insensitive).",
        "schema": {"type": "string", "maxLength": 253},
    },
    {
        "name": "limit",
        "in": "query",
        "description": "At most this many clusters and this many services (default 100).",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    },
    {
        "name": "offset",
        "in": "query",
        "description": "Skip this many of each list (paging: see `page.*.next_offset`).",
        "schema": {"type": "integer", "minimum": 0, "maximum": 1000000000, "default": 0},
    },
]

DNS_EXPLAIN = {
    "type": "object",
    "description": (
        "The DNS answer to a name (A and AAAA) for a client, and why: zone, service, "
        "strategy, records, every candidate cluster with its public entry."
    ),
    "required": ["name", "A", "AAAA"],
    "properties": {
        "name": _STR,
        "client": _nullable("string"),
        "zone": _nullable("string"),
        "A": {"type": "object"},
        "AAAA": {"type": "object"},
        "selection": {"type": ["object", "null"]},
        "candidates": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": True,
}

EXPLAIN = {
    "type": "object",
    "description": (
        "The decision trace: the request as understood, the matched route (null: none), the "
        "candidate clusters with state, score, whether chosen and why, the plan (first = "
        "where the request goes, the rest = where retries go) and the revision used."
    ),
    "required": ["revision"],
    "properties": {
        "request": {"type": "object"},
        "revision": _INT,
        "config_revision": _INT,
        "route": {"type": ["object", "null"]},
        "candidates": {"type": "array", "items": {"type": "object"}},
        "plan": {"type": "array", "items": _STR},
        "decision": _STR,
        "error": _STR,
    },
    "additionalProperties": True,
}

STATUS = _obj(
    {
        "gateway": _STR,
        "cluster": _STR,
        "ready": _BOOL,
        "view": _obj(
            {
                "revision": _INT,
                "config_revision": _INT,
                "source": _STR,
                "stale": _BOOL,
                "clusters": _INT,
                "services": _INT,
                "gateways": _INT,
                "rejected": _INT,
            }
        ),
        "details": {"type": "object"},
    }
)

TRENDS = _obj(
    {
        "gateway": _STR,
        "cluster": _STR,
        "interval_seconds": _NUM,
        "window_seconds": _NUM,
        "points": {
            "type": "array",
            "items": _obj(
                {
                    "at": _NUM,
                    "seconds": _NUM,
                    "requests_per_second": {"type": "number", "minimum": 0},
                    "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
                    "failovers": {"type": "number", "minimum": 0},
                }
            ),
        },
    }
)

PROBE = {
    "type": "object",
    "required": ["gateway", "cluster"],
    "properties": {
        "status": _STR,
        "ready": _BOOL,
        "gateway": _STR,
        "cluster": _STR,
        "view_source": _STR,
        "revision": _INT,
        "config_revision": _INT,
    },
    "additionalProperties": False,
}

ERROR = _obj({"error": _STR})


def _json_content(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _unauthorized() -> dict[str, Any]:
    return {
        "description": "Missing or invalid bearer token.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": _json_content("Error"),
    }


def openapi_document(*, clusters: Sequence[str] = ()) -> dict[str, Any]:
    """The document; ``clusters`` (the registered ones) are the values ``from`` accepts."""
    public: list[dict[str, list[str]]] = []
    from_schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if clusters:
        from_schema = {"type": "string", "enum": list(clusters)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fedgate admin API",
            "version": "1",
            "description": (
                "Health probes, the global health of the federation, route explanations, "
                "Prometheus metrics and the status page of a fedgate gateway. Everything "
                "but /healthz, /readyz and the status page's static assets needs "
                "`Authorization: Bearer <token>` (/metrics too, unless the gateway sets "
                "admin.publicMetrics: true)."
            ),
        },
        "security": [{"bearerAuth": []}],
        "paths": {
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "200 while the process runs.",
                    "security": public,
                    "responses": {
                        "200": {"description": "Running.", "content": _json_content("Probe")}
                    },
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "200 once the gateway holds a routing view and its listeners "
                    "are bound; 503 otherwise.",
                    "security": public,
                    "responses": {
                        "200": {"description": "Ready.", "content": _json_content("Probe")},
                        "503": {"description": "Not ready.", "content": _json_content("Probe")},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus text exposition format.",
                    "responses": {
                        "200": {
                            "description": "The gateway's metrics.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": {"description": "Missing or invalid bearer token."},
                    },
                }
            },
            "/v1/health/global": {
                "get": {
                    "operationId": "globalHealth",
                    "summary": "The global health of the federation, from the shared view.",
                    "description": "The summary covers the whole federation; the cluster and "
                    "service lists are filtered and paged (at most 100 of each by default). A "
                    "page is chosen worst first (unhealthy, degraded, unknown, healthy), and "
                    "keeps the grouped order within it.",
                    "parameters": HEALTH_PARAMETERS,
                    "responses": {
                        "200": {
                            "description": "The summary, and the clusters and services asked for.",
                            "content": _json_content("GlobalHealth"),
                        },
                        "400": {
                            "description": "An unknown or invalid query parameter.",
                            "content": _json_content("Error"),
                        },
                        "401": _unauthorized(),
                    },
                }
            },
            "/v1/trends": {
                "get": {
                    "operationId": "trends",
                    "summary": "This gateway's requests/s, error rate and failovers over the "
                    "last 15 minutes (sampled from its own counters at most every 10 s).",
                    "responses": {
                        "200": {"description": "The series.", "content": _json_content("Trends")},
                        "401": _unauthorized(),
                    },
                }
            },
            "/v1/status": {
                "get": {
                    "operationId": "gatewayStatus",
                    "summary": "This gateway: its view, watch counters, certificates.",
                    "responses": {
                        "200": {"description": "Status.", "content": _json_content("Status")},
                        "401": _unauthorized(),
                    },
                }
            },
            "/v1/routes/explain": {
                "get": {
                    "operationId": "explainRoute",
                    "summary": "Why a request would go where it goes.",
                    "parameters": [
                        {
                            "name": "host",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "pattern": HOST_PATTERN},
                        },
                        {
                            "name": "path",
                            "in": "query",
                            "description": "Default /.",
                            "schema": {"type": "string", "pattern": PATH_PATTERN},
                        },
                        {
                            "name": "method",
                            "in": "query",
                            "description": "Default GET.",
                            "schema": {"type": "string", "pattern": METHOD_PATTERN},
                        },
                        {
                            "name": "header",
                            "in": "query",
                            "description": "A request header the route conditions look at, "
                            "NAME:VALUE (repeatable). Put the query string in path.",
                            "schema": {
                                "type": "array",
                                "maxItems": 32,
                                "items": {"type": "string", "pattern": HEADER_PATTERN},
                            },
                        },
                        {
                            "name": "from",
                            "in": "query",
                            "description": "The cluster the request enters (default: this "
                            "gateway's).",
                            "schema": from_schema,
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The decision trace.",
                            "content": _json_content("Explain"),
                        },
                        "400": {
                            "description": "Missing or invalid parameter, or unknown cluster.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "oneOf": [
                                            {"$ref": "#/components/schemas/Error"},
                                            {"$ref": "#/components/schemas/Explain"},
                                        ]
                                    }
                                }
                            },
                        },
                        "401": _unauthorized(),
                        "404": {
                            "description": "No registered route for this host and path "
                            "(the trace, with route null and an error).",
                            "content": _json_content("Explain"),
                        },
                    },
                }
            },
            "/v1/dns/explain": {
                "get": {
                    "operationId": "explainDns",
                    "summary": "What the federation's DNS answers for a name, and why.",
                    "parameters": [
                        {
                            "name": "name",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "pattern": HOST_PATTERN},
                        },
                        {
                            "name": "client",
                            "in": "query",
                            "description": "The client's address or network (default: "
                            "none, as a resolver that sends no Client Subnet).",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The answer and why.",
                            "content": _json_content("DnsExplain"),
                        },
                        "400": {
                            "description": "Missing or invalid parameter.",
                            "content": _json_content("Error"),
                        },
                        "401": _unauthorized(),
                        "404": {
                            "description": "DNS is not enabled on this gateway.",
                            "content": _json_content("Error"),
                        },
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "401": _unauthorized(),
                    },
                }
            },
            "/": {
                "get": {
                    "operationId": "statusPage",
                    "summary": "The status page. Without a token the answer is 401 with the "
                    "page as body: the page asks for the token and sends it as a bearer "
                    "header with every API call.",
                    "responses": {
                        "200": {
                            "description": "The page.",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        },
                        "401": {
                            "description": "No token: the page, which asks for one.",
                            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        },
                    },
                }
            },
            "/static/{file}": {
                "get": {
                    "operationId": "staticAsset",
                    "summary": "The status page's scripts and styles (public: no data).",
                    "security": public,
                    "parameters": [
                        {
                            "name": "file",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The asset.",
                            "content": {
                                "text/css": {"schema": {"type": "string"}},
                                "text/javascript": {"schema": {"type": "string"}},
                                "text/html": {"schema": {"type": "string"}},
                            },
                        },
                        "404": {"description": "No such asset."},
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token (admin.tokenFile in gateway.yaml).",
                }
            },
            "schemas": {
                "Error": ERROR,
                "Probe": PROBE,
                "Status": STATUS,
                "Explain": EXPLAIN,
                "DnsExplain": DNS_EXPLAIN,
                "GlobalHealth": GLOBAL_HEALTH,
                "Page": PAGE,
                "Trends": TRENDS,
                "Cluster": CLUSTER,
                "Gateway": GATEWAY,
                "Service": SERVICE,
                "ServiceCluster": SERVICE_CLUSTER,
            },
        },
    }
