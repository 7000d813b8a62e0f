"""The emulator's RBAC decides as kube-apiserver's authorizer does, over
the manifests deploy/ ships."""

from __future__ import annotations

import pytest

from federation.sim.kube.errors import KubeError
from federation.sim.kube.rbac import Grant, Request
from federation.sim.world import RBAC

GRANT = Grant.from_manifests([RBAC], "federation-system", "federation-agent")


def allowed(verb: str, path: str) -> bool:
    request = Request.of(verb, path)
    assert request is not None
    return GRANT.allows(request)


def test_cluster_role_applies_everywhere_and_roles_in_their_namespace_only() -> None:
    assert allowed("watch", "/apis/discovery.k8s.io/v1/endpointslices")
    assert allowed("create", "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices")
    assert allowed("update", "/apis/coordination.k8s.io/v1/namespaces/federation-system/leases/x")
    assert not allowed("update", "/apis/coordination.k8s.io/v1/namespaces/shop/leases/x")
    assert not allowed("delete", "/api/v1/nodes/n1")
    assert not allowed("list", "/api/v1/pods")


def test_resource_names_limit_get_and_update_but_not_create() -> None:
    secrets = "/api/v1/namespaces/istio-system/secrets"
    assert allowed("get", f"{secrets}/cacerts") and allowed("update", f"{secrets}/cacerts")
    assert not allowed("get", f"{secrets}/istio-ca-secret")
    assert not allowed("list", secrets)
    assert allowed("create", secrets)
    assert not allowed("get", "/api/v1/namespaces/shop/secrets/db-password")


def test_a_subresource_needs_its_own_rule_and_other_accounts_get_nothing() -> None:
    assert not allowed("update", "/api/v1/namespaces/shop/services/echo/status")
    other = Grant.from_manifests([RBAC], "default", "federation-agent")
    request = Request.of("list", "/api/v1/services")
    assert request is not None and not other.allows(request)
    assert Request.of("get", "/apis") is None  # discovery is not a resource


def test_forbidden_is_403_worded_as_the_apiserver_words_it() -> None:
    request = Request.of("delete", "/api/v1/nodes/n1")
    assert request is not None
    with pytest.raises(KubeError) as refused:
        GRANT.check(request)
    assert refused.value.code == 403
    assert refused.value.status()["message"] == (
        'nodes "n1" is forbidden: User "system:serviceaccount:federation-system:'
        'federation-agent" cannot delete resource "nodes" in API group "" at the cluster scope'
    )
