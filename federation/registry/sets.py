"""Endpoint sets in the store: publish, withdraw, stale marking, one
source's shards through its index.

Every write is one store transaction guarded by what it read.  The
publish guard remembers, per shard, the mod revisions and a digest of what
this replica last wrote (``registry.publish``), never a decoded set: a
bounded LRU of small entries, so a publish is one round trip when the
replica wrote the shard before."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import orjson

from federation.model import (
    MAX_SET_BYTES,
    Cluster,
    EndpointSet,
    ServiceRef,
    SourceRef,
    Workload,
    decode,
    encode,
    encode_wire,
    keys,
)
from federation.model.claims import check_claimed
from federation.model.deltas import PublishDelta
from federation.model.keys import ShardKey
from federation.model.patches import Misfit, changed_fields, worth_sending
from federation.model.stored import ShardSummary, Split, array, joined
from federation.registry.errors import Conflict, NotFound, TooLarge
from federation.registry.leader import Fence
from federation.registry.notes import Note, Notes
from federation.registry.publish import (
    Guard,
    PublishState,
    digest,
    fresh,
    is_newer,
    stamped,
    state_of,
    unchanged,
)
from federation.shared.clock import Clock
from federation.store import Compare, Delete, Put, Store

PUBLISH_CACHE = 65536  # shards whose last write this replica remembers (~200 bytes each)
VALUE_CACHE_BYTES = 64 << 20  # of those, the stored bytes of the most recent (decision 50)
TXN_OPS = 100  # stay under etcd's default of 128 operations per transaction


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A shard's new stored form: its set-level fields as a record (its
    endpoints need not be there), its bytes, the digest of its fresh form,
    and for a delta the note for this replica's watch hub."""

    record: EndpointSet
    value: bytes
    fresh_digest: bytes
    note: Note | None = None


def _check_size(value: bytes) -> None:
    if len(value) > MAX_SET_BYTES:
        raise TooLarge(
            f"the endpoint set is {len(value)} bytes stored, over the bound of "
            f"{MAX_SET_BYTES}; publish it as more shards"
        )


