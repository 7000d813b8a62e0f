"""The OpenAPI 3.1 document of the registry, built from the route table so it
cannot drift from what is served."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from federation.model import (
    MAX_ENDPOINTS_PER_SET,
    MAX_PORTS_PER_ENDPOINT,
    MAX_SHARDS,
    MAX_WEIGHT,
    NetworkMode,
    Protocol,
    SessionAffinity,
)
from federation.model.members import MAX_ZONES
from federation.model.policy import MAX_FAILOVER_TARGETS, MAX_GRACE_SECONDS
from federation.model.records import MAX_AFFINITY_TIMEOUT
from federation.model.validation import MAX_LABELS
from federation.registry.tokens import MAX_TOKEN_TTL, MIN_TOKEN_TTL

DASHBOARD_PAGE_LIMIT = 200  # services per page of /v1/dashboard

if TYPE_CHECKING:
    from federation.api.http import Route

# Exactly as strict as the validators (federation/model/validation.py), so
# that a request the document allows is refused only for what no schema can
# say (a CSR that does not parse, a body that contradicts its path or its
# publisher's registration: those are 404, 409 or 422, never 400).  The
# patterns bound their repetitions, so a length limit holds inside them;
# tests/unit/test_openapi.py holds them to the validators.
_DNS_LABEL = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_1035 = "[a-z]([-a-z0-9]{0,61}[a-z0-9])?"
_LABEL_TEXT = "([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
_LABEL_KEY = (
    f"({_DNS_LABEL}(\\.{_DNS_LABEL}){{0,2}}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?"
)
_SOURCE_TEXT = f"(cluster|vm):{_DNS_LABEL}"


def _pattern(regex: str) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{regex}$"}


_DNS = _pattern(_DNS_LABEL)
_SERVICE_NAME = _pattern(_DNS_1035)
_LABEL = _pattern(_LABEL_TEXT)
_SOURCE = {**_pattern(_SOURCE_TEXT), "example": "cluster:east"}
_IP = {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}
_LOCALITY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["region", "zone"],
    "properties": {"region": _LABEL, "zone": _LABEL, "cluster": _DNS, "network": _LABEL},
}
_PORT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "properties": {
        "name": {"anyOf": [_DNS, {"type": "string", "maxLength": 0}]},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "protocol": {"type": "string", "enum": [p.value for p in Protocol]},
    },
}
_PORTS = {"type": "array", "maxItems": MAX_PORTS_PER_ENDPOINT, "items": _PORT}
_LABELS = {
    "type": "object",
    "maxProperties": MAX_LABELS,
    "propertyNames": _pattern(_LABEL_KEY),
    "additionalProperties": _LABEL,
}
_SERVICE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["namespace", "name"],
    "properties": {"namespace": _DNS, "name": _SERVICE_NAME},
}
_TIME = {"type": "number", "minimum": 0, "maximum": 1e11}
_TOKEN_TTL = {"type": "number", "minimum": MIN_TOKEN_TTL, "maximum": MAX_TOKEN_TTL}
_PEM = {"type": "string", "description": "PEM; one that does not parse is 422"}


def _target(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A failover target naming at least ``name``."""
    return {"required": [name], "properties": {name: {**schema, "minLength": 1}}}


