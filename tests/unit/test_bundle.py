"""federation/trust/bundle.py: the watched TrustBundle as a record, as the
registry writes it, and what it refuses."""

from __future__ import annotations

import time

import pytest

from federation.model import ValidationError
from federation.trust import ca as certs
from federation.trust.bundle import TrustBundle
from federation.trust.rotation import Root, TrustState


def test_the_bundle_the_registry_writes_reads_back_as_a_record() -> None:
    now = time.time()
    root = certs.new_root("cluster.local", now)
    key = certs.encrypt_key(root.key, b"k")
    state = TrustState.first(Root(cert=root.cert, key_pem=key, generation=1), now)
    wire = state.bundle_object("cluster.local")
    bundle = TrustBundle.from_wire(wire)
    assert bundle.to_wire() == wire
    assert bundle.issuing_root() == root.cert_pem
    assert bundle.roots_pem == root.cert_pem


def test_a_bundle_that_is_not_one_is_refused_by_field() -> None:
    root = certs.new_root("cluster.local", time.time())
    good = {"trustDomain": "cluster.local", "version": 1, "phase": "Idle",
            "issuer": root.fingerprint, "roots": [root.cert_pem.decode()]}  # fmt: skip
    for broken, field in (
        ({**good, "roots": []}, "roots"),
        ({**good, "version": "1"}, "version"),
        ({**good, "issuer": 7}, "issuer"),
        ({**good, "extra": True}, "extra"),
    ):
        with pytest.raises(ValidationError) as refused:
            TrustBundle.from_wire(broken)
        assert refused.value.path == field
