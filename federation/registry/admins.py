"""Admin credentials: the bootstrap ``admin/admin`` each replica writes into
its data dir, and named ones (``admin/<name>``), recorded under ``admins/``
so that they can be listed and revoked at once."""

from __future__ import annotations

import json
import logging
from typing import Any

from cryptography import x509

from federation.model import keys
from federation.registry.errors import Conflict, NotFound, Unprocessable
from federation.registry.trust import Issued, TrustDomain
from federation.shared.clock import Clock
from federation.store import Compare, Delete, Put, Store
from federation.trust import ca as certs
from federation.trust.identity import Identity, Role

log = logging.getLogger("federation.registry")

BOOTSTRAP_ADMIN = "admin"  # what each replica writes into its data dir


def load_csr(pem: str) -> x509.CertificateSigningRequest:
    try:
        return certs.load_csr(pem)
    except certs.CertificateError as err:
        raise Unprocessable(str(err)) from None


class Admins:
    def __init__(self, store: Store, *, prefix: str, clock: Clock, trust: TrustDomain) -> None:
        self.store = store
        self.prefix = prefix
        self.clock = clock
        self.trust = trust

    def _key(self, relative: str) -> str:
        return self.prefix + relative

    async def add(self, name: str, csr_pem: str) -> Issued:
        """A named admin credential (``admin/<name>``), recorded so that it
        can be listed and revoked; the bootstrap ``admin`` is each
        replica's own and is not recorded."""
        if name == BOOTSTRAP_ADMIN:
            raise Conflict(f"{BOOTSTRAP_ADMIN!r} is the registry's own admin; pick another name")
        csr = load_csr(csr_pem)
        key = self._key(keys.ADMINS + name)
        value = json.dumps({"name": name, "createdAt": self.clock.now()}).encode()
        created = await self.store.txn(
            [Compare(key=key, mod_revision=0)], [Put(key=key, value=value)]
        )
        if not created.succeeded:
            raise Conflict(f"admin {name} already exists; revoke it first to issue it again")
        log.info("issued the admin credential admin/%s", name)
        return await self.trust.issue_client(Identity(Role.ADMIN, name), csr, certs.ADMIN_LIFETIME)

    async def all(self) -> list[dict[str, Any]]:
        result = await self.store.range(self._key(keys.ADMINS))
        return [json.loads(kv.value) for kv in result.kvs]

    async def valid(self, identity: Identity) -> bool:
        """The bootstrap admin always; a named one while it is recorded
        (read each time: admins call rarely, and a revocation is at once)."""
        if identity.name == BOOTSTRAP_ADMIN:
            return True
        return (await self.store.get(self._key(keys.ADMINS + identity.name))).kv is not None

    async def remove(self, name: str) -> None:
        if name == BOOTSTRAP_ADMIN:
            raise Conflict(f"{BOOTSTRAP_ADMIN!r} is each replica's own admin and is not revoked")
        key = self._key(keys.ADMINS + name)
        if (await self.store.get(key)).kv is None:
            raise NotFound(f"admin {name} does not exist")
        doomed = [key, *self.trust.keys_of(Identity(Role.ADMIN, name))]
        await self.store.txn([], [Delete(key=k) for k in doomed])
        log.info("revoked the admin credential admin/%s", name)

    async def renew(self, identity: Identity, csr_pem: str) -> Issued:
        """A new admin certificate for the same admin, from the issuing root."""
        assert identity.role is Role.ADMIN
        return await self.trust.issue_client(identity, load_csr(csr_pem), certs.ADMIN_LIFETIME)

    async def issue(self, name: str) -> tuple[x509.Certificate, certs.PrivateKey]:
        key = certs.new_key()
        csr = x509.load_pem_x509_csr(certs.make_csr(key))
        identity = Identity(Role.ADMIN, name)
        issued = await self.trust.issue_client(identity, csr, certs.ADMIN_LIFETIME)
        return issued.certificate, key


__all__ = ["BOOTSTRAP_ADMIN", "Admins"]
