"""What kubectl relies on beyond the agents' verbs: the OpenAPI documents,
server-side field validation (unknown fields are errors, warnings or dropped)
and server-side dry-run.

Written against kubernetes_asyncio only, so it passes unchanged against the
emulator and a real cluster (FEDERATION_TEST_KUBECONFIG).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.contract.kube.conftest import Kube
from tests.contract.kube.test_kube_contract import expect_status, served_crd, service


async def get_json(kube: Kube, path: str) -> Any:
    """GET a non-resource path (``/openapi/...``) as JSON."""
    response = await kube.api.call_api(
        path, "GET", header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"], _preload_content=False,
    )  # fmt: skip
    return json.loads(await response.read())


async def test_openapi_v3_lists_a_document_per_group_version(kube: Kube) -> None:
    root = await get_json(kube, "/openapi/v3")
    for gv in ("api/v1", "apis/discovery.k8s.io/v1", "apis/coordination.k8s.io/v1"):
        assert root["paths"][gv]["serverRelativeURL"].startswith(f"/openapi/v3/{gv}?hash=")
    core = await get_json(kube, root["paths"]["api/v1"]["serverRelativeURL"])
    assert core["openapi"].startswith("3.")
    schema = core["components"]["schemas"]["io.k8s.api.core.v1.Service"]
    assert {"group": "", "version": "v1", "kind": "Service"} in schema[
        "x-kubernetes-group-version-kind"
    ]
    ports = core["components"]["schemas"]["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"]
    assert ports["x-kubernetes-patch-merge-key"] == "port"
    # kubectl validates on the server when the PATCH operation takes fieldValidation.
    item = core["paths"]["/api/v1/namespaces/{namespace}/services/{name}"]
    assert "fieldValidation" in {p["name"] for p in item["patch"]["parameters"]}
    assert item["patch"]["x-kubernetes-group-version-kind"]["kind"] == "Service"


async def test_openapi_v2_defines_the_kinds_the_agents_write(kube: Kube) -> None:
    doc = await get_json(kube, "/openapi/v2")
    assert doc["swagger"] == "2.0"
    definitions = doc["definitions"]
    endpoints = definitions["io.k8s.api.discovery.v1.EndpointSlice"]["properties"]["endpoints"]
    assert endpoints["items"]["$ref"] == "#/definitions/io.k8s.api.discovery.v1.Endpoint"
    assert "io.k8s.api.coordination.v1.Lease" in definitions
    assert "/api/v1/namespaces/{namespace}/services" in doc["paths"]


async def test_strict_field_validation_refuses_unknown_fields(kube: Kube) -> None:
    body = service("strict")
    body["spec"]["colour"] = "blue"
    body["spec"]["ports"][0]["weight"] = 3
    err = await expect_status(
        400, kube.core.create_namespaced_service(kube.namespace, body, field_validation="Strict")
    )
    message = json.loads(err.body)["message"]
    assert 'unknown field "spec.colour"' in message
    assert 'unknown field "spec.ports[0].weight"' in message
    await expect_status(404, kube.core.read_namespaced_service("strict", kube.namespace))


async def test_unknown_fields_are_dropped_with_a_warning_by_default(kube: Kube) -> None:
    body = service("lax")
    body["spec"]["colour"] = "blue"
    _, status, headers = await kube.core.create_namespaced_service_with_http_info(
        kube.namespace, body
    )
    assert status == 201
    assert 'unknown field \\"spec.colour\\"' in " ".join(headers.getall("Warning", []))
    stored = await get_json(kube, f"/api/v1/namespaces/{kube.namespace}/services/lax")
    assert "colour" not in stored["spec"]
    _, _, quiet = await kube.core.create_namespaced_service_with_http_info(
        kube.namespace, service("quiet") | {"extra": 1}, field_validation="Ignore"
    )
    assert not quiet.getall("Warning", [])


@pytest.fixture
async def widgets(kube: Kube) -> AsyncIterator[tuple[str, str, str]]:
    """A CRD of our own with a structural schema, removed afterwards."""
    suffix = secrets.token_hex(3)
    group, plural = "contract.federation.io", f"widgets{suffix}"
    definition = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": plural, "singular": f"widget{suffix}", "kind": f"Widget{suffix}",
                      "listKind": f"Widget{suffix}List"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer"},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    }},
                }}},
            }],
        },
    }  # fmt: skip
    await served_crd(kube, definition)
    try:
        yield group, plural, f"Widget{suffix}"
    finally:
        await client.ApiextensionsV1Api(kube.api).delete_custom_resource_definition(
            f"{plural}.{group}"
        )


async def test_a_crds_schema_prunes_and_refuses_what_it_does_not_declare(
    kube: Kube, widgets: tuple[str, str, str]
) -> None:
    group, plural, kind = widgets
    body = {
        "apiVersion": f"{group}/v1", "kind": kind, "metadata": {"name": "w"},
        "spec": {"size": 3, "colour": "blue", "labels": {"a": "b"}, "free": {"any": {"x": 1}}},
    }  # fmt: skip
    err = await expect_status(400, kube.custom.create_namespaced_custom_object(
        group, "v1", kube.namespace, plural, body, field_validation="Strict"
    ))  # fmt: skip
    assert 'unknown field "spec.colour"' in json.loads(err.body)["message"]
    created = await kube.custom.create_namespaced_custom_object(
        group, "v1", kube.namespace, plural, body
    )
    assert created["spec"] == {"size": 3, "labels": {"a": "b"}, "free": {"any": {"x": 1}}}


async def test_dry_run_answers_what_would_be_stored_and_stores_nothing(kube: Kube) -> None:
    ns = kube.namespace
    dry = await kube.core.create_namespaced_service(ns, service("dry"), dry_run="All")
    assert dry.metadata.uid and dry.spec.cluster_ip
    await expect_status(404, kube.core.read_namespaced_service("dry", ns))
    real = await kube.core.create_namespaced_service(ns, service("real"))
    labelled = await kube.core.patch_namespaced_service(
        "real", ns, {"metadata": {"labels": {"tier": "web"}}}, dry_run="All"
    )
    assert labelled.metadata.labels == {"tier": "web"}
    body = kube.api.sanitize_for_serialization(real)
    body["metadata"]["labels"] = {"a": "b"}
    replaced = await kube.core.replace_namespaced_service("real", ns, body, dry_run="All")
    assert replaced.metadata.labels == {"a": "b"}
    await kube.core.delete_namespaced_service("real", ns, dry_run="All")
    stored = await kube.core.read_namespaced_service("real", ns)
    assert stored.metadata.resource_version == real.metadata.resource_version
    assert not stored.metadata.labels
    err = await expect_status(
        400, kube.core.create_namespaced_service(ns, service("bad"), dry_run="Some")
    )
    assert "dryRun" in json.loads(err.body)["message"]
