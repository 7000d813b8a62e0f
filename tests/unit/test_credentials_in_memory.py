"""A credential is loaded into TLS without a temporary file: the agent pod
has a read-only root and no writable /tmp."""

from __future__ import annotations

import contextlib
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from agents.client import Credentials, load_cert_chain
from federation.trust import ca as certs


def credential() -> Credentials:
    now = time.time()
    root = certs.new_root("cluster.local", now)
    key = certs.new_key()
    csr = certs.load_csr(certs.make_csr(key))
    cert = certs.issue_uri(
        root, csr, "spiffe://cluster.local/federation/cluster/east", "east", now,
        certs.AGENT_LIFETIME,
    )  # fmt: skip
    return Credentials(certs.cert_pem(cert), certs.plain_key_pem(key), certs.cert_pem(root.cert))


def handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> dict[str, Any]:
    """A TLS handshake in memory; returns the client certificate the server saw."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    near = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    far = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):  # each round moves the bytes both ways once
        for end in (near, far):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    peer = far.getpeercert()
    assert peer, "the server saw no client certificate"
    return peer


def test_a_client_presents_its_key_loaded_with_no_temporary_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made = credential()
    now = time.time()
    server_root = certs.new_root("cluster.local", now)
    cert, key = certs.issue_server(server_root, ["localhost"], now)
    (tmp_path / "s.crt").write_bytes(certs.cert_pem(cert))
    (tmp_path / "s.key").write_bytes(certs.plain_key_pem(key))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=made.ca_pem.decode())
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError("No usable temporary directory found")

    for name in ("TemporaryDirectory", "mkdtemp", "mkstemp", "NamedTemporaryFile"):
        monkeypatch.setattr(tempfile, name, refuse)
    client = ssl.create_default_context(cadata=certs.cert_pem(server_root.cert).decode())
    load_cert_chain(client, made.cert_pem, made.key_pem)
    peer = handshake(client, server)
    assert ("URI", "spiffe://cluster.local/federation/cluster/east") in peer["subjectAltName"]
    with pytest.raises(ssl.SSLError):  # a key that is not the certificate's is refused
        load_cert_chain(client, made.cert_pem, certs.plain_key_pem(certs.new_key()))
