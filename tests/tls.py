"""Real TLS between two workloads, in memory: OpenSSL (through ``ssl``)
builds and checks both chains, name constraints included, exactly as it
would on a socket."""

from __future__ import annotations

import datetime as dt
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from federation.sim.etcd_process import EtcdTlsFiles
from federation.trust import ca as certs


@dataclass(frozen=True)
class Workload:
    chain_pem: bytes  # leaf first, then what it carries above itself
    key_pem: bytes
    roots_pem: bytes  # what it trusts


def workload_from(
    ca_cert_pem: bytes, ca_key_pem: bytes, chain_pem: bytes, roots_pem: bytes, uri: str
) -> Workload:
    """What Istio's CA does with ``cacerts``: a leaf for ``uri`` signed by the
    cluster's intermediate, carrying ``cert-chain.pem``."""
    inter = x509.load_pem_x509_certificate(ca_cert_pem)
    key = serialization.load_pem_private_key(ca_key_pem, None)
    assert isinstance(key, certs.PrivateKey)
    leaf_key = certs.new_key()
    csr = x509.load_pem_x509_csr(certs.make_csr(leaf_key))
    leaf = certs.issue_uri(
        certs.CertificateAuthority(inter, key), csr, uri, uri, time.time(), certs.AGENT_LIFETIME
    )
    return Workload(certs.cert_pem(leaf) + chain_pem, certs.plain_key_pem(leaf_key), roots_pem)


def _context(side: ssl._SSLMethod, me: Workload, tmp: Path) -> ssl.SSLContext:
    tmp.mkdir()
    context = ssl.SSLContext(side)
    context.check_hostname = False  # SPIFFE peers are named by URI, checked below
    context.verify_mode = ssl.CERT_REQUIRED
    cert, key = tmp / "c.pem", tmp / "k.pem"
    cert.write_bytes(me.chain_pem)
    key.write_bytes(me.key_pem)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cadata=me.roots_pem.decode())
    return context


def handshake(client: Workload, server: Workload) -> list[str]:
    """Mutual TLS between the two; returns the URIs the client saw on the
    server.  Raises ``ssl.SSLError`` when either side refuses the other."""
    with tempfile.TemporaryDirectory() as tmp:
        c_ctx = _context(ssl.PROTOCOL_TLS_CLIENT, client, Path(tmp) / "c")
        s_ctx = _context(ssl.PROTOCOL_TLS_SERVER, server, Path(tmp) / "s")
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = c_ctx.wrap_bio(c_in, c_out, server_side=False)
    s = s_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, side in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values()), "the handshake did not finish"
    peer = c.getpeercert() or {}
    names = peer.get("subjectAltName", ())
    return [str(entry[1]) for entry in names if isinstance(entry, tuple) and entry[0] == "URI"]


def etcd_tls_files(directory: Path) -> EtcdTlsFiles:
    """A CA, a serving certificate for 127.0.0.1 and a client certificate,
    as an operator's etcd would have."""
    now = time.time()
    ca = certs.new_root("etcd.test", now)
    server, server_key = certs.issue_server(ca, ["127.0.0.1", "localhost"], now)
    client_key = certs.new_key()
    csr = certs.load_csr(certs.make_csr(client_key, "federation registry"))
    client = certs.issue_uri(
        ca, csr, "spiffe://etcd.test/registry", "registry", now, dt.timedelta(days=1)
    )
    files = EtcdTlsFiles(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    directory.mkdir(parents=True, exist_ok=True)
    files.ca.write_bytes(certs.cert_pem(ca.cert))
    files.server_cert.write_bytes(certs.cert_pem(server))
    files.server_key.write_bytes(certs.plain_key_pem(server_key))
    files.client_cert.write_bytes(certs.cert_pem(client))
    files.client_key.write_bytes(certs.plain_key_pem(client_key))
    return files
