"""The mesh root CA: key generation, CSR signing with identity checks, and
private keys encrypted at rest.

The registry never copies names out of a CSR.  It takes the CSR's public key
(after checking the CSR's self-signature and key type), builds the subject
and the one SPIFFE URI SAN itself from the identity the caller proved, and
then checks its own output (``check_issued``) before handing it out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation.trust.identity import Identity

ROOT_LIFETIME = dt.timedelta(days=3650)
AGENT_LIFETIME = dt.timedelta(hours=24)
ADMIN_LIFETIME = dt.timedelta(days=365)
SERVER_LIFETIME = dt.timedelta(days=365)
BACKDATE = dt.timedelta(minutes=5)  # tolerate clock skew between hosts
MAX_CSR_BYTES = 16 * 1024

PrivateKey = ec.EllipticCurvePrivateKey


class CertificateError(ValueError):
    """A CSR or certificate is not acceptable; the message says why."""


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        """sha256 of the certificate's DER, hex: what a join token pins."""
        return fingerprint(self.cert)


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _when(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)


def root_name(trust_domain: str, generation: int) -> x509.Name:
    """Every root of a trust domain has its own subject, so a chain names
    which root it ends at (and a retired root is told apart)."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "federation"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"federation root CA {generation} ({trust_domain})"
            ),
        ]
    )


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    start: dt.datetime,
    end: dt.datetime,
    path_length: int | None,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def new_root(
    trust_domain: str,
    now: float,
    lifetime: dt.timedelta = ROOT_LIFETIME,
    generation: int = 1,
    key: PrivateKey | None = None,
) -> CertificateAuthority:
    key = key or new_key()
    name = root_name(trust_domain, generation)
    start = _when(now) - BACKDATE
    cert = (
        _ca_builder(name, name, key.public_key(), start, start + lifetime, None)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(cert, key)


def cross_sign(
    issuer: CertificateAuthority, root: x509.Certificate, now: float
) -> x509.Certificate:
    """``root``'s name and key, certified by ``issuer``: a peer that trusts
    only ``issuer`` verifies chains that end at ``root`` through this."""
    public_key = root.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    end = min(root.not_valid_after_utc, issuer.cert.not_valid_after_utc)
    cert = (
        _ca_builder(root.subject, issuer.cert.subject, public_key, _when(now) - BACKDATE, end, None)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
    )
    cert.verify_directly_issued_by(issuer.cert)
    return cert


def issue_intermediate(
    ca: CertificateAuthority,
    csr: x509.CertificateSigningRequest,
    identity: Identity,
    trust_domain: str,
    now: float,
    lifetime: dt.timedelta,
) -> x509.Certificate:
    """A CA certificate for one cluster: path length 0 (it signs workloads
    only), its URI names constrained to the trust domain, naming the
    cluster's identity and nothing the CSR asked for."""
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise CertificateError("an intermediate CA key must be EC (P-256 or P-384)")
    uri = identity.spiffe_id(trust_domain)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"federation intermediate CA {identity}"),
        ]
    )
    start = _when(now) - BACKDATE
    end = min(start + lifetime, ca.cert.not_valid_after_utc)
    cert = (
        _ca_builder(subject, ca.cert.subject, public_key, start, end, 0)
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.UniformResourceIdentifier(trust_domain)],
                excluded_subtrees=None,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), False)
        .sign(ca.key, hashes.SHA256())
    )
    check_issued(ca, cert, uri, now, is_ca=True, public_key=public_key)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    names = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    if constraints.path_length != 0 or list(names.permitted_subtrees or []) != [
        x509.UniformResourceIdentifier(trust_domain)
    ]:
        raise CertificateError("issued intermediate lacks its path length or name constraints")
    return cert


def load_csr(pem: str | bytes) -> x509.CertificateSigningRequest:
    raw = pem.encode() if isinstance(pem, str) else pem
    if len(raw) > MAX_CSR_BYTES:
        raise CertificateError(f"the CSR is {len(raw)} bytes, over {MAX_CSR_BYTES}")
    try:
        csr = x509.load_pem_x509_csr(raw)
    except ValueError as err:
        raise CertificateError(f"the CSR is not a PEM certificate request: {err}") from None
    if not csr.is_signature_valid:
        raise CertificateError("the CSR's signature does not verify")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise CertificateError(f"EC curve {key.curve.name} is not accepted (P-256, P-384)")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise CertificateError(f"RSA key of {key.key_size} bits is too small (2048 at least)")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise CertificateError("the CSR's key type is not accepted (EC P-256/P-384, RSA, Ed25519)")
    return csr


