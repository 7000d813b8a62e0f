"""deploy/ stays true to the code: the CRDs are the agent's own, every
flag the Deployment passes exists, every file a kustomization names is
there, and the overlay's patch replaces the flag it means to."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from agents.cluster.kube import MCS_CRDS
from federation.cli import build_parser
from tests.integration.test_sim_kubeapi import find_kubectl

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def agent_deployment() -> dict[str, Any]:
    return next(
        d for d in documents(DEPLOY / "cluster/base/agent.yaml") if d["kind"] == "Deployment"
    )


def test_the_crds_are_the_agents_own() -> None:
    shipped = {
        d["metadata"]["name"]: d["spec"] for d in documents(DEPLOY / "crds/multicluster.yaml")
    }
    assert shipped == {c["metadata"]["name"]: c["spec"] for c in MCS_CRDS}


def test_every_kustomization_names_files_that_exist() -> None:
    kustomizations = sorted(DEPLOY.rglob("kustomization.yaml"))
    assert len(kustomizations) == 4
    for path in kustomizations:
        for resource in yaml.safe_load(path.read_text())["resources"]:
            assert (path.parent / resource).exists(), (path, resource)


def test_the_deployment_passes_flags_fedctl_knows() -> None:
    container = agent_deployment()["spec"]["template"]["spec"]["containers"][0]
    args = [a.replace("$(FEDERATION_REGISTRY)", "https://r:8443") for a in container["args"]]
    parsed = build_parser().parse_args(args)
    assert parsed.kubeconfig is None  # in the pod: the service account
    assert parsed.cert_secret == "federation-system/federation-agent-credential"
    names = {e["name"] for e in container["env"]}
    assert {"FEDERATION_REGISTRY", "FEDERATION_JOIN_TOKEN"} <= names


def test_the_deployment_runs_as_the_account_rbac_grants() -> None:
    pod = agent_deployment()["spec"]["template"]["spec"]
    bindings = [
        d for d in documents(DEPLOY / "cluster/base/rbac.yaml") if d["kind"].endswith("RoleBinding")
    ]
    assert bindings
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": pod["serviceAccountName"],
             "namespace": "federation-system"}
        ]  # fmt: skip
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_gateway_overlay_replaces_the_network_mode() -> None:
    overlay = yaml.safe_load((DEPLOY / "cluster/overlays/gateway/kustomization.yaml").read_text())
    (operation,) = yaml.safe_load(overlay["patches"][0]["patch"])
    index = int(operation["path"].rsplit("/", 1)[1])
    args = agent_deployment()["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[index] == "--network-mode=flat"
    assert operation["value"] == "--network-mode=gateway"


def test_kustomize_builds_both_overlays() -> None:
    for overlay, mode in (("flat", "flat"), ("gateway", "gateway")):
        built = subprocess.run(
            [find_kubectl(), "kustomize", str(DEPLOY / "cluster/overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        objects = [d for d in yaml.safe_load_all(built.stdout) if d]
        kinds = sorted({o["kind"] for o in objects})
        assert kinds == [
            "ClusterRole", "ClusterRoleBinding", "ConfigMap", "CustomResourceDefinition",
            "Deployment", "Namespace", "Role", "RoleBinding", "ServiceAccount",
        ]  # fmt: skip
        deployment = next(o for o in objects if o["kind"] == "Deployment")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--network-mode={mode}" in args
