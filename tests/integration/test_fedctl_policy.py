"""Policies as objects, as a GitOps job uses them: ``fedctl policy apply``
on a folder, ``get``, ``list``, ``diff``, ``delete``; every document checked
before any is applied, errors naming file, document and field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.integration.test_fedctl_registry import fedctl, one_line_error, served  # noqa: F401

CART = """\
apiVersion: federation.io/v1alpha1
kind: TrafficPolicy
metadata: {namespace: shop, name: cart}
spec:
  failover: [{region: eu}, {region: us}]
  minHealthy: 2
  failbackHoldDownSeconds: 30
"""
PAY = """\
apiVersion: federation.io/v1alpha1
kind: TrafficPolicy
metadata: {namespace: shop, name: pay}
spec:
  weights: {"cluster:east": 90, "cluster:ghost": 10}
---
apiVersion: federation.io/v1alpha1
kind: TrafficPolicy
metadata: {namespace: shop, name: search}
spec: {minHealthy: 1}
"""


def names(env: dict[str, str]) -> list[str]:
    listed = json.loads(fedctl("policy", "list", "-o", "json", env=env).stdout)
    return [f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in listed]


def test_a_folder_of_policies_is_applied_read_diffed_and_deleted(
    served: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "cart.yaml").write_text(CART)
    (folder / "pay.yaml").write_text(PAY)
    (folder / "README.txt").write_text("not a policy")
    applied = fedctl("policy", "apply", "-f", str(folder), env=served)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("applied") == 3
    warnings = applied.stderr.splitlines()
    assert any("no cluster or VM exports shop/cart yet" in w for w in warnings), warnings
    assert any("cluster ghost is not registered" in w for w in warnings), warnings
    assert any("weights" in w and "kube-proxy" in w for w in warnings), warnings
    assert names(served) == ["shop/cart", "shop/pay", "shop/search"]

    got = yaml.safe_load(fedctl("policy", "get", "shop/cart", env=served).stdout)
    assert got["kind"] == "TrafficPolicy" and got["metadata"] == {
        "namespace": "shop",
        "name": "cart",
    }
    assert got["spec"]["minHealthy"] == 2
    assert [f["region"] for f in got["spec"]["failover"]] == ["eu", "us"]
    table = fedctl("policy", "list", env=served).stdout.splitlines()
    assert table[0].split()[:2] == ["NAMESPACE", "NAME"] and len(table) == 4

    assert fedctl("policy", "diff", "-f", str(folder), env=served).returncode == 0
    (folder / "cart.yaml").write_text(CART.replace("minHealthy: 2", "minHealthy: 3"))
    changed = fedctl("policy", "diff", "-f", str(folder), env=served)
    assert changed.returncode == 1
    assert "-  minHealthy: 2" in changed.stdout and "+  minHealthy: 3" in changed.stdout

    # From stdin, as a pipeline would.
    piped = subprocess.run(
        [sys.executable, "-m", "federation.cli", "policy", "apply", "-f", "-"],
        input=(folder / "cart.yaml").read_text(), capture_output=True, text=True, timeout=60,
        env={**os.environ, **served}, check=False,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert fedctl("policy", "diff", "-f", str(folder), env=served).returncode == 0

    assert fedctl("policy", "delete", "-f", str(folder / "pay.yaml"), env=served).returncode == 0
    assert fedctl("policy", "delete", "shop/cart", env=served).returncode == 0
    assert names(served) == []
    one_line_error(fedctl("policy", "get", "shop/cart", env=served), "no traffic policy")


def test_one_bad_document_applies_nothing_and_is_named(
    served: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "a.yaml").write_text(CART)
    (folder / "b.yaml").write_text(PAY.replace("spec: {minHealthy: 1}", "spec: {minHealty: 1}"))
    one_line_error(
        fedctl("policy", "apply", "-f", str(folder), env=served),
        "b.yaml (document 2)", "spec.minHealty",
    )  # fmt: skip
    assert names(served) == []  # not even a.yaml
    (folder / "b.yaml").write_text(CART.replace("kind: TrafficPolicy", "kind: Policy"))
    one_line_error(fedctl("policy", "apply", "-f", str(folder), env=served), "kind")
    (folder / "b.yaml").write_text(CART.replace("name: cart", "name: Bad_Name"))
    one_line_error(fedctl("policy", "apply", "-f", str(folder), env=served), "metadata.name")
    one_line_error(fedctl("policy", "delete", env=served), "one of them")
