"""The OpenAPI 3.1 document of the registry, built from the route table so it
cannot drift from what is served."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from federation.api.http import Route

_LABEL = {"type": "string", "maxLength": 63}
_DNS = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
_LOCALITY = {
    "type": "object",
    "required": ["region", "zone"],
    "properties": {"region": _LABEL, "zone": _LABEL, "cluster": _LABEL, "network": _LABEL},
}
_PORT = {
    "type": "object",
    "required": ["port"],
    "properties": {
        "name": _LABEL,
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "protocol": {"type": "string", "enum": ["TCP", "UDP", "SCTP"]},
    },
}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_SERVICE = {
    "type": "object",
    "required": ["namespace", "name"],
    "properties": {"namespace": _DNS, "name": _DNS},
}

SCHEMAS: dict[str, Any] = {
    "Locality": _LOCALITY,
    "Cluster": {
        "type": "object",
        "required": ["name", "locality"],
        "properties": {
            "name": _DNS,
            "locality": {"$ref": "#/components/schemas/Locality"},
            "networkMode": {"type": "string", "enum": ["flat", "gateway"]},
            "labels": _LABELS,
        },
    },
    "Workload": {
        "type": "object",
        "required": ["name", "namespace", "serviceAccount", "address", "locality"],
        "properties": {
            "name": _DNS,
            "namespace": _DNS,
            "serviceAccount": _DNS,
            "address": {"type": "string"},
            "locality": {"$ref": "#/components/schemas/Locality"},
            "ports": {"type": "array", "items": _PORT},
            "labels": _LABELS,
            "service": {"type": "string", "maxLength": 63},
        },
    },
    "Endpoint": {
        "type": "object",
        "required": ["address", "locality"],
        "properties": {
            "address": {"type": "string"},
            "ports": {"type": "array", "items": _PORT},
            "locality": {"$ref": "#/components/schemas/Locality"},
            "ready": {"type": "boolean"},
            "serving": {"type": "boolean"},
            "terminating": {"type": "boolean"},
            "weight": {"type": "integer", "minimum": 0},
        },
    },
    "EndpointSet": {
        "type": "object",
        "required": ["service", "source", "generation"],
        "properties": {
            "service": _SERVICE,
            "source": {"type": "string", "example": "cluster:east"},
            "generation": {"type": "integer", "minimum": 0},
            "endpoints": {
                "type": "array",
                "maxItems": 1000,
                "items": {"$ref": "#/components/schemas/Endpoint"},
            },
            "ports": {"type": "array", "maxItems": 100, "items": _PORT},
            "stale": {"type": "boolean"},
            "changedAt": {"type": "number"},
            "staleSince": {"type": "number"},
        },
    },
    "Heartbeat": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"appliedRevision": {"type": "integer", "minimum": 0, "maximum": 2**62}},
    },
    "TrafficPolicy": {
        "type": "object",
        "required": ["service"],
        "properties": {
            "service": _SERVICE,
            "failover": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"region": _LABEL, "zone": _LABEL, "cluster": _LABEL},
                },
            },
            "minHealthy": {"type": "integer", "minimum": 0},
            "failbackHoldDownSeconds": {"type": "number", "minimum": 0},
            "weights": {"type": "object", "additionalProperties": {"type": "integer"}},
            "staleGraceSeconds": {"type": ["number", "null"], "minimum": 0},
        },
    },
    "AddCluster": {
        "type": "object",
        "required": ["record"],
        "properties": {
            "record": {"$ref": "#/components/schemas/Cluster"},
            "tokenTtlSeconds": {"type": "number"},
        },
    },
    "AddWorkload": {
        "type": "object",
        "required": ["record"],
        "properties": {
            "record": {"$ref": "#/components/schemas/Workload"},
            "tokenTtlSeconds": {"type": "number"},
        },
    },
    "TokenRequest": {"type": "object", "properties": {"tokenTtlSeconds": {"type": "number"}}},
    "Join": {
        "type": "object",
        "required": ["token", "csr"],
        "properties": {"token": {"type": "string"}, "csr": {"type": "string"}},
    },
    "Renew": {"type": "object", "required": ["csr"], "properties": {"csr": {"type": "string"}}},
    "IntermediateRequest": {
        "type": "object",
        "required": ["csr"],
        "properties": {
            "csr": {"type": "string"},
            "lifetimeSeconds": {"type": "number", "minimum": 3600, "maximum": 31536000},
        },
    },
    "WorkloadCertRequest": {
        "type": "object",
        "required": ["csr", "namespace", "serviceAccount"],
        "properties": {
            "csr": {"type": "string"},
            "namespace": _DNS,
            "serviceAccount": _DNS,
        },
    },
    "RotateRequest": {
        "type": "object",
        "properties": {
            "certificate": {"type": "string"},
            "key": {"type": "string"},
            "csr": {"type": "string", "description": "the caller's credential, new root"},
        },
    },
    "AdminRequest": {
        "type": "object",
        "required": ["name", "csr"],
        "properties": {"name": _DNS, "csr": {"type": "string"}},
    },
    "Ack": {
        "type": "object",
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

_PARAMETER_SCHEMAS = {
    "namespace": _DNS,
    "name": {"type": "string", "maxLength": 63},
    "source": {"type": "string", "example": "cluster:east"},
}


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
                {"name": p, "in": "path", "required": True, "schema": _PARAMETER_SCHEMAS[p]}
                for p in params
            ]
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
