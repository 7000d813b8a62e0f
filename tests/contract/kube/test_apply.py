"""Server-side apply and field ownership, as kube-apiserver 1.26 does them.

Through kubernetes_asyncio (PATCH with application/apply-patch+yaml) and
through ``kubectl apply --server-side``; both pass unchanged against a real
cluster (FEDERATION_TEST_KUBECONFIG).
"""

from __future__ import annotations

import json
from typing import Any

from tests.contract.kube.conftest import Kube
from tests.contract.kube.test_kube_contract import expect_status
from tests.contract.kube.test_kubectl import kubectl, manifest, ok

APPLY = "application/apply-patch+yaml"


def applied(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}], **spec},
    }  # fmt: skip


async def apply(kube: Kube, body: dict[str, Any], manager: str, *, force: bool = False) -> Any:
    return await kube.core.patch_namespaced_service(
        body["metadata"]["name"], kube.namespace, body, field_manager=manager,
        force=force or None, _content_type=APPLY,
    )  # fmt: skip


def owners(obj: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e.manager, e.operation): e.fields_v1 for e in obj.metadata.managed_fields or []}


async def test_apply_creates_and_records_the_managers_fields(kube: Kube) -> None:
    created = await apply(kube, applied("web", selector={"app": "web"}), "deployer")
    assert created.spec.cluster_ip  # a real object, allocated as any other
    fields = owners(created)[("deployer", "Apply")]
    port = fields["f:spec"]["f:ports"]['k:{"port":80,"protocol":"TCP"}']
    assert {".", "f:port", "f:targetPort"} <= set(port)
    assert fields["f:spec"]["f:selector"] == {}  # atomic in kube's schema: one field


async def test_an_update_owns_what_it_changed(kube: Kube) -> None:
    await apply(kube, applied("web"), "deployer")
    labelled = await kube.core.patch_namespaced_service(
        "web", kube.namespace, {"metadata": {"labels": {"tier": "web"}}}, field_manager="labeller"
    )
    assert owners(labelled)[("labeller", "Update")] == {"f:metadata": {"f:labels": {"f:tier": {}}}}


async def test_a_conflicting_apply_names_the_owner_and_force_takes_the_field(kube: Kube) -> None:
    await apply(kube, applied("web"), "deployer")
    err = await expect_status(409, apply(kube, applied("web", ports=[
        {"port": 80, "targetPort": 9090}]), "canary"))  # fmt: skip
    status = json.loads(err.body)
    assert status["reason"] == "Conflict"
    assert 'conflict with "deployer"' in status["message"]
    cause = status["details"]["causes"][0]
    assert cause["reason"] == "FieldManagerConflict"
    assert cause["field"] == '.spec.ports[port=80,protocol="TCP"].targetPort'
    forced = await apply(
        kube, applied("web", ports=[{"port": 80, "targetPort": 9090}]), "canary", force=True
    )
    assert forced.spec.ports[0].target_port == 9090
    deployer = owners(forced)[("deployer", "Apply")]
    assert "f:targetPort" not in deployer["f:spec"]["f:ports"]['k:{"port":80,"protocol":"TCP"}']


async def test_an_apply_that_drops_a_field_removes_it_unless_another_owns_it(kube: Kube) -> None:
    both = applied("web")
    both["metadata"]["labels"] = {"app": "web", "tier": "a"}
    await apply(kube, both, "deployer")
    tier = applied("web")
    tier["metadata"]["labels"] = {"tier": "a"}
    await apply(kube, tier, "other")  # shares tier
    after = await apply(kube, applied("web"), "deployer")
    assert after.metadata.labels == {"tier": "a"}  # app went; tier is still other's


async def test_an_apply_with_the_same_values_shares_the_fields(kube: Kube) -> None:
    await apply(kube, applied("web"), "deployer")
    shared = await apply(kube, applied("web"), "mirror")
    assert ("deployer", "Apply") in owners(shared) and ("mirror", "Apply") in owners(shared)


async def test_apply_needs_a_field_manager(kube: Kube) -> None:
    await expect_status(400, kube.core.patch_namespaced_service(
        "web", kube.namespace, applied("web"), _content_type=APPLY))  # fmt: skip


async def test_kubectl_apply_server_side_and_force_conflicts(kube: Kube) -> None:
    assert "serverside-applied" in await ok(
        kube, "apply", "--server-side", "-f", "-", stdin=manifest("web")
    )
    moved = manifest("web").replace("8080", "9090")
    refused = await kubectl(
        kube, "apply", "--server-side", "--field-manager=canary", "-f", "-", stdin=moved
    )
    assert refused.code != 0 and 'conflict with "kubectl"' in refused.err
    await ok(kube, "apply", "--server-side", "--field-manager=canary", "--force-conflicts",
             "-f", "-", stdin=moved)  # fmt: skip
    shown = json.loads(await ok(kube, "get", "service", "web", "-o", "json"))
    assert shown["spec"]["ports"][0]["targetPort"] == 9090
    dry = await ok(kube, "apply", "--server-side", "--dry-run=server", "--force-conflicts",
                   "-f", "-", stdin=manifest("web"))  # fmt: skip
    assert "serverside-applied (server dry run)" in dry
    again = json.loads(await ok(kube, "get", "service", "web", "-o", "json"))
    assert again["spec"]["ports"][0]["targetPort"] == 9090
