"""kind-configs/ cannot run here (no Docker); what can be checked is: the
scripts parse, the helper reads the configs, and the clusters' pod and
service ranges do not overlap (the routes up.sh adds depend on it)."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import yaml

KIND = Path(__file__).resolve().parents[2] / "kind-configs"
CLUSTERS = ("east1", "east2", "west")


def bash(script: str) -> str:
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


def test_the_scripts_parse() -> None:
    scripts = sorted(KIND.glob("*.sh"))
    assert {s.name for s in scripts} >= {"lib.sh", "conformance.sh"}, scripts
    for script in scripts:
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0 and done.stderr == "", (script, done.stderr)


def test_the_helper_reads_each_config_as_kind_does() -> None:
    for name in CLUSTERS:
        config = yaml.safe_load((KIND / f"{name}.yaml").read_text())
        assert config["name"] == name
        labels = config["nodes"][0]["labels"]
        read = bash(
            f"source {KIND}/lib.sh; field {name} podSubnet; field {name} serviceSubnet; "
            f"field {name} topology.kubernetes.io/region; field {name} topology.kubernetes.io/zone"
        ).split()
        assert read == [
            config["networking"]["podSubnet"],
            config["networking"]["serviceSubnet"],
            labels["topology.kubernetes.io/region"],
            labels["topology.kubernetes.io/zone"],
        ]
    assert bash(f"source {KIND}/lib.sh; echo ${{CLUSTERS[@]}}").split() == list(CLUSTERS)


def test_no_two_ranges_overlap() -> None:
    ranges = []
    for name in CLUSTERS:
        networking = yaml.safe_load((KIND / f"{name}.yaml").read_text())["networking"]
        ranges += [ipaddress.ip_network(networking[k]) for k in ("podSubnet", "serviceSubnet")]
    for i, one in enumerate(ranges):
        for other in ranges[i + 1 :]:
            assert not one.overlaps(other), (one, other)


def test_every_script_passes_shellcheck() -> None:
    shellcheck = Path(sys.executable).parent / "shellcheck"
    scripts = sorted(KIND.glob("*.sh"))
    assert {s.name for s in scripts} >= {"up.sh", "failover.sh", "down.sh", "conformance.sh"}
    done = subprocess.run(
        [str(shellcheck), "-x", *map(str, scripts)],
        capture_output=True, text=True, timeout=60, check=False, cwd=KIND,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_conformance_run_names_every_cluster_context() -> None:
    script = (KIND / "conformance.sh").read_text()
    assert "sigs.k8s.io/mcs-api" in script or "kubernetes-sigs/mcs-api" in script
    assert '--contexts="$contexts"' in script and "kind-$c" in script
