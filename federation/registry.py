"""The registry's domain operations over a revisioned Store.

Keys, under ``/federation/v1/``:

- ``clusters/<name>``, ``vms/<name>``: the members (Cluster, Workload);
- ``endpoints/<ns>/<name>/<source>``: one EndpointSet per (service, source);
- ``policies/<ns>/<name>``: TrafficPolicy;
- ``tokens/<sha256>``: an unused join token (identity and expiry);
- ``alive/<source>``: held by a store lease that heartbeats renew;
- ``trust/...``: the trust domain (roots, bundle, acks, issued index): see
  ``registry_trust``.

Every write is one store transaction guarded by a compare on what it read, so
nothing is ever half written and concurrent replicas cannot lose updates.
Authorization is the API layer's job; this module trusts its caller.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509

from federation.clock import Clock, SystemClock
from federation.model import (
    Cluster,
    EndpointSet,
    ServiceRef,
    SourceRef,
    TrafficPolicy,
    ValidationError,
    Workload,
    decode,
    encode,
)
from federation.registry_errors import (
    Conflict,
    Forbidden,
    Invalid,
    MissingEncryptionKey,
    NotFound,
    RegistryError,
    Unauthorized,
)
from federation.registry_publish import Guard, PublishState, is_newer, stamped, unchanged
from federation.registry_trust import BUNDLE, INTERMEDIATE_LIFETIME, Issued, TrustDomain
from federation.store import (
    DEFAULT_PREFIX,
    Compare,
    Delete,
    EventType,
    LeaseNotFound,
    Put,
    Store,
    Unavailable,
)
from federation.trust import ca as certs
from federation.trust import tokens
from federation.trust.identity import Identity, Role
from federation.trust.rotation import Phase

log = logging.getLogger("federation.registry")

DEFAULT_HEARTBEAT_TTL = 15
PUBLISH_CACHE = 65536  # endpoint sets whose last write this replica remembers
DEFAULT_TOKEN_TTL = 3600.0
TXN_OPS = 100  # stay under etcd's default of 128 operations per transaction
WATCHED = {
    "clusters/": "Cluster",
    "vms/": "Workload",
    "endpoints/": "EndpointSet",
    "policies/": "TrafficPolicy",
    BUNDLE: "TrustBundle",
}


@dataclass(frozen=True, slots=True)
class Item:
    """One watched object: kind, key relative to the prefix, JSON object."""

    kind: str
    key: str
    object: dict[str, Any] | None

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "object": self.object}


@dataclass(frozen=True, slots=True)
class Change:
    type: str  # PUT, DELETE
    revision: int
    item: Item

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "revision": self.revision, **self.item.to_wire()}


def endpoints_key(service: ServiceRef, source: SourceRef) -> str:
    return f"endpoints/{service.namespace}/{service.name}/{source}"


def member_key(identity: Identity) -> str:
    return f"{'clusters' if identity.role is Role.CLUSTER else 'vms'}/{identity.name}"


class Registry:
    def __init__(
        self,
        store: Store,
        *,
        trust_domain: str = "cluster.local",
        passphrase: bytes | None = None,
        clock: Clock | None = None,
        heartbeat_ttl: int = DEFAULT_HEARTBEAT_TTL,
        prefix: str = DEFAULT_PREFIX,
        intermediate_lifetime: dt.timedelta = INTERMEDIATE_LIFETIME,
        rotation_overlap: float = 0.0,
    ) -> None:
        self.store = store
        self.trust_domain = trust_domain
        self.clock = clock or SystemClock()
        self.heartbeat_ttl = heartbeat_ttl
        self.prefix = prefix
        self.trust = TrustDomain(
            store,
            prefix=prefix,
            trust_domain=trust_domain,
            passphrase=passphrase,
            clock=self.clock,
            intermediate_lifetime=intermediate_lifetime,
            overlap=rotation_overlap,
        )
        self._published: dict[str, PublishState] = {}

    def _key(self, relative: str) -> str:
        return self.prefix + relative

    # -- the root CA ------------------------------------------------------------

    @property
    def ca(self) -> certs.CertificateAuthority:
        """The issuing root, as last read."""
        return self.trust.ca

    async def open(self) -> bool:
        """Load the trust domain, creating the mesh root on first start;
        True if created."""
        return await self.trust.open()

    # -- members and join tokens ----------------------------------------------

    async def add_member(self, record: Cluster | Workload, token_ttl: float) -> str:
        """Register a cluster or VM and mint its first join token."""
        identity = Identity(Role.CLUSTER if isinstance(record, Cluster) else Role.VM, record.name)
        key = self._key(member_key(identity))
        await self.trust.refresh()
        token, token_op = self._token(identity, token_ttl)
        result = await self.store.txn(
            [Compare(key=key, mod_revision=0)], [Put(key=key, value=encode(record)), token_op]
        )
        if not result.succeeded:
            raise Conflict(f"{identity} already exists; mint a new token with `token`")
        log.info("registered %s", identity)
        return token

    async def mint_token(self, identity: Identity, token_ttl: float) -> str:
        key = self._key(member_key(identity))
        got = await self.store.get(key)
        if got.kv is None:
            raise NotFound(f"{identity} is not registered")
        await self.trust.refresh()
        token, token_op = self._token(identity, token_ttl)
        result = await self.store.txn(
            [Compare(key=key, mod_revision=got.kv.mod_revision)], [token_op]
        )
        if not result.succeeded:
            raise Conflict(f"{identity} changed; try again")
        return token

    def _token(self, identity: Identity, ttl: float) -> tuple[str, Put]:
        if not 1 <= ttl <= 7 * 86400:
            raise Invalid("token TTL must be between 1 second and 7 days")
        token = tokens.mint(self.ca.fingerprint)
        value = json.dumps({"identity": str(identity), "expiresAt": self.clock.now() + ttl})
        return token, Put(key=self._key(f"tokens/{tokens.token_hash(token)}"), value=value.encode())

    async def member(self, identity: Identity) -> Cluster | Workload | None:
        got = await self.store.get(self._key(member_key(identity)))
        if got.kv is None:
            return None
        return _decode_member(identity.role, got.kv.value)

    async def members(self, role: Role) -> list[Cluster | Workload]:
        prefix = "clusters/" if role is Role.CLUSTER else "vms/"
        result = await self.store.range(self._key(prefix))
        return [_decode_member(role, kv.value) for kv in result.kvs]

    async def remove_member(self, identity: Identity) -> None:
        """Delete a member, its endpoint sets and its liveness (in batches of
        at most TXN_OPS; the member record goes last, so a retry finishes)."""
        key = self._key(member_key(identity))
        if (await self.store.get(key)).kv is None:
            raise NotFound(f"{identity} is not registered")
        source = identity.source
        assert source is not None
        doomed = [
            kv.key
            for kv in (await self.store.range(self._key("endpoints/"))).kvs
            if kv.key.endswith(f"/{source}")
        ]
        doomed += [self._key(f"alive/{source}"), *self.trust.keys_of(identity), key]
        for start in range(0, len(doomed), TXN_OPS):
            await self.store.txn([], [Delete(key=k) for k in doomed[start : start + TXN_OPS]])
        log.info("removed %s and %d of its records", identity, len(doomed) - 1)

    async def join(self, token: str, csr_pem: str) -> Issued:
        """Exchange a join token and a CSR for a client certificate."""
        csr = _csr(csr_pem)
        key = self._key(f"tokens/{tokens.token_hash(token.strip())}")
        got = await self.store.get(key)
        if got.kv is None:
            raise Unauthorized("the join token is unknown or already used")
        record = json.loads(got.kv.value)
        if record["expiresAt"] <= self.clock.now():
            await self.store.txn(
                [Compare(key=key, mod_revision=got.kv.mod_revision)], [Delete(key=key)]
            )
            raise Unauthorized("the join token has expired; mint a new one")
        role, name = record["identity"].split("/", 1)
        identity = Identity(Role(role), name)
        if await self.member(identity) is None:
            raise Unauthorized(f"{identity} was removed; its join token is void")
        used = await self.store.txn(
            [Compare(key=key, mod_revision=got.kv.mod_revision)], [Delete(key=key)]
        )
        if not used.succeeded:
            raise Unauthorized("the join token is unknown or already used")
        log.info("%s joined", identity)
        return await self.trust.issue_client(identity, csr)

    async def renew(self, identity: Identity, csr_pem: str) -> Issued:
        csr = _csr(csr_pem)
        await self._registered(identity)
        return await self.trust.issue_client(identity, csr)

    async def issue_intermediate(
        self, identity: Identity, csr_pem: str, lifetime: float | None = None
    ) -> Issued:
        csr = _csr(csr_pem)
        await self._registered(identity)
        return await self.trust.issue_intermediate(identity, csr, lifetime)

    async def issue_workload(
        self, identity: Identity, csr_pem: str, namespace: str, account: str
    ) -> Issued:
        """A workload certificate for a VM, for the namespace and service
        account it was registered with, and no other."""
        csr = _csr(csr_pem)
        member = await self._registered(identity)
        if not isinstance(member, Workload) or (member.namespace, member.service_account) != (
            namespace,
            account,
        ):
            raise Forbidden(f"{identity} was not registered for ns/{namespace}/sa/{account}")
        return await self.trust.issue_workload(identity, csr, namespace, account)

    async def issue_admin(self, name: str) -> tuple[x509.Certificate, certs.PrivateKey]:
        key = certs.new_key()
        csr = x509.load_pem_x509_csr(certs.make_csr(key))
        identity = Identity(Role.ADMIN, name)
        issued = await self.trust.issue_client(identity, csr, certs.ADMIN_LIFETIME)
        return issued.certificate, key

    async def _registered(self, identity: Identity) -> Cluster | Workload:
        member = await self.member(identity)
        if member is None:
            raise Forbidden(f"{identity} is not registered")
        return member

    # -- endpoint sets, liveness, policies ------------------------------------

    async def publish(self, endpoint_set: EndpointSet) -> tuple[int, bool]:
        """Write a source's endpoint set; idempotent per generation.
        Returns (revision, whether anything was written).

        The write is one transaction guarded by the mod revisions of the
        set, of the source's member record and of its liveness key.  Those
        come from what this replica last wrote when it has it (one round
        trip), else from the store; a failed guard re-reads."""
        source = endpoint_set.source
        key = self._key(endpoints_key(endpoint_set.service, source))
        guard = Guard(
            key, self._key(member_key(Identity.of_source(source))), self._key(f"alive/{source}")
        )
        state = self._published.get(key)
        for _ in range(8):
            if state is None or not is_newer(endpoint_set, state.current):
                state = await self._publish_state(guard)
                if state.member_mod == 0:
                    raise NotFound(f"source {source} is not registered")
                if state.current is not None and unchanged(endpoint_set, state.current):
                    return state.revision, False
            record = stamped(endpoint_set, state.current, state.alive_mod != 0, self.clock.now())
            result = await self.store.txn(
                [
                    Compare(key=key, mod_revision=state.mod),
                    Compare(key=guard.member, mod_revision=state.member_mod),
                    Compare(key=guard.alive, mod_revision=state.alive_mod),
                ],
                [Put(key=key, value=encode(record))],
            )
            if result.succeeded:
                if len(self._published) >= PUBLISH_CACHE:
                    self._published.clear()
                self._published[key] = replace(
                    state, mod=result.revision, revision=result.revision, current=record
                )
                return result.revision, True
            self._published.pop(key, None)
            state = None
        raise Conflict("the endpoint set is being written concurrently; try again")

    async def _publish_state(self, guard: Guard) -> PublishState:
        got = await self.store.get(guard.key)
        member = await self.store.get(guard.member)
        alive = await self.store.get(guard.alive)
        current = None if got.kv is None else decode(EndpointSet, got.kv.value)
        return PublishState(
            mod=0 if got.kv is None else got.kv.mod_revision,
            member_mod=0 if member.kv is None else member.kv.mod_revision,
            alive_mod=0 if alive.kv is None else alive.kv.mod_revision,
            revision=got.revision,
            current=current,
        )

    async def withdraw(self, service: ServiceRef, source: SourceRef) -> int:
        key = self._key(endpoints_key(service, source))
        if (await self.store.get(key)).kv is None:
            raise NotFound(f"{source} publishes no endpoints for {service}")
        return await self.store.delete(key)

    async def endpoint_sets(self, service: ServiceRef | None = None) -> list[EndpointSet]:
        prefix = "endpoints/" if service is None else f"endpoints/{service}/"
        result = await self.store.range(self._key(prefix))
        return [decode(EndpointSet, kv.value) for kv in result.kvs]

    async def put_policy(self, policy: TrafficPolicy) -> int:
        return await self.store.put(self._key(f"policies/{policy.service}"), encode(policy))

    async def delete_policy(self, service: ServiceRef) -> int:
        key = self._key(f"policies/{service}")
        if (await self.store.get(key)).kv is None:
            raise NotFound(f"no traffic policy for {service}")
        return await self.store.delete(key)

    async def policies(self) -> list[TrafficPolicy]:
        result = await self.store.range(self._key("policies/"))
        return [decode(TrafficPolicy, kv.value) for kv in result.kvs]

    async def heartbeat(self, source: SourceRef) -> int:
        """Renew the source's liveness lease (granting one if it lapsed);
        returns the TTL.  A source coming back has its sets un-staled."""
        if await self.member(Identity.of_source(source)) is None:
            raise NotFound(f"source {source} is not registered")
        key = self._key(f"alive/{source}")
        got = await self.store.get(key)
        if got.kv is not None:
            with contextlib.suppress(LeaseNotFound):
                return await self.store.keepalive(json.loads(got.kv.value)["lease"])
        lease = await self.store.grant(self.heartbeat_ttl)
        value = json.dumps({"lease": lease.id, "since": self.clock.now()}).encode()
        await self.store.put(key, value, lease=lease.id)
        await self._mark(source, stale=False)
        return lease.ttl

    async def liveness(self) -> None:
        """Mark a source's endpoint sets stale when its liveness key goes
        (lease expired), until cancelled.  Runs on every replica; marking
        is a compare-and-swap, so doing it twice is harmless."""
        while True:
            try:
                result = await self.store.range(self._key("alive/"))
                alive = {kv.key.rsplit("/", 1)[1] for kv in result.kvs}
                for endpoint_set in await self.endpoint_sets():
                    if str(endpoint_set.source) not in alive and not endpoint_set.stale:
                        await self._mark(endpoint_set.source, stale=True)
                async for event in self.store.watch(self._key("alive/"), result.revision + 1):
                    if event.type is EventType.DELETE:
                        source = SourceRef.parse(event.key.rsplit("/", 1)[1])
                        log.info("%s missed its heartbeats: its endpoints are stale", source)
                        await self._mark(source, stale=True)
            except Unavailable as err:
                log.warning("liveness: store unavailable (%s); retrying", err)
                await self.clock.sleep(1.0)

    async def rotations(self, interval: float = 5.0) -> None:
        """Move a root rotation on when what it waits for went away without
        an acknowledgement (a member removed, a certificate expired)."""
        while True:
            await self.clock.sleep(interval)
            try:
                if self.trust.state.phase is not Phase.IDLE:
                    await self.trust.advance()
            except (Unavailable, Conflict) as err:
                log.warning("rotation: %s; retrying", err)

    async def _mark(self, source: SourceRef, *, stale: bool) -> None:
        now = self.clock.now()
        result = await self.store.range(self._key("endpoints/"))
        for kv in result.kvs:
            if not kv.key.endswith(f"/{source}"):
                continue
            for _ in range(8):
                endpoint_set = decode(EndpointSet, kv.value)
                if endpoint_set.stale == stale:
                    break
                done = await self.store.txn(
                    [Compare(key=kv.key, mod_revision=kv.mod_revision)],
                    [Put(key=kv.key, value=encode(stamped(endpoint_set, None, not stale, now)))],
                )
                if done.succeeded:
                    break
                fresh = (await self.store.get(kv.key)).kv
                if fresh is None:
                    break
                kv = fresh

    # -- snapshot and watch ----------------------------------------------------

    async def snapshot(self) -> tuple[int, list[Item]]:
        result = await self.store.range(self.prefix)
        items = []
        for kv in result.kvs:
            item = self._item(kv.key, kv.value)
            if item is not None:
                items.append(item)
        return result.revision, items

    async def watch(self, since: int) -> AsyncIterator[Change | int]:
        """Changes after revision ``since``; also yields the bare revision of
        every store event it filters out, so callers can bookmark it.
        Raises ``Compacted`` if that history is gone."""
        async for event in self.store.watch(self.prefix, since + 1):
            item = self._item(event.key, event.value if event.type is EventType.PUT else None)
            if item is None:
                yield event.revision
            else:
                yield Change(event.type.value, event.revision, item)

    def _item(self, key: str, value: bytes | None) -> Item | None:
        relative = key[len(self.prefix) :]
        for prefix, kind in WATCHED.items():
            if relative.startswith(prefix):
                return Item(kind, relative, None if value is None else json.loads(value))
        return None


def _decode_member(role: Role, raw: bytes) -> Cluster | Workload:
    if role is Role.CLUSTER:
        return decode(Cluster, raw)
    return decode(Workload, raw)


def _csr(pem: str) -> x509.CertificateSigningRequest:
    try:
        return certs.load_csr(pem)
    except certs.CertificateError as err:
        raise Invalid(str(err)) from None


def source_of(text: str) -> SourceRef:
    try:
        return SourceRef.parse(text)
    except ValidationError as err:
        raise Invalid(str(err)) from None


__all__ = [
    "Change",
    "Conflict",
    "Forbidden",
    "Invalid",
    "Issued",
    "Item",
    "MissingEncryptionKey",
    "NotFound",
    "Registry",
    "RegistryError",
    "Unauthorized",
    "endpoints_key",
    "source_of",
]
