"""``fedctl registry serve`` and the admin commands, as a user runs them."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from federation.sim.etcd_process import free_port


def fedctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode != 0, done.stdout
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, str]]:
    key = tmp_path / "key"
    key.write_text("a-test-encryption-key\n")
    port = free_port()
    child = subprocess.Popen(
        [
            sys.executable, "-m", "federation.cli", "registry", "serve",
            "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"),
            "--encryption-key-file", str(key),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        banner = [child.stdout.readline() for _ in range(4)]
        assert f"https://127.0.0.1:{port}" in banner[0], banner
        config = banner[3].strip().split("=", 1)[1]
        yield {"FEDERATION_CONFIG": config}
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=20)
    assert child.returncode == 0, child.stderr.read() if child.stderr else ""


def test_admin_commands_round_trip(served: dict[str, str]) -> None:
    added = fedctl("cluster", "add", "east", "--region", "eu", "--zone", "eu-1a", env=served)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("fj1.")
    vm = fedctl(
        "vm", "add", "db-1", "--namespace", "shop", "--service-account", "db",
        "--address", "127.0.5.1", "--region", "eu", "--zone", "eu-1a", "--port", "sql:5432",
        "-o", "json", env=served,
    )  # fmt: skip
    assert vm.returncode == 0, vm.stderr
    assert json.loads(vm.stdout)["record"]["ports"] == [
        {"name": "sql", "port": 5432, "protocol": "TCP"}
    ]

    as_json = json.loads(fedctl("cluster", "list", "-o", "json", env=served).stdout)
    assert [c["name"] for c in as_json] == ["east"]
    as_yaml = yaml.safe_load(fedctl("cluster", "list", "-o", "yaml", env=served).stdout)
    assert as_yaml == as_json
    table = fedctl("cluster", "list", env=served).stdout.splitlines()
    assert table[0].split() == ["NAME", "REGION", "ZONE", "MODE"]
    assert table[1].split() == ["east", "eu", "eu-1a", "flat"]
    status = json.loads(fedctl("status", "-o", "json", env=served).stdout)
    assert status["clusters"] == 1 and status["vms"] == 1
    assert {(m["kind"], m["name"], m["joined"]) for m in status["members"]} == {
        ("cluster", "east", False), ("vm", "db-1", False)
    }  # fmt: skip
    table = fedctl("status", env=served).stdout
    assert "MEMBER" in table and "cluster/east" in table and "Idle" in table and "LAG" in table
    wide = fedctl("cluster", "list", "-o", "wide", env=served).stdout.splitlines()
    assert wide[0].split() == [
        "NAME", "REGION", "ZONE", "MODE", "ZONES", "JOINED", "ALIVE", "STALE", "SHARDS", "LAG",
        "CERT", "EXPIRES",
    ]  # fmt: skip
    assert wide[1].split()[:5] == ["east", "eu", "eu-1a", "flat", "eu-1a"]
    assert fedctl("services", env=served).stdout.split() == [
        "SERVICE", "SOURCE", "CHANGED", "HEALTHY", "SHARDS", "STALE",
    ]  # fmt: skip

    one_line_error(
        fedctl("cluster", "add", "east", "--region", "eu", "--zone", "z", env=served),
        "already exists",
    )
    one_line_error(
        fedctl("cluster", "add", "Bad_Name", "--region", "eu", "--zone", "z", env=served),
        "DNS-1123",
    )
    one_line_error(fedctl("cluster", "remove", "east", env=served), "--yes")  # no terminal
    listed = json.loads(fedctl("cluster", "list", "-o", "json", env=served).stdout)
    assert [c["name"] for c in listed] == ["east"]  # still there
    assert fedctl("cluster", "remove", "east", "--yes", env=served).returncode == 0
    one_line_error(fedctl("cluster", "remove", "east", "-y", env=served), "not registered")


def test_errors_are_one_line(tmp_path: Path) -> None:
    one_line_error(fedctl("cluster", "list"), "FEDERATION_CONFIG")
    one_line_error(fedctl("cluster", "add", "x"), "--region")
    config = tmp_path / "admin.json"
    config.write_text("{}")
    one_line_error(fedctl("--config", str(config), "status"), "not an admin credential")
    one_line_error(
        fedctl("registry", "serve", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0",
               env={"FEDERATION_ENCRYPTION_KEY": ""}),
        "encryption key",
    )  # fmt: skip


def test_an_unreachable_registry_is_one_line(served: dict[str, str], tmp_path: Path) -> None:
    wrong = f"https://127.0.0.1:{free_port()}"
    one_line_error(fedctl("--registry", wrong, "status", env=served), "cannot reach the registry")


def test_ca_commands(served: dict[str, str], tmp_path: Path) -> None:
    status = json.loads(fedctl("ca", "status", "-o", "json", env=served).stdout)
    assert (status["phase"], status["version"]) == ("Idle", 1)
    first = status["roots"][0]["sha256"]

    # No agent has joined: nothing to wait for, the rotation runs through.
    rotated = fedctl("ca", "rotate", "--wait", "-o", "json", env=served)
    assert rotated.returncode == 0, rotated.stderr
    after = json.loads(rotated.stdout)
    assert after["phase"] == "Idle" and after["version"] == 4
    assert [r["sha256"] for r in after["roots"]] != [first]
    table = fedctl("ca", "status", env=served)
    assert "phase Idle" in table.stdout and "GENERATION" in table.stdout

    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    one_line_error(fedctl("ca", "import", "--cert", str(junk), "--key", str(junk), env=served))
    one_line_error(
        fedctl("ca", "import", "--cert", str(tmp_path / "nope"), "--key", str(junk), env=served),
        "cannot read",
    )

    added = fedctl("cluster", "add", "east", "--region", "eu", "--zone", "eu-1a", env=served)
    assert added.returncode == 0, added.stderr
    out = tmp_path / "cacerts"
    made = fedctl("ca", "intermediate", "east", "--out", str(out), env=served)
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
    ]
    assert (out / "cert-chain.pem").read_bytes().startswith((out / "ca-cert.pem").read_bytes())
    one_line_error(fedctl("ca", "intermediate", "nowhere", "--out", str(out), env=served))


def test_admin_copies_follow_a_rotation(served: dict[str, str], tmp_path: Path) -> None:
    """A copy of the admin credential used during a rotation is renewed under
    the new root and keeps working after the old one is retired."""
    original = json.loads(Path(served["FEDERATION_CONFIG"]).read_text())
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("cert", "key", "ca"):
        (copy / name).write_bytes(Path(original[name]).read_bytes())
    config = {**original, **{name: str(copy / name) for name in ("cert", "key", "ca")}}
    (copy / "admin.json").write_text(json.dumps(config))
    env = {"FEDERATION_CONFIG": str(copy / "admin.json")}
    rotated = fedctl("ca", "rotate", "--wait", "-o", "json", env=env)
    assert rotated.returncode == 0, rotated.stderr
    status = json.loads(rotated.stdout)
    assert status["phase"] == "Idle" and len(status["roots"]) == 1
    # Renewed under the new root, and still an admin after the old one is gone.
    issuing = status["roots"][0]["sha256"]
    assert fedctl("status", env=env).returncode == 0
    cert = x509.load_pem_x509_certificate((copy / "cert").read_bytes())
    roots = x509.load_pem_x509_certificates((copy / "ca").read_bytes())
    (root,) = roots
    assert cert.issuer == root.subject
    assert hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest() == issuing


def test_named_admin_credentials_are_issued_listed_and_revoked(
    served: dict[str, str], tmp_path: Path
) -> None:
    issued = fedctl("admin", "credential", "issue", "--name", "bob", "--out",
                    str(tmp_path / "bob"), env=served)  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    bob = {"FEDERATION_CONFIG": str(tmp_path / "bob" / "admin.json")}
    assert (tmp_path / "bob" / "tls.key").stat().st_mode & 0o077 == 0
    assert fedctl("status", env=bob).returncode == 0  # bob is an admin
    listed = json.loads(fedctl("admin", "credential", "list", "-o", "json", env=served).stdout)
    assert [a["name"] for a in listed] == ["bob"] and listed[0]["certNotAfter"] > time.time()
    one_line_error(
        fedctl("admin", "credential", "issue", "--name", "bob", "--out", str(tmp_path / "b2"),
               env=served),
        "already exists",
    )  # fmt: skip
    one_line_error(fedctl("admin", "credential", "revoke", "bob", env=served), "--yes")
    assert fedctl("admin", "credential", "revoke", "bob", "--yes", env=served).returncode == 0
    one_line_error(fedctl("status", env=bob), "admin/bob was revoked")
    one_line_error(fedctl("admin", "credential", "revoke", "admin", "-y", env=served), "own admin")
    assert fedctl("status", env=served).returncode == 0  # the bootstrap admin is untouched