def build_leaf(
    ca: CertificateAuthority,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey,
    common_name: str,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    now: float,
    lifetime: dt.timedelta,
) -> x509.Certificate:
    """A leaf certificate as given, unchecked: the issuing functions check
    what it builds (``check_issued``) before anything leaves the CA."""
    start = _when(now) - BACKDATE
    end = min(start + lifetime, ca.cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


def issue_identity(
    ca: CertificateAuthority,
    csr: x509.CertificateSigningRequest,
    identity: Identity,
    trust_domain: str,
    now: float,
    lifetime: dt.timedelta = AGENT_LIFETIME,
) -> x509.Certificate:
    """A client certificate for ``identity`` only, whatever the CSR asked for."""
    return issue_uri(ca, csr, identity.spiffe_id(trust_domain), str(identity), now, lifetime)


def issue_uri(
    ca: CertificateAuthority,
    csr: x509.CertificateSigningRequest,
    uri: str,
    common_name: str,
    now: float,
    lifetime: dt.timedelta,
) -> x509.Certificate:
    """A leaf naming exactly ``uri`` (an X.509 SVID), whatever the CSR asked for."""
    public_key = csr.public_key()
    assert isinstance(
        public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    )
    cert = build_leaf(
        ca,
        public_key,
        common_name,
        [x509.UniformResourceIdentifier(uri)],
        list(LEAF_USAGES),
        now,
        lifetime,
    )
    check_issued(ca, cert, uri, now, public_key=public_key)
    return cert


def issue_server(
    ca: CertificateAuthority, hosts: list[str], now: float, uri: str | None = None
) -> tuple[x509.Certificate, PrivateKey]:
    """The registry's own serving certificate; ``uri`` makes it an SVID too,
    so a SPIRE server can check the bundle endpoint (``https_spiffe``)."""
    key = new_key()
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)] if uri else []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = build_leaf(
        ca,
        key.public_key(),
        "federation registry",
        sans,
        [ExtendedKeyUsageOID.SERVER_AUTH],
        now,
        SERVER_LIFETIME,
    )
    check_issued(
        ca,
        cert,
        None,
        now,
        sans=sans,
        usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
        public_key=key.public_key(),
    )
    return cert, key


def spiffe_ids(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


LEAF_USAGES = (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH)


def check_issued(
    ca: CertificateAuthority,
    cert: x509.Certificate,
    uri: str | None,
    now: float,
    *,
    is_ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usages: tuple[x509.ObjectIdentifier, ...] = LEAF_USAGES,
    public_key: object = None,
) -> None:
    """The registry's check of its own output, as SPIRE's validator does:
    signed by ``ca``; a CA only when meant to be; the key usage of its kind
    (critical) and, for a leaf, exactly ``usages``; the requested
    ``public_key``; valid now; naming exactly ``sans`` (default: the one
    identity ``uri``)."""
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError) as err:
        raise CertificateError(f"issued certificate does not chain to the CA: {err}") from None
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if constraints.ca != is_ca:
        raise CertificateError(f"issued certificate is {'not ' if is_ca else ''}a CA")
    key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    if not key_usage.critical or key_usage.value != _key_usage(ca=is_ca):
        raise CertificateError("issued certificate has the wrong key usage")
    if not is_ca:
        extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if set(extended) != set(usages):
            raise CertificateError(f"issued certificate has extended key usage {list(extended)}")
    if public_key is not None and cert.public_key() != public_key:
        raise CertificateError("issued certificate does not carry the requested key")
    wanted = sans if sans is not None else [x509.UniformResourceIdentifier(uri or "")]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if list(san) != wanted:
        raise CertificateError(f"issued certificate names {list(san)}, not exactly {wanted}")
    moment = _when(now)
    if not cert.not_valid_before_utc <= moment < cert.not_valid_after_utc:
        raise CertificateError("issued certificate is not valid now")


def encrypt_key(key: PrivateKey, passphrase: bytes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def decrypt_key(pem: bytes, passphrase: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, passphrase)
    except (ValueError, TypeError):
        raise CertificateError("cannot decrypt the CA key: wrong encryption key?") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError("the stored CA key is not an EC key")
    return key


def plain_key_pem(key: PrivateKey) -> bytes:
    """For credential files handed to a client (0600), like a kubeconfig's key."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_csr(key: PrivateKey, common_name: str = "federation agent") -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_root(cert_pem: bytes, key_pem: bytes, now: float) -> CertificateAuthority:
    """An operator's root (``fedctl ca import``): a self-signed CA certificate,
    valid now, whose EC key is the one given."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, None)
    except (ValueError, TypeError) as err:
        raise CertificateError(f"cannot read the root certificate or its key: {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError("the root key must be an unencrypted EC key (P-256 or P-384)")
    if key.curve.name not in ("secp256r1", "secp384r1"):
        raise CertificateError(f"EC curve {key.curve.name} is not accepted (P-256, P-384)")
    if key.public_key() != cert.public_key():
        raise CertificateError("the key does not belong to the certificate")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as err:
        raise CertificateError(f"the root lacks {err.oid._name}") from None
    if not constraints.ca or not usage.key_cert_sign:
        raise CertificateError("the certificate is not a CA that may sign certificates")
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError("the root must be self-signed") from None
    if not cert.not_valid_before_utc <= _when(now) < cert.not_valid_after_utc:
        raise CertificateError("the root is not valid now")
    return CertificateAuthority(cert, key)


def renewal_time(cert: x509.Certificate) -> float:
    """When two thirds of ``cert``'s lifetime have passed: renew by then."""
    start = cert.not_valid_before_utc.timestamp()
    return start + (cert.not_valid_after_utc.timestamp() - start) * 2 / 3
