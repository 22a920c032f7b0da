"""The admin API's OpenAPI 3.1 document (hand-written: it is the contract, not a by-product).

Served at ``GET /openapi.json``; the schemathesis test fuzzes the admin app against it
(every answer must match its response schema, and every operation with a security
requirement must refuse a missing or wrong token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from federation.openapi_schemas import (
    CLUSTER,
    DNS_EXPLAIN,
    ERROR,
    EXPLAIN,
    GATEWAY,
    GLOBAL_HEALTH,
    HEADER_PATTERN,
    HEALTH_PARAMETERS,
    HOST_PATTERN,
    METHOD_PATTERN,
    PAGE,
    PATH_PATTERN,
    PROBE,
    SERVICE,
    SERVICE_CLUSTER,
    STATUS,
    TRENDS,
)


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
