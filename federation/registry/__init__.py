"""The registry's domain operations over a revisioned Store.

The key space, under ``/federation/v1/``, is ``federation.model.keys``.

Every write is one store transaction guarded by a compare on what it read, so
nothing is ever half written and concurrent replicas cannot lose updates.
Authorization is the API layer's job; this module trusts its caller.  Key
strings are built and parsed only in ``federation.model.keys``; endpoint
sets (publish, withdraw, stale marking) live in ``registry.sets``, join tokens
in ``registry.tokens``, admin credentials in ``registry.admins``.  Nothing
keeps decoded copies of endpoint sets: the publish guard remembers a digest
per shard, and snapshots and watches pass the stored bytes through.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncGenerator, AsyncIterator

from federation.model import (
    Cluster,
    EndpointSet,
    ServiceRef,
    SourceRef,
    TrafficPolicy,
    Workload,
    decode,
    encode,
    keys,
)
from federation.model.deltas import PublishDelta
from federation.model.keys import ShardKey
from federation.registry.admins import Admins, load_csr
from federation.registry.changes import Change, Item, item_of
from federation.registry.errors import (
    Compacted,
    Conflict,
    Forbidden,
    Invalid,
    InvalidKey,
    MissingEncryptionKey,
    NotFound,
    RegistryError,
    Revoked,
    StoreError,
    StoreUnavailable,
    TooLarge,
    Unauthorized,
    Unprocessable,
    ValueTooLarge,
)
from federation.registry.leader import (
    DEFAULT_LEADER_TTL,
    Election,
    Fence,
    Leader,
    current_leader,
)
from federation.registry.liveness import Heartbeats, Liveness
from federation.registry.sets import TXN_OPS, EndpointSets
from federation.registry.tokens import Tokens
from federation.registry.trust import INTERMEDIATE_LIFETIME, Issued, TrustDomain
from federation.shared.clock import Clock, SystemClock
from federation.store import (
    DEFAULT_PREFIX,
    Compare,
    Delete,
    EventType,
    Put,
    Store,
)
from federation.trust import ca as certs
from federation.trust.identity import Identity, Role
from federation.trust.rotation import Phase

log = logging.getLogger("federation.registry")

DEFAULT_HEARTBEAT_TTL = 15
DEFAULT_TOKEN_TTL = 3600.0


def endpoints_key(service: ServiceRef, source: SourceRef, shard: int = 0) -> str:
    return ShardKey(service=service, source=source, shard=shard).key


def member_key(identity: Identity) -> str:
    source = identity.source
    assert source is not None
    return keys.member_key(source.kind, identity.name)


def removing_key(identity: Identity) -> str:
    source = identity.source
    assert source is not None
    return keys.removing_key(source.kind, identity.name)


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
        replica: str | None = None,
        leader_ttl: int = DEFAULT_LEADER_TTL,
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
        self.sets = EndpointSets(store, prefix=prefix, clock=self.clock)
        self.admins = Admins(store, prefix=prefix, clock=self.clock, trust=self.trust)
        self.tokens = Tokens(store, prefix=prefix, clock=self.clock, trust=self.trust)
        self.heartbeats = Heartbeats(
            store, prefix=prefix, clock=self.clock, ttl=heartbeat_ttl, sets=self.sets
        )
        self.election = Election(
            store,
            prefix + keys.LEADER,
            replica=replica or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}",
            clock=self.clock,
            ttl=leader_ttl,
        )

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
        """Register a cluster or VM and mint its first join token (written in
        the same transaction, so the token belongs to this incarnation)."""
        identity = Identity(Role.CLUSTER if isinstance(record, Cluster) else Role.VM, record.name)
        key = self._key(member_key(identity))
        removing = self._key(removing_key(identity))
        await self.trust.refresh()
        token, token_op = self.tokens.mint(identity, token_ttl)
        result = await self.store.txn(
            [Compare(key=key, mod_revision=0), Compare(key=removing, mod_revision=0)],
            [Put(key=key, value=encode(record)), token_op],
        )
        if not result.succeeded:
            if (await self.store.get(removing)).kv is not None:
                raise Conflict(f"{identity} is being removed; run `remove` again to finish")
            raise Conflict(f"{identity} already exists; mint a new token with `token`")
        log.info("registered %s", identity)
        return token

    async def mint_token(self, identity: Identity, token_ttl: float) -> str:
        key = self._key(member_key(identity))
        got = await self.store.get(key)
        if got.kv is None:
            raise NotFound(f"{identity} is not registered")
        await self.trust.refresh()
        token, token_op = self.tokens.mint(identity, token_ttl)
        result = await self.store.txn(
            [Compare(key=key, mod_revision=got.kv.mod_revision)], [token_op]
        )
        if not result.succeeded:
            raise Conflict(f"{identity} changed; try again")
        return token

    async def member(self, identity: Identity) -> Cluster | Workload | None:
        got = await self.store.get(self._key(member_key(identity)))
        if got.kv is None:
            return None
        return _decode_member(identity.role, got.kv.value)

    async def members(self, role: Role) -> list[Cluster | Workload]:
        prefix = keys.CLUSTERS if role is Role.CLUSTER else keys.VMS
        result = await self.store.range(self._key(prefix))
        return [_decode_member(role, kv.value) for kv in result.kvs]

    async def remove_member(self, identity: Identity) -> None:
        """Revoke a member at once, then delete what it left.

        The first transaction deletes the member record (every replica's
        roster drops it, so the identity is refused everywhere, and every
        guarded publish of it fails from then on) and writes a ``removing``
        marker.  Then its endpoint shards, liveness, trust records and
        unused join tokens go, in batches of at most TXN_OPS, and the marker
        last: a retry (the record gone, the marker there) finishes the job."""
        key = self._key(member_key(identity))
        removing = self._key(removing_key(identity))
        got = await self.store.get(key)
        if got.kv is not None:
            revoked = await self.store.txn(
                [Compare(key=key, mod_revision=got.kv.mod_revision)],
                [Delete(key=key), Put(key=removing, value=b"{}")],
            )
            if not revoked.succeeded:
                raise Conflict(f"{identity} changed meanwhile; try again")
        elif (await self.store.get(removing)).kv is None:
            raise NotFound(f"{identity} is not registered")
        source = identity.source
        assert source is not None
        count = await self.sets.delete_shards(keys.source_prefix(source))
        doomed = [
            self._key(keys.alive_key(source)),
            *self.trust.keys_of(identity),
            *[kv.key async for kv in self.tokens.stored(identity=str(identity))],
            removing,
        ]
        for start in range(0, len(doomed), TXN_OPS):
            await self.store.txn([], [Delete(key=k) for k in doomed[start : start + TXN_OPS]])
        log.info("removed %s, %d endpoint shards and %d records", identity, count, len(doomed) - 1)

    async def join(self, token: str, csr_pem: str) -> Issued:
        """Exchange a join token and a CSR for a client certificate."""
        csr = load_csr(csr_pem)
        key = self.tokens.key(token)
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
        member = await self.store.get(self._key(member_key(identity)))
        if member.kv is None or got.kv.create_revision < member.kv.create_revision:
            # Removed, or removed and registered again: a token of an
            # earlier incarnation never admits the new one.
            raise Unauthorized(f"{identity} was removed; its join token is void")
        used = await self.store.txn(
            [
                Compare(key=key, mod_revision=got.kv.mod_revision),
                Compare(key=member.kv.key, mod_revision=member.kv.mod_revision),
            ],
            [Delete(key=key)],
        )
        if not used.succeeded:
            raise Unauthorized("the join token is unknown or already used")
        log.info("%s joined", identity)
        return await self.trust.issue_client(identity, csr)

    async def renew(self, identity: Identity, csr_pem: str) -> Issued:
        csr = load_csr(csr_pem)
        await self._registered(identity)
        return await self.trust.issue_client(identity, csr)

    async def issue_intermediate(
        self, identity: Identity, csr_pem: str, lifetime: float | None = None
    ) -> Issued:
        csr = load_csr(csr_pem)
        await self._registered(identity)
        return await self.trust.issue_intermediate(identity, csr, lifetime)

    async def issue_workload(
        self, identity: Identity, csr_pem: str, namespace: str, account: str
    ) -> Issued:
        """A workload certificate for a VM, for the namespace and service
        account it was registered with, and no other."""
        csr = load_csr(csr_pem)
        member = await self._registered(identity)
        if not isinstance(member, Workload) or (member.namespace, member.service_account) != (
            namespace,
            account,
        ):
            raise Forbidden(f"{identity} was not registered for ns/{namespace}/sa/{account}")
        return await self.trust.issue_workload(identity, csr, namespace, account)

    async def _registered(self, identity: Identity) -> Cluster | Workload:
        member = await self.member(identity)
        if member is None:
            raise Forbidden(f"{identity} is not registered")
        return member

    # -- endpoint sets, liveness, policies ------------------------------------

    async def publish(
        self, endpoint_set: EndpointSet, vetted: Cluster | Workload | None = None
    ) -> tuple[int, bool]:
        """``vetted``: the member record ``endpoint_set``'s claims were checked against."""
        return await self.sets.publish(endpoint_set, vetted)

    async def publish_delta(self, delta: PublishDelta, member: Cluster | Workload) -> int:
        """``member``: the publisher's record, its claims are checked against."""
        return await self.sets.publish_delta(delta, member)

    async def withdraw(
        self, service: ServiceRef, source: SourceRef, shard: int | None = None
    ) -> int:
        return await self.sets.withdraw(service, source, shard)

    def endpoint_sets(self, service: ServiceRef | None = None) -> AsyncIterator[EndpointSet]:
        return self.sets.all(service)

    async def put_policy(self, policy: TrafficPolicy) -> int:
        return await self.store.put(self._key(keys.policy_key(policy.service)), encode(policy))

    async def delete_policy(self, service: ServiceRef) -> int:
        key = self._key(keys.policy_key(service))
        if (await self.store.get(key)).kv is None:
            raise NotFound(f"no traffic policy for {service}")
        return await self.store.delete(key)

    async def policies(self) -> list[TrafficPolicy]:
        result = await self.store.range(self._key(keys.POLICIES))
        return [decode(TrafficPolicy, kv.value) for kv in result.kvs]

    async def heartbeat(self, source: SourceRef, applied: int | None = None) -> int:
        """Renew the source's liveness; the TTL.  A live lease is renewed
        without reading the member record (a removal deletes the liveness
        key, and the API refuses a removed caller before this); only a new
        lease, for a source without one, is granted after the record is
        read, so an unregistered source never gets one."""
        ttl = await self.heartbeats.renew(source, applied)
        if ttl is not None:
            return ttl
        if await self.member(Identity.of_source(source)) is None:
            raise NotFound(f"source {source} is not registered")
        return await self.heartbeats.grant(source, applied)

    async def liveness_records(self) -> dict[str, Liveness]:
        return await self.heartbeats.records()

    async def liveness(self, fence: Fence | None = None) -> None:
        """Singleton work: mark the shards of sources that stop beating stale."""
        await self.heartbeats.sweep(self._member_sources, fence)

    async def _member_sources(self) -> list[SourceRef]:
        found = []
        for role in (Role.CLUSTER, Role.VM):
            for member in await self.members(role):
                source = Identity(role, member.name).source
                if source is not None:
                    found.append(source)
        return found

    async def singletons(self, fence: Fence) -> None:
        """The work that runs on the leading replica only, until it raises
        ``Deposed`` (every write it makes is fenced by the leader key)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.liveness(fence), name="liveness")
            group.create_task(self.rotations(fence), name="rotation")
            group.create_task(self.tokens.sweep(fence), name="token sweep")

    async def leader(self) -> Leader | None:
        """Who leads, as the store says."""
        return await current_leader(self.store, self.election.key)

    async def rotations(self, fence: Fence | None = None, interval: float = 5.0) -> None:
        """Move a root rotation on when what it waits for went away without
        an acknowledgement (a member removed, a certificate expired)."""
        while True:
            await self.clock.sleep(interval)
            try:
                if (await self.trust.refresh()).phase is not Phase.IDLE:
                    await self.trust.advance(fence)
            except (StoreError, Conflict) as err:
                log.warning("rotation: %s; retrying", err)

    # -- snapshot and watch ----------------------------------------------------

    async def revision(self) -> int:
        """The store's current revision."""
        return (await self.store.get(self._key(keys.CLUSTERS))).revision

    async def snapshot(self) -> AsyncGenerator[tuple[int, list[Item]], None]:
        """Every watched object, page by page, all at one revision: (that
        revision, the page's items).  At least one page."""
        async for page in self.store.pages(self.prefix):
            items = [item_of(kv.key[len(self.prefix) :], kv.value) for kv in page.kvs]
            yield page.revision, [i for i in items if i is not None]

    async def watch(
        self, since: int, *, with_previous: bool = False
    ) -> AsyncIterator[Change | int]:
        """Changes after revision ``since``; also yields the bare revision of
        every store event it filters out, so callers can bookmark it.
        Raises ``Compacted`` if that history is gone."""
        events = self.store.watch(self.prefix, since + 1, with_previous=with_previous)
        async for event in events:
            value = event.value if event.type is EventType.PUT else None
            item = item_of(event.key[len(self.prefix) :], value)
            if item is None:
                yield event.revision
            else:
                yield Change(event.type.value, event.revision, item, event.previous)


def _decode_member(role: Role, raw: bytes) -> Cluster | Workload:
    if role is Role.CLUSTER:
        return decode(Cluster, raw)
    return decode(Workload, raw)


__all__ = [
    "Change",
    "Compacted",
    "Conflict",
    "Forbidden",
    "Invalid",
    "InvalidKey",
    "Issued",
    "Item",
    "Liveness",
    "MissingEncryptionKey",
    "NotFound",
    "Registry",
    "RegistryError",
    "Revoked",
    "StoreError",
    "StoreUnavailable",
    "TooLarge",
    "Unauthorized",
    "Unprocessable",
    "ValueTooLarge",
    "endpoints_key",
]
