"""The schemas of the admin API's OpenAPI document (``federation/openapi.py`` assembles
the document from them): the global health, its query parameters, the gateway status,
the explain traces, the trends and the probes."""

from __future__ import annotations

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
        # the ACME certificate of this gateway that expires first
        "acme_name": _STR,
        "acme_not_after": _nullable("number"),
        "acme_expires_in": _nullable("number"),
        "acme_warning": _BOOL,
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
                            "source": {"type": "string", "enum": ["vault", "acme"]},
                            "name": _STR,  # the ACME name ("" for the Vault certificate)
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
