"""The trust domain over the real API: intermediates, workload certificates,
the bundle in PEM and JWKS, the root rotation and its acknowledgements,
an imported root, and the expiry metric.  Chains are checked by OpenSSL in
real TLS handshakes and by cryptography's path validation."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import ssl
import time
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store
from prometheus_client.parser import text_string_to_metric_families

from agents.client import Credentials, RegistryClient, RegistryError, descends_from_pin
from agents.credentials import CredentialKeeper, keep_in
from federation.trust import ca as certs
from federation.trust.bundle import TrustBundle
from tests.contract.registry_http.conftest import Harness
from tests.support import eventually
from tests.tls import Workload, handshake, workload_from

TD = "cluster.local"


async def intermediate(client: RegistryClient, cluster: str, **extra: object) -> dict[str, str]:
    key = certs.new_key()
    body = {"csr": certs.make_csr(key, "spiffe://evil.org/admin").decode(), **extra}
    answer = await client.request("POST", f"/v1/clusters/{cluster}/intermediate", body)
    answer["key"] = certs.plain_key_pem(key).decode()
    return answer


def cluster_workload(answer: dict[str, str], uri: str) -> Workload:
    """A workload certificate as Istio would sign it from ``cacerts``."""
    chain = (answer["certificate"] + answer["chain"]).encode()
    return workload_from(
        answer["certificate"].encode(),
        answer["key"].encode(),
        chain,
        answer["caBundle"].encode(),
        uri,
    )


async def get_raw(harness: Harness, path: str) -> tuple[bytes, dict[str, str]]:
    context = ssl.create_default_context(cadata=harness.registry.trust.state.bundle_pem.decode())
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http,
        http.get(harness.url + path) as answer,
    ):
        assert answer.status == 200, await answer.text()
        return await answer.read(), dict(answer.headers)


async def test_intermediates_are_constrained_cas_a_real_tls_stack_accepts(
    sqlite_harness: Harness,
) -> None:
    harness = sqlite_harness
    east, west = await harness.enrol_cluster("east"), await harness.enrol_cluster("west")
    a, b = await intermediate(east, "east"), await intermediate(west, "west")

    cert = x509.load_pem_x509_certificate(a["certificate"].encode())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    names = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert names.critical
    assert list(names.value.permitted_subtrees or []) == [x509.UniformResourceIdentifier(TD)]
    assert certs.spiffe_ids(cert) == [f"spiffe://{TD}/federation/cluster/east"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == dt.timedelta(days=90)

    # Workloads of two clusters, each signed by its own cluster's CA, trust each other.
    cart = cluster_workload(a, f"spiffe://{TD}/ns/shop/sa/cart")
    pay = cluster_workload(b, f"spiffe://{TD}/ns/shop/sa/pay")
    assert handshake(cart, pay) == [f"spiffe://{TD}/ns/shop/sa/pay"]
    assert handshake(pay, cart) == [f"spiffe://{TD}/ns/shop/sa/cart"]
    # The name constraint holds: east's CA cannot vouch for another trust domain.
    rogue = cluster_workload(a, "spiffe://evil.org/ns/shop/sa/cart")
    with pytest.raises(ssl.SSLError):
        handshake(pay, rogue)

    short = await intermediate(east, "east", lifetimeSeconds=7200)
    cert = x509.load_pem_x509_certificate(short["certificate"].encode())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(hours=2)
    with pytest.raises(RegistryError) as caught:
        await intermediate(east, "east", lifetimeSeconds=10)
    assert caught.value.status == 400
    with pytest.raises(RegistryError) as caught:
        await intermediate(east, "west")
    assert caught.value.status == 403


async def test_workload_certificates_name_only_the_registered_account(
    sqlite_harness: Harness,
) -> None:
    harness = sqlite_harness
    vm = await harness.enrol_vm("db")
    key = certs.new_key()
    body = {"csr": certs.make_csr(key).decode(), "namespace": "shop", "serviceAccount": "default"}
    answer = await vm.request("POST", "/v1/workload-certs", body)
    leaf = x509.load_pem_x509_certificate(answer["certificate"].encode())
    roots = x509.load_pem_x509_certificates(answer["caBundle"].encode())
    verifier = (
        PolicyBuilder()
        .store(Store(roots))
        .time(dt.datetime.fromtimestamp(harness.clock.now(), dt.UTC))
        .build_client_verifier()
    )
    verified = verifier.verify(leaf, [])
    subjects = [str(s.value) for s in verified.subjects or []]
    assert subjects == [f"spiffe://{TD}/ns/shop/sa/default"]

    for namespace, account in (("shop", "admin"), ("kube-system", "default")):
        wrong = {**body, "namespace": namespace, "serviceAccount": account}
        with pytest.raises(RegistryError) as caught:
            await vm.request("POST", "/v1/workload-certs", wrong, retry=False)
        assert caught.value.status == 403


async def test_the_bundle_as_pem_and_as_a_spiffe_jwks(sqlite_harness: Harness) -> None:
    harness = sqlite_harness
    pem, headers = await get_raw(harness, "/v1/trust-bundle")
    roots = x509.load_pem_x509_certificates(pem)
    assert roots == [harness.registry.ca.cert]
    assert headers["X-Federation-Bundle-Version"] == "1"

    raw, _ = await get_raw(harness, "/v1/spiffe-bundle")
    document = json.loads(raw)
    assert document["spiffe_sequence"] == 1 and document["spiffe_refresh_hint"] > 0
    [key] = document["keys"]
    assert key["use"] == "x509-svid" and key["kty"] == "EC" and key["crv"] == "P-256"
    der = base64.b64decode(key["x5c"][0])
    assert x509.load_der_x509_certificate(der) == roots[0]
    public = roots[0].public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    x = int.from_bytes(base64.urlsafe_b64decode(key["x"] + "=="), "big")
    assert x == public.public_numbers().x


async def status(harness: Harness) -> dict[str, object]:
    return await harness.admin().request("GET", "/v1/ca/status")


async def ack(client: RegistryClient, version: int) -> None:
    await client.request("POST", "/v1/trust/acks", {"version": version})


async def test_a_rotation_waits_for_every_agent_and_keeps_chains_verifying(
    harness: Harness,
) -> None:
    east, db = await harness.enrol_cluster("east"), await harness.enrol_vm("db")
    old_root = harness.registry.ca.cert
    old_db = db.credentials
    assert old_db is not None

    started = await harness.admin().request("POST", "/v1/ca/rotate", {})
    assert (started["phase"], started["version"]) == ("Published", 2)
    assert started["pending"] == ["cluster/east", "vm/db"]
    await ack(east, 2)
    assert (await status(harness))["pending"] == ["vm/db"]
    await ack(db, 2)
    switched = await status(harness)
    assert (switched["phase"], switched["version"]) == ("Switched", 3)
    assert switched["pending"] == ["cluster/east", "vm/db"]

    # A client that still trusts only the old root verifies the registry,
    # whose serving certificate now chains to the new root cross-signed by
    # the old one.
    await eventually(
        lambda: harness.registry.trust.state.issuer != certs.fingerprint(old_root),
        what="the replica to follow the switch",
    )
    legacy = harness.client(old_db, ca_pem=certs.cert_pem(old_root))

    async def legacy_reaches() -> bool:
        try:
            await legacy.request("GET", "/v1/ca/status", retry=False)
        except RegistryError:
            return False
        return True

    await eventually(legacy_reaches, what="the old root to verify the new serving chain")

    # Agents reissue under the new root; the chain carries the cross-signature.
    for client in (east, db):
        renewed = await client.renew()
        cert = renewed.certificate
        assert cert.issuer != old_root.subject
        chain = x509.load_pem_x509_certificates(renewed.cert_pem)[1:]
        assert [c.issuer for c in chain] == [old_root.subject]
        await ack(client, 3)
    retiring = await status(harness)
    assert (retiring["phase"], retiring["version"]) == ("Retiring", 4)
    bundle = x509.load_pem_x509_certificates(harness.registry.trust.state.bundle_pem)
    assert old_root not in bundle and len(bundle) == 1

    # The retired root's certificates are refused, though TLS still knows it.
    stale = harness.client(old_db, ca_pem=harness.registry.trust.state.bundle_pem)
    with pytest.raises(RegistryError) as caught:
        await stale.request("GET", "/v1/ca/status", retry=False)
    assert caught.value.status == 401 and "retired" in str(caught.value)

    for client in (east, db):
        await ack(client, 4)
    done = await status(harness)
    assert (done["phase"], done["pending"]) == ("Idle", [])


async def test_rotation_steps_past_a_removed_member(sqlite_harness: Harness) -> None:
    harness = sqlite_harness
    await harness.enrol_cluster("east")
    started = await harness.admin().request("POST", "/v1/ca/rotate", {})
    assert started["pending"] == ["cluster/east"]
    with pytest.raises(RegistryError) as caught:
        await harness.admin().request("POST", "/v1/ca/rotate", {}, retry=False)
    assert caught.value.status == 409
    await harness.admin().request("DELETE", "/v1/clusters/east")

    async def idle() -> bool:
        harness.clock.advance(5)
        try:  # the registry rewrites the admin credential right after the switch
            return (await status(harness))["phase"] == "Idle"
        except RegistryError as err:
            assert err.status == 401
            return False

    await eventually(idle, what="the rotation to finish without the removed cluster")


async def test_an_imported_root_takes_over_and_bad_ones_change_nothing(
    sqlite_harness: Harness,
) -> None:
    harness = sqlite_harness
    before = await status(harness)
    rsa_like = certs.new_root("other.example", harness.clock.now())
    leaf_key = certs.new_key()
    not_ca = certs.issue_uri(
        rsa_like,
        x509.load_pem_x509_csr(certs.make_csr(leaf_key)),
        "spiffe://x/y",
        "x",
        harness.clock.now(),
        dt.timedelta(hours=1),
    )
    bad = [
        {"certificate": "not pem", "key": "not pem"},
        {
            "certificate": certs.cert_pem(not_ca).decode(),
            "key": certs.plain_key_pem(leaf_key).decode(),
        },
        {  # a key that is not the certificate's
            "certificate": certs.cert_pem(rsa_like.cert).decode(),
            "key": certs.plain_key_pem(certs.new_key()).decode(),
        },
    ]
    for body in bad:  # well formed, as the API document says; not a usable root: 422
        with pytest.raises(RegistryError) as caught:
            await harness.admin().request("POST", "/v1/ca/rotate", body, retry=False)
        assert caught.value.status == 422
    assert await status(harness) == before

    key = ec.generate_private_key(ec.SECP384R1())
    operator = certs.new_root(TD, harness.clock.now(), generation=7, key=key)
    body = {
        "certificate": certs.cert_pem(operator.cert).decode(),
        "key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    }
    await harness.admin().request("POST", "/v1/ca/rotate", body)
    await eventually(
        lambda: harness.registry.trust.state.issuer == certs.fingerprint(operator.cert),
        what="the imported root to issue",
    )
    token = await harness.add_cluster("east")
    credentials, _ = await RegistryClient.join(harness.url, token)
    assert credentials.certificate.issuer == operator.cert.subject


async def test_the_expiry_of_every_issued_certificate_is_a_metric(
    sqlite_harness: Harness,
) -> None:
    harness = sqlite_harness
    east = await harness.enrol_cluster("east")
    answer = await intermediate(east, "east")
    text = (await get_raw(harness, "/metrics"))[0].decode()
    expiry = {
        (sample.labels["identity"], sample.labels["kind"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "federation_cert_expiry_timestamp_seconds"
        for sample in family.samples
    }
    inter = x509.load_pem_x509_certificate(answer["certificate"].encode())
    assert expiry[("cluster/east", "intermediate")] == inter.not_valid_after_utc.timestamp()
    assert ("cluster/east", "client") in expiry and ("admin/admin", "client") in expiry
    assert expiry[("root/1", "root")] == harness.registry.ca.cert.not_valid_after_utc.timestamp()


async def test_an_agent_renews_on_a_switch_and_at_two_thirds(
    sqlite_harness: Harness, tmp_path: Path
) -> None:
    harness = sqlite_harness
    east = await harness.enrol_cluster("east")
    keeper = CredentialKeeper(east, harness.clock, keep_in(tmp_path / "certs"))

    async def bundle() -> TrustBundle:
        _, items = await harness.admin().collect_snapshot()
        [trust] = [i.record for i in items if isinstance(i.record, TrustBundle)]
        return trust

    keeper.observe(await bundle())
    await keeper.step()
    assert keeper.renewals == 0 and keeper.current

    await harness.admin().request("POST", "/v1/ca/rotate", {})
    await ack(east, 2)
    switched = await bundle()
    assert switched.phase == "Switched"
    keeper.observe(switched)
    assert not keeper.current
    wait = await keeper.step()
    assert keeper.renewals == 1 and keeper.current
    assert Credentials.load(tmp_path / "certs") == east.credentials  # a restart needs no token

    # Two thirds of 24 h later (less the five minutes of backdating).
    assert 15.9 * 3600 < wait <= 16 * 3600
    assert await keeper.step() == wait  # nothing due yet
    harness.clock.advance(wait)
    await keeper.step()
    assert keeper.renewals == 2
    assert Credentials.load(tmp_path / "certs") == east.credentials


def test_the_ca_refuses_its_own_output_with_the_wrong_usage_or_key() -> None:
    """check_issued, as SPIRE's credential validator: key usage, extended
    key usage and the requested key are checked, not only the name."""
    now = time.time()
    ca = certs.new_root("cluster.local", now)
    uri = "spiffe://cluster.local/federation/cluster/east"
    key = certs.new_key()
    good = certs.build_leaf(
        ca, key.public_key(), "east", [x509.UniformResourceIdentifier(uri)],
        list(certs.LEAF_USAGES), now, dt.timedelta(hours=1),
    )  # fmt: skip
    certs.check_issued(ca, good, uri, now, public_key=key.public_key())
    email = certs.build_leaf(
        ca, key.public_key(), "east", [x509.UniformResourceIdentifier(uri)],
        [x509.oid.ExtendedKeyUsageOID.EMAIL_PROTECTION], now, dt.timedelta(hours=1),
    )  # fmt: skip
    with pytest.raises(certs.CertificateError, match="extended key usage"):
        certs.check_issued(ca, email, uri, now)
    with pytest.raises(certs.CertificateError, match="requested key"):
        certs.check_issued(ca, good, uri, now, public_key=certs.new_key().public_key())
    server, server_key = certs.issue_server(ca, ["127.0.0.1", "localhost"], now)
    assert server.public_key() == server_key.public_key()  # and it passed its own check


async def test_a_token_minted_before_a_rotation_still_joins(sqlite_harness: Harness) -> None:
    """The token pins the root of its day; after a rotation the client
    follows the cross-signatures from that root to the one in force."""
    harness = sqlite_harness
    token = await harness.add_cluster("east")
    before = harness.registry.ca.fingerprint
    for _ in range(2):  # two rotations: a chain of two links
        rotated = await harness.admin().request("POST", "/v1/ca/rotate", {})
        assert rotated["phase"] == "Idle"
        version = int(rotated["version"])
        await eventually(
            lambda v=version: harness.registry.trust.state.version == v,  # type: ignore[misc]
            what="this replica on the new bundle",
        )
    assert harness.registry.ca.fingerprint != before
    credentials, identity = await RegistryClient.join(harness.url, token)
    assert identity.endswith("/cluster/east")
    assert credentials.certificate.issuer == harness.registry.ca.cert.subject


async def test_a_forged_succession_does_not_pass_the_pin(sqlite_harness: Harness) -> None:
    harness = sqlite_harness
    now = harness.clock.now()
    pinned, stranger = certs.new_root("cluster.local", now), certs.new_root("cluster.local", now)
    current = harness.registry.ca.cert
    forged = certs.cross_sign(stranger, current, now)  # signed by the wrong key
    link = {"root": certs.cert_pem(pinned.cert).decode(), "cross": certs.cert_pem(forged).decode()}
    pin = hashlib.sha256(pinned.cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert not descends_from_pin(pin, [link], [current])
    honest = certs.cross_sign(pinned, current, now)
    link["cross"] = certs.cert_pem(honest).decode()
    assert descends_from_pin(pin, [link], [current])