class EndpointSets:
    def __init__(self, store: Store, *, prefix: str, clock: Clock) -> None:
        self.store = store
        self.prefix = prefix
        self.clock = clock
        self._published: OrderedDict[str, PublishState] = OrderedDict()
        # The bytes this replica last wrote per shard, bounded in bytes: a
        # delta applies to them without reading the shard back (the write
        # is guarded by their mod revision all the same).
        self._values: OrderedDict[str, bytes] = OrderedDict()
        self._value_bytes = 0
        # Delta publishes in flight or just written, for this replica's
        # watch hub (decision 55), by key relative to the prefix.
        self.notes = Notes()

    def _key(self, relative: str) -> str:
        return self.prefix + relative

    async def publish(
        self, endpoint_set: EndpointSet, vetted: Cluster | Workload | None = None
    ) -> tuple[int, bool]:
        """Write one shard of a source's endpoint set; idempotent per
        generation.  Returns (revision, whether anything was written).
        ``vetted``: the member record its claims were checked against.

        The write is one transaction guarded by the mod revisions of the
        shard, of the source's member record and of its liveness key; a new
        shard also writes its index key.  The guard's revisions come from
        what this replica last wrote when it has them (one round trip),
        else from the store; a failed guard re-reads."""
        source = endpoint_set.source
        shard, guard = self._guard(endpoint_set.service, source, endpoint_set.shard)
        key = guard.key
        state = self._published.get(key)
        for _ in range(8):
            if state is None or not is_newer(endpoint_set, state):
                state = await self._publish_state(guard)
                if state.member_mod == 0:
                    raise NotFound(f"source {source} is not registered")
                if unchanged(endpoint_set, state):
                    return state.revision, False
            record = stamped(endpoint_set, state, state.alive_mod != 0, self.clock.now())
            value = encode(record)
            _check_size(value)
            fresh_digest = digest(record) if record.stale else hashlib.sha256(value).digest()
            written = Rewrite(record, value, fresh_digest)
            revision = await self._write(shard, guard, state, written, vetted)
            if revision is not None:
                return revision, True
            state = None
        raise Conflict("the endpoint set is being written concurrently; try again")

    async def publish_delta(self, delta: PublishDelta, member: Cluster | Workload) -> int:
        """Apply a publisher's delta to its stored shard and write the
        result (decision 50); returns the revision.  The delta applies to
        what this replica last wrote when it remembers it (the bytes and the
        guards' revisions), else to the shard read from the store; either
        way the write is guarded by that value's mod revision, so a shard
        written meanwhile fails the guard and is read back.  The result's
        claims are checked against ``member``: the endpoints the delta adds
        when this replica wrote the rest under the same record, every
        endpoint otherwise (decision 60).  Conflict when the stored shard
        is not the delta's base."""
        shard, guard = self._guard(delta.service, delta.source, delta.shard)
        key = guard.key
        for _ in range(8):
            state = self._published.get(key)
            held = self._values.get(key) if state is not None else None
            remembered = held is not None
            if state is None or held is None:
                got = await self.store.get(key)
                if got.kv is None:
                    raise NotFound(
                        f"{delta.source} has no shard {delta.shard} of {delta.service} to "
                        "change; publish it whole"
                    )
                held, mod = got.kv.value, got.kv.mod_revision
                if state is None or state.mod != mod:
                    member_mod, alive_mod = await self._member_mods(guard)
                    if member_mod == 0:
                        raise NotFound(f"source {delta.source} is not registered")
                    state = PublishState(mod=mod, member_mod=member_mod, alive_mod=alive_mod)
            try:
                rewrite = None
                if remembered and state.vetted == member:
                    rewrite = self._spliced(delta, held, state, member)
                if rewrite is None:
                    rewrite = self._rebased(delta, held, state, member)
            except Misfit as err:
                if remembered:  # another replica may have written since: read it
                    self._forget(key)
                    continue
                raise Conflict(str(err)) from None
            assert rewrite.note is not None
            self.notes.add(shard.key, rewrite.note)
            revision = await self._write(shard, guard, state, rewrite, member)
            if revision is not None:
                return revision
            self.notes.drop(shard.key, rewrite.note)
        raise Conflict("the endpoint set is being written concurrently; try again")

    def _rebased(
        self, delta: PublishDelta, held: bytes, state: PublishState, member: Cluster | Workload
    ) -> Rewrite:
        """The delta applied to the stored shard decoded, every claim checked."""
        stored = orjson.loads(held)
        rebased = delta.onto(stored)
        check_claimed(rebased.claims(), member)
        header = self._stamped(rebased.header, state, stored["stale"], stored["staleSince"])
        value = encode_wire(header, rebased.endpoints)
        _check_size(value)
        fresh_value = encode_wire(fresh(header), rebased.endpoints) if header.stale else value
        decoded = {
            **orjson.loads(orjson.dumps(header.header_wire())),
            "endpoints": rebased.endpoints,
        }
        note = Note.of(held, stored, value, decoded)
        return Rewrite(header, value, hashlib.sha256(fresh_value).digest(), note)

    def _spliced(
        self, delta: PublishDelta, held: bytes, state: PublishState, member: Cluster | Workload
    ) -> Rewrite | None:
        """The delta applied to the stored shard's bytes, none of its
        endpoints decoded, the added ones' claims checked (decision 60);
        None when the bytes are not in the form ``Split`` takes apart."""
        split = Split.of(held)
        if split is None:
            return None
        spliced = delta.onto_split(split)
        check_claimed(spliced.claims(), member)
        was = split.header
        header = self._stamped(spliced.header, state, was["stale"], was["staleSince"])
        wire = orjson.loads(orjson.dumps(header.header_wire()))  # as it is stored
        endpoints = array(spliced.endpoints)
        value = joined(wire, endpoints)
        _check_size(value)
        fresh_value = joined(fresh(header).header_wire(), endpoints) if header.stale else value
        fields = changed_fields(was, wire)
        patch = None
        if fields is not None:
            patch = worth_sending({"fields": fields, "endpoints": spliced.splices}, len(value))
        summary = ShardSummary.of_split(wire, len(spliced.endpoints), endpoints)
        note = Note(held, value, summary, patch)
        return Rewrite(header, value, hashlib.sha256(fresh_value).digest(), note)

    def _stamped(
        self, header: EndpointSet, state: PublishState, stale: bool, since: float
    ) -> EndpointSet:
        """``header`` as it is stored: stale while its source's lease is
        gone (``stale``, ``since``: the stored shard's)."""
        was = replace(state, stale=stale, stale_since=since)
        return stamped(header, was, state.alive_mod != 0, self.clock.now())

    async def _write(
        self,
        shard: ShardKey,
        guard: Guard,
        state: PublishState,
        rewrite: Rewrite,
        vetted: Cluster | Workload | None,
    ) -> int | None:
        """One guarded write of a shard; its revision, or None when a guard
        failed (what this replica remembered is dropped)."""
        ops: list[Put | Delete] = [Put(key=guard.key, value=rewrite.value)]
        if state.mod == 0:
            ops.append(Put(key=self._key(shard.index_key), value=b"{}"))
        result = await self.store.txn(
            [
                Compare(key=guard.key, mod_revision=state.mod),
                Compare(key=guard.member, mod_revision=state.member_mod),
                Compare(key=guard.alive, mod_revision=state.alive_mod),
            ],
            ops,
        )
        if result.succeeded:
            after = state_of(rewrite.record, rewrite.fresh_digest, state, result.revision, vetted)
            self._remember(guard.key, after, rewrite.value)
            return result.revision
        self._forget(guard.key)
        return None

    def _guard(self, service: ServiceRef, source: SourceRef, shard: int) -> tuple[ShardKey, Guard]:
        where = ShardKey(service=service, source=source, shard=shard)
        guard = Guard(
            self._key(where.key),
            self._key(keys.member_key(source.kind, source.name)),
            self._key(keys.alive_key(source)),
        )
        return where, guard

    def _remember(self, key: str, state: PublishState, value: bytes) -> None:
        self._published[key] = state
        self._published.move_to_end(key)
        while len(self._published) > PUBLISH_CACHE:
            self._forget(next(iter(self._published)))
        self._value_bytes += len(value) - len(self._values.pop(key, b""))
        self._values[key] = value
        while self._value_bytes > VALUE_CACHE_BYTES:
            _, old = self._values.popitem(last=False)
            self._value_bytes -= len(old)

    def _forget(self, key: str) -> None:
        self._published.pop(key, None)
        self._value_bytes -= len(self._values.pop(key, b""))

    async def _publish_state(self, guard: Guard) -> PublishState:
        got = await self.store.get(guard.key)
        member_mod, alive_mod = await self._member_mods(guard)
        current = None if got.kv is None else decode(EndpointSet, got.kv.value)
        return PublishState.read(
            current,
            mod=0 if got.kv is None else got.kv.mod_revision,
            member_mod=member_mod,
            alive_mod=alive_mod,
            revision=got.revision,
        )

    async def _member_mods(self, guard: Guard) -> tuple[int, int]:
        """The mod revisions (0: absent) of the member record and its liveness."""
        member = await self.store.get(guard.member)
        alive = await self.store.get(guard.alive)
        return (
            0 if member.kv is None else member.kv.mod_revision,
            0 if alive.kv is None else alive.kv.mod_revision,
        )

    async def withdraw(
        self, service: ServiceRef, source: SourceRef, shard: int | None = None
    ) -> int:
        """Delete one shard, or (``shard`` None) every shard of the source."""
        if shard is None:
            if await self.delete_shards(keys.source_prefix(source, service)) == 0:
                raise NotFound(f"{source} publishes no endpoints for {service}")
            return (await self.store.get(self._key(keys.alive_key(source)))).revision
        where = ShardKey(service=service, source=source, shard=shard)
        got = await self.store.get(self._key(where.key))
        if got.kv is None:
            raise NotFound(f"{source} publishes no shard {shard} for {service}")
        self._forget(self._key(where.key))
        result = await self.store.txn(
            [Compare(key=self._key(where.key), mod_revision=got.kv.mod_revision)],
            [Delete(key=self._key(where.key)), Delete(key=self._key(where.index_key))],
        )
        if not result.succeeded:
            raise Conflict("the shard changed while it was withdrawn; try again")
        return result.revision

    async def all(self, service: ServiceRef | None = None) -> AsyncIterator[EndpointSet]:
        """Every stored shard (of one service, or of all), page by page."""
        prefix = keys.ENDPOINTS if service is None else keys.service_prefix(service)
        async for page in self.store.pages(self._key(prefix)):
            for kv in page.kvs:
                yield decode(EndpointSet, kv.value)

    async def delete_shards(self, index_prefix: str) -> int:
        """Delete every shard indexed under ``index_prefix`` with its index
        key; returns how many."""
        count = 0
        async for page in self.store.pages(self._key(index_prefix), limit=TXN_OPS // 2):
            ops: list[Put | Delete] = []
            for kv in page.kvs:
                shard = keys.parse_index(kv.key[len(self.prefix) :])
                ops += [Delete(key=self._key(shard.key)), Delete(key=kv.key)]
                self._forget(self._key(shard.key))
            if ops:
                await self.store.txn([], ops)
                count += len(ops) // 2
        return count

    async def mark(self, source: SourceRef, *, stale: bool, fence: Fence | None = None) -> None:
        """Set or clear ``stale`` on every shard of ``source`` (its index).
        With ``fence`` (singleton work) every write is also guarded by the
        leader key, and ``Deposed`` is raised when that guard fails."""
        now = self.clock.now()
        async for page in self.store.pages(self._key(keys.source_prefix(source))):
            for index in page.kvs:
                key = self._key(keys.parse_index(index.key[len(self.prefix) :]).key)
                await self._mark_one(key, stale, now, fence)

    async def _mark_one(self, key: str, stale: bool, now: float, fence: Fence | None) -> None:
        for _ in range(8):
            kv = (await self.store.get(key)).kv
            if kv is None:
                return
            endpoint_set = decode(EndpointSet, kv.value)
            if endpoint_set.stale == stale:
                return
            marked = stamped(endpoint_set, PublishState.read(endpoint_set), not stale, now)
            guards = [Compare(key=key, mod_revision=kv.mod_revision)]
            done = await self.store.txn(
                guards if fence is None else [*guards, fence.compare()],
                [Put(key=key, value=encode(marked))],
            )
            if done.succeeded:
                self._forget(key)
                return
            if fence is not None:
                await fence.check(self.store)


__all__ = ["PUBLISH_CACHE", "TXN_OPS", "EndpointSets"]