SCHEMAS: dict[str, Any] = {
    "Locality": _LOCALITY,
    "Cluster": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "locality"],
        "properties": {
            "name": _DNS,
            "locality": {"$ref": "#/components/schemas/Locality"},
            "networkMode": {"type": "string", "enum": [m.value for m in NetworkMode]},
            "labels": _LABELS,
            "zones": {"type": "array", "maxItems": MAX_ZONES - 1, "items": _LABEL},
        },
    },
    "Workload": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "namespace", "serviceAccount", "address", "locality"],
        "properties": {
            "name": _DNS,
            "namespace": _DNS,
            "serviceAccount": _DNS,
            "address": _IP,
            "locality": {"$ref": "#/components/schemas/Locality"},
            "ports": _PORTS,
            "labels": _LABELS,
            "service": {"anyOf": [_SERVICE_NAME, {"type": "string", "maxLength": 0}]},
        },
    },
    "Endpoint": {
        "type": "object",
        "additionalProperties": False,
        "required": ["address", "locality"],
        "properties": {
            "address": _IP,
            "ports": _PORTS,
            "locality": {"$ref": "#/components/schemas/Locality"},
            "ready": {"type": "boolean"},
            "serving": {"type": "boolean"},
            "terminating": {"type": "boolean"},
            "weight": {"type": "integer", "minimum": 0, "maximum": MAX_WEIGHT},
            "hostname": {"anyOf": [_DNS, {"type": "string", "maxLength": 0}]},
        },
    },
    "EndpointSet": {
        "type": "object",
        "additionalProperties": False,
        "required": ["service", "source", "generation"],
        "properties": {
            "service": _SERVICE,
            "source": _SOURCE,
            "generation": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
            "shard": {"type": "integer", "minimum": 0, "maximum": MAX_SHARDS - 1},
            "endpoints": {
                "type": "array",
                "maxItems": MAX_ENDPOINTS_PER_SET,
                "items": {"$ref": "#/components/schemas/Endpoint"},
            },
            "ports": _PORTS,
            "stale": {"type": "boolean"},
            "changedAt": _TIME,
            "staleSince": _TIME,
            "headless": {"type": "boolean"},
            "sessionAffinity": {"type": "string", "enum": [a.value for a in SessionAffinity]},
            "sessionAffinityTimeoutSeconds": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_AFFINITY_TIMEOUT,
            },
            "exportedAt": _TIME,
        },
    },
    "EndpointSetDelta": {
        "type": "object",
        "additionalProperties": False,
        "required": ["baseGeneration", "fields"],
        "properties": {
            "shard": {"type": "integer", "minimum": 0, "maximum": MAX_SHARDS - 1},
            "baseGeneration": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
            "fields": {
                "type": "object",
                "additionalProperties": False,
                "required": ["generation"],
                "properties": {
                    "generation": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                    "ports": _PORTS,
                    "changedAt": _TIME,
                    "headless": {"type": "boolean"},
                    "sessionAffinity": {
                        "type": "string",
                        "enum": [a.value for a in SessionAffinity],
                    },
                    "sessionAffinityTimeoutSeconds": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": MAX_AFFINITY_TIMEOUT,
                    },
                    "exportedAt": _TIME,
                },
            },
            "endpoints": {
                "type": "array",
                "maxItems": MAX_ENDPOINTS_PER_SET,
                "items": {
                    "type": "array",
                    "minItems": 3,
                    "maxItems": 3,
                    "prefixItems": [
                        {"type": "integer", "minimum": 0, "maximum": MAX_ENDPOINTS_PER_SET},
                        {"type": "integer", "minimum": 0, "maximum": MAX_ENDPOINTS_PER_SET},
                        {
                            "type": "array",
                            "maxItems": MAX_ENDPOINTS_PER_SET,
                            "items": {"$ref": "#/components/schemas/Endpoint"},
                        },
                    ],
                },
            },
        },
    },
    "Heartbeat": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"appliedRevision": {"type": "integer", "minimum": 0, "maximum": 2**62}},
    },
    "TrafficPolicy": {
        "type": "object",
        "additionalProperties": False,
        "required": ["service"],
        "properties": {
            "service": _SERVICE,
            "failover": {
                "type": "array",
                "maxItems": MAX_FAILOVER_TARGETS,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"region": _LABEL, "zone": _LABEL, "cluster": _DNS},
                    "anyOf": [
                        _target("region", _LABEL),
                        _target("zone", _LABEL),
                        _target("cluster", _DNS),
                    ],
                },
            },
            "minHealthy": {"type": "integer", "minimum": 0, "maximum": MAX_ENDPOINTS_PER_SET},
            "failbackHoldDownSeconds": {"type": "number", "minimum": 0, "maximum": 86400},
            "weights": {
                "type": "object",
                "propertyNames": _pattern(_SOURCE_TEXT),
                "additionalProperties": {"type": "integer", "minimum": 0, "maximum": MAX_WEIGHT},
            },
            "staleGraceSeconds": {
                "anyOf": [
                    {"type": "number", "minimum": 0, "maximum": MAX_GRACE_SECONDS},
                    {"type": "null"},
                ]
            },
        },
    },
    "AddCluster": {
        "type": "object",
        "additionalProperties": False,
        "required": ["record"],
        "properties": {
            "record": {"$ref": "#/components/schemas/Cluster"},
            "tokenTtlSeconds": _TOKEN_TTL,
        },
    },
    "AddWorkload": {
        "type": "object",
        "additionalProperties": False,
        "required": ["record"],
        "properties": {
            "record": {"$ref": "#/components/schemas/Workload"},
            "tokenTtlSeconds": _TOKEN_TTL,
        },
    },
    "TokenRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"tokenTtlSeconds": _TOKEN_TTL},
    },
    "Join": {
        "type": "object",
        "additionalProperties": False,
        "required": ["token", "csr"],
        "properties": {"token": {"type": "string"}, "csr": _PEM},
    },
    "Renew": {
        "type": "object",
        "additionalProperties": False,
        "required": ["csr"],
        "properties": {"csr": _PEM},
    },
    "IntermediateRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["csr"],
        "properties": {
            "csr": _PEM,
            "lifetimeSeconds": {"type": "number", "minimum": 3600, "maximum": 31536000},
        },
    },
    "WorkloadCertRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["csr", "namespace", "serviceAccount"],
        "properties": {"csr": _PEM, "namespace": _DNS, "serviceAccount": _DNS},
    },
    "RotateRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "certificate": _PEM,
            "key": _PEM,
            "csr": {**_PEM, "description": "the caller's credential, under the new root"},
        },
        "dependentRequired": {"certificate": ["key"], "key": ["certificate"]},
    },
    "AdminRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "csr"],
        "properties": {"name": _DNS, "csr": _PEM},
    },
    "Ack": {
        "type": "object",
        "additionalProperties": False,
        "required": ["version"],
        "properties": {"version": {"type": "integer", "minimum": 1}},
    },
    "Error": {
        "type": "object",
        "required": ["code", "reason", "message"],
        "properties": {
            "code": {"type": "integer"},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "field": {"type": "string"},
        },
    },
}

