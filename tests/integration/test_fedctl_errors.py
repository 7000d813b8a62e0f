"""``fedctl`` errors name their cause, as processes: one line on stderr, no
traceback, non-zero exit."""

from __future__ import annotations

import json
import time
from pathlib import Path

from federation.trust import ca as certs
from tests.integration.test_fedctl_registry import fedctl, one_line_error, served  # noqa: F401


def config_with(tmp_path: Path, served: dict[str, str], **changes: str) -> dict[str, str]:  # noqa: F811
    config = json.loads(Path(served["FEDERATION_CONFIG"]).read_text())
    config.update(changes)
    path = tmp_path / f"admin-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(config))
    return {"FEDERATION_CONFIG": str(path)}


def test_registry_urls_and_files_are_named(served: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    url = json.loads(Path(served["FEDERATION_CONFIG"]).read_text())["registry"]
    bare = url.removeprefix("https://")
    one_line_error(fedctl("--registry", bare, "status", env=served), "no scheme", f"https://{bare}")
    one_line_error(fedctl("--registry", f"http://{bare}", "status", env=served), "HTTPS only")
    missing = tmp_path / "gone" / "tls.crt"
    one_line_error(
        fedctl("status", env=config_with(tmp_path, served, cert=str(missing))), str(missing)
    )
    admin = Path(json.loads(Path(served["FEDERATION_CONFIG"]).read_text())["cert"]).parent
    nowhere = tmp_path / "no.kubeconfig"
    one_line_error(
        fedctl("agent", "cluster", "--kubeconfig", str(nowhere), "--registry", url,
               "--cert-dir", str(admin)),
        f"cannot read kubeconfig {nowhere}", "No such file",
    )  # fmt: skip
    empty = tmp_path / "empty.kubeconfig"
    empty.write_text("apiVersion: v1\nkind: Config\ncontexts: []\n")
    one_line_error(
        fedctl("agent", "cluster", "--kubeconfig", str(empty), "--registry", url,
               "--cert-dir", str(admin)),
        "defines no contexts",
    )  # fmt: skip


def test_tls_failures_name_the_side_that_is_wrong(served: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    now = time.time()
    stranger = certs.new_root("elsewhere.example", now)
    (tmp_path / "other-ca.crt").write_bytes(certs.cert_pem(stranger.cert))
    one_line_error(
        fedctl("status", env=config_with(tmp_path, served, ca=str(tmp_path / "other-ca.crt"))),
        "does not trust",
    )
    key = certs.new_key()
    csr = certs.load_csr(certs.make_csr(key))
    foreign = certs.issue_uri(
        stranger, csr, "spiffe://cluster.local/federation/admin/admin", "admin", now,
        certs.AGENT_LIFETIME,
    )  # fmt: skip
    (tmp_path / "foreign.crt").write_bytes(certs.cert_pem(foreign))
    (tmp_path / "foreign.key").write_bytes(certs.plain_key_pem(key))
    env = config_with(
        tmp_path, served, cert=str(tmp_path / "foreign.crt"), key=str(tmp_path / "foreign.key")
    )
    one_line_error(fedctl("status", env=env), "does not accept the client certificate")


def test_an_unknown_event_loop_is_one_line(tmp_path: Path) -> None:
    done = fedctl(
        "registry", "serve", "--store", f"sqlite:///{tmp_path / 'r.db'}",
        "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
        env={"FEDERATION_EVENT_LOOP": "trio", "FEDERATION_ENCRYPTION_KEY": "k"},
    )  # fmt: skip
    one_line_error(done, "FEDERATION_EVENT_LOOP='trio'", "'uvloop' or 'asyncio'")
