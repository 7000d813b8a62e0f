"""deploy/ stays true to the code: the CRDs are the agent's own, every
flag the Deployment passes exists, every file a kustomization names is
there, and the overlay's patch replaces the flag it means to."""

from __future__ import annotations

import base64
import shlex
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from agents.cluster.crds import MCS_CRDS
from federation.cli import build_parser
from federation.store import parse_endpoints
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
    assert len(kustomizations) == 6
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


def build(path: Path) -> list[dict[str, Any]]:
    built = subprocess.run(
        [find_kubectl(), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [d for d in yaml.safe_load_all(built.stdout) if d]


def validate(objects: list[dict[str, Any]]) -> None:
    """Every object against kube-apiserver 1.26's OpenAPI schema, offline and
    strict (an unknown field is an error, as ``kubectl apply`` reports it)."""
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, "1.26.0", strict=True)
        except kubernetes_validate.ValidationError as err:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            raise AssertionError(f"{name}: {err.message} at {list(err.path)}") from None


def test_every_kustomization_builds_and_validates_against_the_kubernetes_schema() -> None:
    for path in sorted(DEPLOY.rglob("kustomization.yaml")):
        validate(build(path.parent))


def test_the_validation_catches_a_field_kubernetes_does_not_know() -> None:
    (deployment,) = [o for o in build(DEPLOY / "registry/base") if o["kind"] == "Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(AssertionError, match="readinesProbe"):
        validate([deployment])


def registry_objects(overlay: str = "base") -> dict[str, dict[str, Any]]:
    path = DEPLOY / "registry" / ("base" if overlay == "base" else f"overlays/{overlay}")
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in build(path)}


def test_the_registry_runs_three_replicas_the_cli_understands() -> None:
    objects = registry_objects()
    deployment = objects["Deployment/federation-registry"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert pod["affinity"]["podAntiAffinity"]
    assert objects["PodDisruptionBudget/federation-registry"]["spec"]["minAvailable"] == 2
    container = pod["containers"][0]
    args = [
        a.replace("$(FEDERATION_STORE)", "etcd://e:2379").replace("$(POD_NAME)", "registry-0")
        for a in container["args"]
    ]
    parsed = build_parser().parse_args(args)
    assert parsed.store == "etcd://e:2379" and parsed.replica == "registry-0"
    assert parsed.encryption_key_file.startswith("/etc/federation/encryption/")
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"federation-registry-etcd", "federation-registry-encryption"}
    env = {e["name"]: e["valueFrom"] for e in container["env"]}
    assert env["FEDERATION_STORE"]["secretKeyRef"]["name"] == "federation-registry-etcd"
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "https", "scheme": "HTTPS"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/lib/federation" in mounted and "/tmp" not in mounted  # keys load from memory
    services = [o for o in objects.values() if o["kind"] == "Service"]
    assert sorted(s["metadata"]["name"] for s in services) == [
        "federation-registry", "federation-registry-metrics"
    ]  # fmt: skip


def test_the_etcd_overlay_runs_three_members_the_store_url_names() -> None:
    objects = registry_objects("etcd")
    members = objects["StatefulSet/federation-etcd"]
    assert members["spec"]["replicas"] == 3
    store = base64.b64decode(objects["Secret/federation-registry-etcd"]["data"]["store"]).decode()
    endpoints = parse_endpoints(store)
    assert [host for host, _ in endpoints] == [
        f"federation-etcd-{i}.federation-etcd" for i in range(3)
    ]
    command = members["spec"]["template"]["spec"]["containers"][0]["command"]
    initial = next(c for c in command if c.startswith("--initial-cluster="))
    peers = dict(p.split("=", 1) for p in initial.split("=", 1)[1].split(","))
    assert peers == {
        f"federation-etcd-{i}": f"http://federation-etcd-{i}.federation-etcd:2380" for i in range(3)
    }


def test_the_systemd_unit_runs_a_replica_the_cli_understands() -> None:
    unit = (DEPLOY / "registry/systemd/federation-registry.service").read_text()
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "registry/systemd/federation-registry.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    (exec_line,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    script = shlex.split(exec_line.split(" -c ", 1)[1])[0].removeprefix("exec ")
    for name, value in env.items():
        script = script.replace(f'"${name}"', shlex.quote(value)).replace(f"${name}", value)
    words = shlex.split(script.replace("%H", "vm-1"))
    assert words[0] == "fedctl"
    parsed = build_parser().parse_args(words[1:])
    assert parsed.store.startswith("etcd://") and "cacert=" in parsed.store
    assert parse_endpoints(parsed.store)[0] == ("10.0.0.11", 2379)
    assert parsed.replica == "vm-1"
    assert parsed.hostname == ["registry.federation.example", "10.0.0.21"]


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
            "Deployment", "Namespace", "Role", "RoleBinding", "Service", "ServiceAccount",
        ]  # fmt: skip
        deployment = next(o for o in objects if o["kind"] == "Deployment")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--network-mode={mode}" in args


def test_the_coredns_rbac_validates_and_grants_what_the_plugin_reads() -> None:
    objects = documents(DEPLOY / "coredns/rbac.yaml")
    for obj in objects:
        kubernetes_validate.validate(obj, "1.26.0", strict=True)
    (role,) = [o for o in objects if o["kind"] == "ClusterRole"]
    granted = {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert granted == {("multicluster.x-k8s.io", "serviceimports"),
                       ("discovery.k8s.io", "endpointslices")}  # fmt: skip
    assert "multicluster clusterset.local" in (DEPLOY / "coredns/Corefile.snippet").read_text()
