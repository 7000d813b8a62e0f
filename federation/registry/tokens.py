"""Join tokens in the store: ``tokens/<sha256 of the token>`` holds the
identity it admits and its expiry.  A token is written in the same
transaction as its member (or checked against the member's incarnation at
join), deleted when used or when its member is removed, and swept by the
leader once expired."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from federation.model import keys
from federation.registry.errors import Invalid
from federation.registry.leader import Fence
from federation.registry.sets import TXN_OPS
from federation.registry.trust import TrustDomain
from federation.shared.clock import Clock
from federation.store import Delete, KeyValue, Put, Store, StoreError
from federation.trust import tokens
from federation.trust.identity import Identity

log = logging.getLogger("federation.registry")


MIN_TOKEN_TTL = 1.0
MAX_TOKEN_TTL = 7 * 86400.0


class Tokens:
    def __init__(self, store: Store, *, prefix: str, clock: Clock, trust: TrustDomain) -> None:
        self.store = store
        self.prefix = prefix
        self.clock = clock
        self.trust = trust

    def key(self, token: str) -> str:
        return f"{self.prefix}{keys.TOKENS}{tokens.token_hash(token.strip())}"

    def mint(self, identity: Identity, ttl: float) -> tuple[str, Put]:
        if not MIN_TOKEN_TTL <= ttl <= MAX_TOKEN_TTL:
            raise Invalid("token TTL must be between 1 second and 7 days")
        token = tokens.mint(self.trust.ca.fingerprint)
        value = json.dumps({"identity": str(identity), "expiresAt": self.clock.now() + ttl})
        return token, Put(key=self.key(token), value=value.encode())

    async def stored(
        self, *, identity: str | None = None, expired_by: float | None = None
    ) -> AsyncIterator[KeyValue]:
        """The stored join tokens of ``identity``, or expired by then, page by
        page (an unreadable one is always chosen: nobody can use it)."""
        async for page in self.store.pages(self.prefix + keys.TOKENS):
            for kv in page.kvs:
                try:
                    record = json.loads(kv.value)
                    mine = identity is not None and record["identity"] == identity
                    old = expired_by is not None and record["expiresAt"] <= expired_by
                except (ValueError, KeyError, TypeError):
                    mine = old = True
                if mine or old:
                    yield kv

    async def sweep(self, fence: Fence | None = None, interval: float = 600.0) -> None:
        """Delete expired join tokens now and every ``interval`` seconds
        (singleton work; a used token is deleted when it is used)."""
        while True:
            try:
                now = self.clock.now()
                expired = [kv.key async for kv in self.stored(expired_by=now)]
                guard = [] if fence is None else [fence.compare()]
                for start in range(0, len(expired), TXN_OPS):
                    batch = [Delete(key=k) for k in expired[start : start + TXN_OPS]]
                    done = await self.store.txn(guard, batch)
                    if not done.succeeded and fence is not None:
                        await fence.check(self.store)
                if expired:
                    log.info("deleted %d expired join tokens", len(expired))
            except StoreError as err:
                log.warning("token sweep: %s; retrying", err)
            await self.clock.sleep(interval)


__all__ = ["MAX_TOKEN_TTL", "MIN_TOKEN_TTL", "Tokens"]
