"""Join tokens, certificates and their chains, and the CA key at rest."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from agents.client import RegistryClient, RegistryError
from federation.registry import MissingEncryptionKey, Registry
from federation.trust import ca as certs
from federation.trust import tokens
from tests.contract.registry_http.conftest import Harness


async def join_status(harness: Harness, token: str, csr: str | None = None) -> int:
    body = {"token": token, "csr": csr or certs.make_csr(certs.new_key()).decode()}
    try:
        await harness.client(None).request("POST", "/v1/join", body, retry=False)
    except RegistryError as err:
        return err.status
    return 200


async def test_a_token_is_single_use(harness: Harness) -> None:
    token = await harness.add_cluster("east")
    assert await join_status(harness, token) == 200
    assert await join_status(harness, token) == 401


async def test_unknown_and_expired_tokens_are_401(sqlite_harness: Harness) -> None:
    harness = sqlite_harness
    assert await join_status(harness, tokens.mint(harness.registry.ca.fingerprint)) == 401
    token = await harness.add_cluster("east")
    harness.clock.advance(3601)
    try:
        await harness.client(None).request(
            "POST",
            "/v1/join",
            {"token": token, "csr": certs.make_csr(certs.new_key()).decode()},
            retry=False,
        )
    except RegistryError as err:
        assert err.status == 401 and "expired" in str(err)
    else:
        raise AssertionError("an expired token was accepted")


async def test_a_bad_csr_does_not_burn_the_token(sqlite_harness: Harness) -> None:
    token = await sqlite_harness.add_cluster("east")
    assert await join_status(sqlite_harness, token, csr="not a csr") == 422  # valid, unparseable
    assert await join_status(sqlite_harness, token) == 200


async def test_join_pins_the_root_from_the_token(sqlite_harness: Harness) -> None:
    token = await sqlite_harness.add_cluster("east")
    forged = token[:-64] + "0" * 64
    with pytest.raises(RegistryError, match="pin"):
        await RegistryClient.join(sqlite_harness.url, forged)


async def test_issued_chains_verify_with_a_real_path_validator(sqlite_harness: Harness) -> None:
    harness = sqlite_harness
    token = await harness.add_cluster("east")
    credentials, spiffe_id = await RegistryClient.join(harness.url, token)
    leaf = credentials.certificate
    root = x509.load_pem_x509_certificate(credentials.ca_pem)
    verifier = (
        PolicyBuilder()
        .store(Store([root]))
        .time(dt.datetime.fromtimestamp(harness.clock.now(), dt.UTC))
        .build_client_verifier()
    )
    verified = verifier.verify(leaf, [])
    assert [str(uri.value) for uri in verified.subjects or []] == [spiffe_id]
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime <= dt.timedelta(hours=24, minutes=5)

    # Renewal: a new key, the same identity, presenting the current certificate.
    client = harness.client(credentials)
    renewed = await client.renew()
    assert renewed.key_pem != credentials.key_pem
    assert certs.spiffe_ids(renewed.certificate) == [spiffe_id]
    assert not credentials.needs_renewal(harness.clock.now())
    harness.clock.advance(17 * 3600)
    assert credentials.needs_renewal(harness.clock.now())


async def test_the_ca_key_is_encrypted_at_rest(sqlite_harness: Harness) -> None:
    harness = sqlite_harness
    assert harness.store is not None
    stored = await harness.store.get("/federation/v1/trust/authority")
    assert stored.kv is not None
    for root in json.loads(stored.kv.value)["roots"]:
        assert "ENCRYPTED PRIVATE KEY" in root["key"]
    everything = await harness.store.range("/federation/v1/")
    assert not any(b"BEGIN PRIVATE KEY" in kv.value for kv in everything.kvs)
    server_key = (harness.data_dir / "server" / "tls.key").read_text()
    assert "ENCRYPTED PRIVATE KEY" in server_key
    with pytest.raises(MissingEncryptionKey, match="wrong encryption key"):
        await Registry(harness.store, passphrase=b"wrong").open()
    with pytest.raises(MissingEncryptionKey, match="FEDERATION_ENCRYPTION_KEY"):
        await Registry(harness.store, passphrase=None).open()


async def test_a_removed_cluster_can_no_longer_write(sqlite_harness: Harness) -> None:
    harness = sqlite_harness
    east = await harness.enrol_cluster("east")
    await harness.admin().request("DELETE", "/v1/clusters/east")
    with pytest.raises(RegistryError) as caught:
        await east.request("POST", "/v1/sources/cluster:east/heartbeat", retry=False)
    assert caught.value.status == 401 and "removed from the federation" in str(caught.value)
