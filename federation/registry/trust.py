"""The registry's trust domain over the store: the roots, what they issue,
and the root rotation driven by agents' acknowledgements.

Keys, under the registry's prefix:

- ``trust/authority``: ``TrustState`` (roots, their keys encrypted, phase);
- ``trust/bundle``: the watched ``TrustBundle`` agents install, written in
  the same transaction as the authority, so the two never disagree;
- ``trust/acks/<role>/<name>``: the bundle version a member has installed;
- ``trust/issued/<role>/<name>/<kind>``: the newest certificate of each kind
  issued to a member (client, intermediate, workload), for the expiry metric
  and to know which members a rotation waits for.

Every state change is one transaction guarded by the authority's revision,
so replicas may all drive the rotation; the loser of a race re-reads.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from federation.model import keys
from federation.registry.errors import Conflict, Invalid, MissingEncryptionKey, Unprocessable
from federation.registry.leader import Fence
from federation.shared.clock import Clock
from federation.store import Compare, Put, Store
from federation.trust import ca as certs
from federation.trust.identity import Identity, Role
from federation.trust.rotation import (
    Phase,
    Root,
    RotationError,
    TrustState,
    prepare,
    publish,
    retire,
    settle,
    switch,
)

log = logging.getLogger("federation.trust")

AUTHORITY = "trust/authority"
BUNDLE = "trust/bundle"
LEGACY_ROOT = "trust/root"  # the single root of stores written before rotation existed
ACKS = "trust/acks/"
ISSUED = "trust/issued/"
INTERMEDIATE_LIFETIME = dt.timedelta(days=90)
MAX_INTERMEDIATE_LIFETIME = dt.timedelta(days=365)
WORKLOAD_LIFETIME = dt.timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Issued:
    identity: Identity
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # between the certificate and a root
    bundle_pem: bytes  # every root in force

    @property
    def chain_pem(self) -> bytes:
        return b"".join(certs.cert_pem(c) for c in self.chain)


class TrustDomain:
    def __init__(
        self,
        store: Store,
        *,
        prefix: str,
        trust_domain: str,
        passphrase: bytes | None,
        clock: Clock,
        intermediate_lifetime: dt.timedelta = INTERMEDIATE_LIFETIME,
        overlap: float = 0.0,
    ) -> None:
        self.store = store
        self.overlap = overlap  # least seconds between the switch and the retirement
        self.prefix = prefix
        self.trust_domain = trust_domain
        self.clock = clock
        self.intermediate_lifetime = intermediate_lifetime
        self._passphrase = passphrase
        self._state: TrustState | None = None
        self._revision = 0
        self._keys: dict[str, certs.PrivateKey] = {}  # decrypted root keys by fingerprint
        self.root_names: frozenset[str] = frozenset()  # common names of the roots in force

    def _key(self, relative: str) -> str:
        return self.prefix + relative

    # -- state -----------------------------------------------------------------

    @property
    def state(self) -> TrustState:
        if self._state is None:
            raise RuntimeError("TrustDomain.open() has not run")
        return self._state

    @property
    def ca(self) -> certs.CertificateAuthority:
        """The issuing root, as last read."""
        root = self.state.issuing
        return certs.CertificateAuthority(root.cert, self._private(root))

    def _private(self, root: Root) -> certs.PrivateKey:
        key = self._keys.get(root.fingerprint)
        if key is None:
            assert self._passphrase
            try:
                key = certs.decrypt_key(root.key_pem, self._passphrase)
            except certs.CertificateError as err:
                raise MissingEncryptionKey(str(err)) from None
            self._keys[root.fingerprint] = key
        return key

    async def open(self) -> bool:
        """Load the trust state, creating the first root on first start;
        True if this call created it."""
        if not self._passphrase:
            raise MissingEncryptionKey(
                "no encryption key for the CA key: give --encryption-key-file "
                "or set FEDERATION_ENCRYPTION_KEY"
            )
        if (await self.store.get(self._key(AUTHORITY))).kv is None:
            legacy = await self.store.get(self._key(LEGACY_ROOT))
            if legacy.kv is not None:
                data = json.loads(legacy.kv.value)
                root = Root(
                    x509.load_pem_x509_certificate(data["cert"].encode()), data["key"].encode(), 1
                )
            else:
                authority = certs.new_root(self.trust_domain, self.clock.now())
                root = self._sealed(authority, 1)
            if await self._commit(0, TrustState.first(root, self.clock.now())):
                log.info("created the mesh root CA %s", root.fingerprint)
                await self.refresh()
                return legacy.kv is None
        await self.refresh()
        self.ca  # noqa: B018 - decrypts the issuing key now: a wrong key fails at start
        return False

    def _sealed(self, authority: certs.CertificateAuthority, generation: int) -> Root:
        assert self._passphrase
        self._keys[certs.fingerprint(authority.cert)] = authority.key
        return Root(authority.cert, certs.encrypt_key(authority.key, self._passphrase), generation)

    async def refresh(self) -> TrustState:
        """Re-read the state if another replica (or this one) changed it."""
        got = await self.store.get(self._key(AUTHORITY))
        assert got.kv is not None, "the trust state is missing from the store"
        if got.kv.mod_revision != self._revision:
            self._state = TrustState.from_json(got.kv.value)
            self._revision = got.kv.mod_revision
            self.root_names = frozenset(
                str(attribute.value)
                for cert in self._state.bundle
                for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            )
        return self.state

    async def changes(self) -> AsyncIterator[TrustState]:
        """The trust state each time the bundle is rewritten (by any
        replica), refreshed, until cancelled.  A store failure is raised
        (``StoreError``): the caller retries."""
        key = self._key(BUNDLE)
        revision = (await self.store.get(key)).revision
        async for _ in self.store.watch(key, revision + 1):
            yield await self.refresh()

    async def _commit(self, revision: int, state: TrustState, fence: Fence | None = None) -> bool:
        """Write ``state`` and its bundle if the authority is still at
        ``revision`` (and, for singleton work, this replica still leads)."""
        bundle = json.dumps(state.bundle_object(self.trust_domain)).encode()
        guards = [Compare(key=self._key(AUTHORITY), mod_revision=revision)]
        result = await self.store.txn(
            guards if fence is None else [*guards, fence.compare()],
            [
                Put(key=self._key(AUTHORITY), value=state.to_json()),
                Put(key=self._key(BUNDLE), value=bundle),
            ],
        )
        if not result.succeeded and fence is not None:
            await fence.check(self.store)
        return result.succeeded

    # -- issuing ---------------------------------------------------------------

    async def issue_client(
        self,
        identity: Identity,
        csr: x509.CertificateSigningRequest,
        lifetime: dt.timedelta = certs.AGENT_LIFETIME,
    ) -> Issued:
        def sign(ca: certs.CertificateAuthority, now: float) -> x509.Certificate:
            return certs.issue_identity(ca, csr, identity, self.trust_domain, now, lifetime)

        return await self._issue(identity, "client", sign)

    async def issue_intermediate(
        self, identity: Identity, csr: x509.CertificateSigningRequest, lifetime: float | None
    ) -> Issued:
        """A CA certificate for one cluster's Istio (the ``cacerts`` secret)."""
        if identity.role is not Role.CLUSTER:
            raise Invalid("intermediates are issued to clusters only")
        span = self.intermediate_lifetime if lifetime is None else dt.timedelta(seconds=lifetime)
        if not dt.timedelta(hours=1) <= span <= MAX_INTERMEDIATE_LIFETIME:
            raise Invalid("an intermediate's lifetime must be between 1 hour and 365 days")

        def sign(ca: certs.CertificateAuthority, now: float) -> x509.Certificate:
            try:
                return certs.issue_intermediate(ca, csr, identity, self.trust_domain, now, span)
            except certs.CertificateError as err:
                raise Unprocessable(str(err)) from None

        return await self._issue(identity, "intermediate", sign)

    async def issue_workload(
        self, vm: Identity, csr: x509.CertificateSigningRequest, namespace: str, account: str
    ) -> Issued:
        """An X.509 SVID ``spiffe://<td>/ns/<ns>/sa/<sa>`` for a VM's workload
        (the caller has checked that the VM was registered for it)."""
        uri = f"spiffe://{self.trust_domain}/ns/{namespace}/sa/{account}"

        def sign(ca: certs.CertificateAuthority, now: float) -> x509.Certificate:
            return certs.issue_uri(ca, csr, uri, f"{account}.{namespace}", now, WORKLOAD_LIFETIME)

        return await self._issue(vm, "workload", sign)

    async def _issue(
        self,
        identity: Identity,
        kind: str,
        sign: Callable[[certs.CertificateAuthority, float], x509.Certificate],
    ) -> Issued:
        """Sign with the issuing root as last read, and record the certificate
        only if the trust state is still that one (one round trip); if it
        moved, re-read and sign again."""
        for _ in range(8):
            state, revision = self.state, self._revision
            cert = sign(self.ca, self.clock.now())
            record = {
                "identity": str(identity),
                "kind": kind,
                "subject": certs.spiffe_ids(cert)[0],
                "serial": format(cert.serial_number, "x"),
                "issuer": state.issuer,
                "notAfter": cert.not_valid_after_utc.timestamp(),
            }
            result = await self.store.txn(
                [Compare(key=self._key(AUTHORITY), mod_revision=revision)],
                [
                    Put(
                        key=self._key(f"{ISSUED}{identity}/{kind}"),
                        value=json.dumps(record).encode(),
                    )
                ],
            )
            if result.succeeded:
                log.info("issued %s %s until %s", kind, record["subject"], cert.not_valid_after_utc)
                return Issued(identity, cert, tuple(state.chain), state.bundle_pem)
            await self.refresh()
        raise Conflict("the trust state kept changing; try again")

    async def issued(self) -> list[dict[str, Any]]:
        """The newest certificate of each kind per member, then the roots."""
        out: list[dict[str, Any]] = [
            json.loads(kv.value) for kv in (await self.store.range(self._key(ISSUED))).kvs
        ]
        for root in (await self.refresh()).roots:
            out.append(
                {
                    "identity": f"root/{root.generation}",
                    "kind": "root",
                    "subject": root.cert.subject.rfc4514_string(),
                    "serial": format(root.cert.serial_number, "x"),
                    "issuer": root.fingerprint,
                    "notAfter": root.cert.not_valid_after_utc.timestamp(),
                }
            )
        return out

    # -- rotation --------------------------------------------------------------

    async def rotate(self, imported: certs.CertificateAuthority | None = None) -> TrustState:
        """Start a rotation to a new root (generated, or the operator's), and
        drive it as far as the agents' acknowledgements allow."""
        state = await self.refresh()
        if state.phase is not Phase.IDLE:
            raise Conflict(f"a rotation is already under way (phase {state.phase.value})")
        generation = max(r.generation for r in state.roots) + 1
        authority = imported or certs.new_root(
            self.trust_domain, self.clock.now(), generation=generation
        )
        if any(r.fingerprint == certs.fingerprint(authority.cert) for r in state.roots):
            raise Conflict("that root is already in force")
        root = self._sealed(authority, generation)
        if not await self._commit(self._revision, prepare(state, root, self.clock.now())):
            raise Conflict("the trust state changed meanwhile; try again")
        log.info("rotation: prepared root %d %s", generation, root.fingerprint)
        return await self.advance()

    async def advance(self, fence: Fence | None = None) -> TrustState:
        """Take every step whose condition holds; return where it stands.
        ``fence``: taken as the leader's singleton work."""
        while True:
            state, revision = await self.refresh(), self._revision
            now = self.clock.now()
            if state.phase is Phase.PREPARED:
                following = publish(state, now)
            elif state.phase is Phase.SWITCHED and now - state.since < self.overlap:
                return state
            elif state.waits_for_acks and not await self.pending(state):
                following = self._after_acks(state, now)
            else:
                return state
            if await self._commit(revision, following, fence):
                log.info(
                    "rotation: %s (bundle version %d)", following.phase.value, following.version
                )

    def _after_acks(self, state: TrustState, now: float) -> TrustState:
        if state.phase is Phase.PUBLISHED:
            old, new = state.issuing, state.roots[-1]
            cross = certs.cross_sign(
                certs.CertificateAuthority(old.cert, self._private(old)), new.cert, now
            )
            return switch(state, cross, now)
        if state.phase is Phase.SWITCHED:
            return retire(state, now)
        if state.phase is Phase.RETIRING:
            return settle(state, now)
        raise RotationError(f"nothing follows {state.phase.value}")

    async def ack(self, identity: Identity, version: int) -> TrustState:
        """``identity`` has installed bundle ``version`` and, from the Switched
        phase on, holds certificates of the issuing root."""
        state = await self.refresh()
        if not 1 <= version <= state.version:
            raise Invalid(f"bundle version {version} does not exist (current {state.version})")
        value = json.dumps({"version": version, "at": self.clock.now()}).encode()
        await self.store.put(self._key(f"{ACKS}{identity}"), value)
        return await self.advance() if state.waits_for_acks else state

    async def acks(self) -> dict[str, int]:
        result = await self.store.range(self._key(ACKS))
        return {
            kv.key.removeprefix(self._key(ACKS)): int(json.loads(kv.value)["version"])
            for kv in result.kvs
        }

    async def pending(self, state: TrustState) -> list[str]:
        """Members a rotation waits for: registered, holding an unexpired
        client certificate, and not yet at ``state.version``."""
        registered = set()
        for prefix in (keys.CLUSTERS, keys.VMS):
            for kv in (await self.store.range(self._key(prefix))).kvs:
                member = keys.parse_member(kv.key.removeprefix(self.prefix))
                if member is not None:  # the identity is "<kind>/<name>"
                    registered.add(f"{member[0].value}/{member[1]}")
        now = self.clock.now()
        holding = set()
        for kv in (await self.store.range(self._key(ISSUED))).kvs:
            record = json.loads(kv.value)
            if record["kind"] == "client" and record["notAfter"] > now:
                holding.add(record["identity"])
        acks = await self.acks()
        return sorted(i for i in registered & holding if acks.get(i, 0) < state.version)

    def keys_of(self, identity: Identity) -> list[str]:
        """What removing a member deletes here."""
        return [self._key(f"{ACKS}{identity}")] + [
            self._key(f"{ISSUED}{identity}/{kind}")
            for kind in ("client", "intermediate", "workload")
        ]
