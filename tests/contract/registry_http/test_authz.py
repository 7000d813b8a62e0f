"""Every write route against every kind of caller.

The routes come from the route table itself, so a new write route is
covered the day it is added."""

from __future__ import annotations

import logging
import re
import ssl

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from agents.client import Credentials, RegistryClient, RegistryError
from federation.api.app import ROUTES
from federation.api.auth import Access
from federation.trust import ca as certs
from federation.trust.identity import Identity, Role
from tests.contract.registry_http.conftest import Harness
from tests.contract.registry_http.test_smoke import endpoint_set

WRITES = [r for r in ROUTES if r.method not in ("GET", "HEAD") and r.access is not Access.OPEN]
OWNER = "east"


def concrete(path: str) -> str:
    """Fill a route's path with the owner's names."""
    values = {"source": f"cluster:{OWNER}", "namespace": "shop", "name": "cart"}
    path = re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)
    return path.replace("/v1/clusters/cart", f"/v1/clusters/{OWNER}").replace(
        "/v1/vms/cart", "/v1/vms/db"
    )


def body_for(path: str) -> object:
    if "/sources/" in path and "/services/" in path:
        return endpoint_set(OWNER, generation=7).to_wire()
    if path == "/v1/renew" or path.endswith("/intermediate"):
        return {"csr": certs.make_csr(certs.new_key()).decode()}
    if path == "/v1/workload-certs":
        csr = certs.make_csr(certs.new_key()).decode()
        return {"csr": csr, "namespace": "shop", "serviceAccount": "default"}
    if path == "/v1/trust/acks":
        return {"version": 1}
    if path.startswith("/v1/policies/"):
        return {"service": {"namespace": "shop", "name": "cart"}}
    return {}


async def call(client: RegistryClient, method: str, path: str, body: object) -> int:
    try:
        await client.request(method, path, body, retry=False)
    except RegistryError as err:
        return err.status
    return 200


def expired_credentials(harness: Harness) -> Credentials:
    """A certificate for the owner that expired yesterday, signed by the real root."""
    key = certs.new_key()
    csr = x509.load_pem_x509_csr(certs.make_csr(key))
    registry = harness.registry
    yesterday = registry.clock.now() - 2 * 86400
    cert = certs.issue_identity(
        registry.ca, csr, Identity(Role.CLUSTER, OWNER), registry.trust_domain, yesterday
    )
    return Credentials(certs.cert_pem(cert), certs.plain_key_pem(key), registry.ca.cert_pem)


@pytest.mark.parametrize("route", WRITES, ids=lambda r: f"{r.method} {r.path}")
async def test_write_route_against_every_caller(
    sqlite_harness: Harness, route: object, caplog: pytest.LogCaptureFixture
) -> None:
    harness = sqlite_harness
    owner = await harness.enrol_cluster(OWNER)
    other_cluster = await harness.enrol_cluster("west")
    other_vm = await harness.enrol_vm("db")
    anonymous = harness.client(None)
    method, path = route.method, concrete(route.path)  # type: ignore[attr-defined]
    access = route.access  # type: ignore[attr-defined]
    body = body_for(path)

    caplog.set_level(logging.INFO, logger="federation.audit")
    # Expected outcome per caller: "ok" (allowed; any status but 401/403), or a code.
    expected = {
        Access.OWNER: {"owner": "ok", "admin": "ok", "cluster": 403, "vm": 403},
        Access.ADMIN: {"owner": 403, "admin": "ok", "cluster": 403, "vm": 403},
        Access.MEMBER: {"owner": "ok", "admin": 403, "cluster": "ok", "vm": "ok"},
        Access.ANY: {"owner": "ok", "admin": "ok", "cluster": "ok", "vm": "ok"},
        Access.VM: {"owner": 403, "admin": 403, "cluster": 403, "vm": "ok"},
    }[access]
    callers = {"cluster": other_cluster, "vm": other_vm, "owner": owner, "admin": harness.admin()}
    for name in ("cluster", "vm", "owner", "admin"):  # the owner's write last but one
        status = await call(callers[name], method, path, body)
        want = expected[name]
        if want == "ok":
            assert status not in (401, 403), f"{name} was refused {method} {path}: {status}"
        else:
            assert status == want, f"{name} got {status} for {method} {path}"
    if access not in (Access.MEMBER, Access.ANY):
        assert "caller=cluster/west" in caplog.text and "denied" in caplog.text
    assert await call(anonymous, method, path, body) == 401

    expired = harness.client(expired_credentials(harness))
    try:
        status = await call(expired, method, path, body)
    except (aiohttp.ClientError, ssl.SSLError):
        status = 401
    assert status in (0, 401)  # refused at the TLS handshake, or by the registry


async def test_the_certificate_names_only_the_proven_identity(sqlite_harness: Harness) -> None:
    harness = sqlite_harness
    token = await harness.add_cluster("east")
    key = certs.new_key()
    # A CSR that asks to be an admin, and another cluster, by SAN and CN.
    sneaky = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "admin/admin")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier("spiffe://cluster.local/federation/admin/root"),
                    x509.UniformResourceIdentifier(
                        "spiffe://cluster.local/federation/cluster/west"
                    ),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = sneaky.public_bytes(serialization.Encoding.PEM).decode()
    client = harness.client(None)
    answer = await client.request("POST", "/v1/join", {"token": token, "csr": pem}, retry=False)
    cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
    assert certs.spiffe_ids(cert) == ["spiffe://cluster.local/federation/cluster/east"]
    assert cert.subject.rfc4514_string() == "CN=cluster/east"
    assert answer["identity"] == "spiffe://cluster.local/federation/cluster/east"


async def test_a_request_is_logged_once_the_audit_for_writes_the_access_log_for_reads(
    sqlite_harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness = sqlite_harness
    owner = await harness.enrol_cluster(OWNER)
    caplog.set_level(logging.INFO, logger="federation.audit")
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    shard = endpoint_set(OWNER, generation=1)
    await owner.heartbeat(shard.source)
    await owner.publish(shard)
    await owner.request("GET", "/v1/status")
    path = f"/v1/services/{shard.service}/sources/{shard.source}"
    audited = [r.getMessage() for r in caplog.records if r.name == "federation.audit"]
    accessed = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert [line for line in audited if path in line] == [f"caller={owner_id()} PUT {path} -> 200"]
    assert [line for line in accessed if "/v1/status" in line] and all(
        '"GET /v1/status" 200' in line for line in accessed if "/v1/status" in line
    )
    assert not [line for line in accessed if path in line]  # audited: not logged twice


def owner_id() -> str:
    return f"cluster/{OWNER}"