# Path parameters: what each route's own validator takes.
_PARAMETER_SCHEMAS = {"namespace": _DNS, "name": _DNS, "source": _SOURCE}
_SERVICE_PATHS = ("/v1/services/", "/v1/policies/", "/v1/dashboard/route/")


def _query(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


_QUERIES: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("GET", "/v1/dashboard"): [
        _query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9 - 1}),
        _query("limit", {"type": "integer", "minimum": 0, "maximum": DASHBOARD_PAGE_LIMIT}),
        _query("filter", {"type": "string", "maxLength": 253}),
    ],
    ("GET", "/v1/dashboard/route/{namespace}/{name}"): [_query("from", _DNS, required=True)],
    ("DELETE", "/v1/services/{namespace}/{name}/sources/{source}"): [
        _query("shard", {"type": "integer", "minimum": 0, "maximum": MAX_SHARDS - 1})
    ],
}


def _parameter(route_path: str, name: str) -> dict[str, Any]:
    if name == "name" and route_path.startswith(_SERVICE_PATHS):
        return _SERVICE_NAME
    return _PARAMETER_SCHEMAS[name]


_STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted: under way"}


def document(routes: list[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{route.method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', route.path)}",
            "responses": {
                str(route.status): {"description": _STATUS_TEXT[route.status]},
                "4XX": {
                    "description": "Refused; nothing was written",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
                "503": {
                    "description": "The store is unavailable; retry after Retry-After",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
        if route.access.value != "open":
            operation["security"] = [{"mutualTLS": []}]
        params = re.findall(r"{(\w+)}", route.path)
        if params:
            operation["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": _parameter(route.path, p)}
                for p in params
            ]
        queries = _QUERIES.get((route.method, route.path))
        if queries:
            operation["parameters"] = operation.get("parameters", []) + queries
        if route.path == "/v1/watch":
            operation["parameters"] = [
                {"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "patches", "in": "query", "schema": {"type": "boolean"}},
            ]
            operation["responses"]["200"] = {
                "description": "Newline-delimited JSON events (PUT, DELETE, PATCH with "
                "patches=true, BOOKMARK, ERROR)",
                "content": {"application/x-ndjson": {"schema": {"type": "object"}}},
            }
        if route.path == "/":
            operation["responses"]["200"] = {
                "description": "An HTML page",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        if route.body:
            operation["requestBody"] = {
                "required": route.body_required,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{route.body}"}}
                },
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "federation registry",
            "version": "1",
            "description": "Clusters, VMs, exported services and their endpoints, "
            "traffic policies, and the trust domain. Agents authenticate with "
            "mutual TLS; errors are JSON bodies.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"mutualTLS": {"type": "mutualTLS"}},
        },
    }
