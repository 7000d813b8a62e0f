"""An agent's own credential across renewals and root rotations.

Every agent (cluster or VM, leader or not) runs one ``CredentialKeeper``:
it renews the client certificate once two thirds of its lifetime have
passed, or at once when the trust bundle names another issuing root; it
trusts every root of the bundle for new connections; and it keeps what it
holds (a state directory, or a cluster agent's Secret), so a restart needs
no new token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography import x509

from agents.client import Credentials, RegistryClient, RegistryError
from federation.shared.clock import Backoff, Clock
from federation.trust import ca as certs
from federation.trust.bundle import TrustBundle

log = logging.getLogger(__name__)


def renew_at(cert: x509.Certificate, bundle: TrustBundle | None) -> float:
    """When to renew ``cert``: at once if the bundle's issuing root did not
    issue it, else once two thirds of its lifetime have passed."""
    if bundle is not None:
        root = x509.load_pem_x509_certificate(bundle.issuing_root())
        if cert.issuer != root.subject:
            return 0.0
    return certs.renewal_time(cert)


Keep = Callable[[Credentials], Awaitable[None]]


def keep_in(directory: Path) -> Keep:
    """Keep a credential as tls.crt, tls.key and ca.crt in ``directory``."""

    async def keep(credentials: Credentials) -> None:
        credentials.save(directory)

    return keep


class CredentialKeeper:
    def __init__(self, registry: RegistryClient, clock: Clock, keep: Keep | None = None) -> None:
        self.registry = registry
        self.clock = clock
        self.keep = keep  # where a renewed credential goes, so a restart needs no token
        self.bundle: TrustBundle | None = None
        self.renewals = 0
        self._changed = asyncio.Event()

    def observe(self, bundle: TrustBundle) -> None:
        """A TrustBundle from the registry's watch."""
        self.bundle = bundle
        self._changed.set()

    @property
    def current(self) -> bool:
        """Whether the credential is under the bundle's issuing root and
        trusts exactly the bundle (what an acknowledgement promises)."""
        credentials = self.registry.credentials
        if credentials is None or self.bundle is None:
            return False
        leaf = credentials.certificate
        root = x509.load_pem_x509_certificate(self.bundle.issuing_root())
        return leaf.issuer == root.subject and credentials.ca_pem == self.bundle.roots_pem

    def due(self) -> float:
        """Clock time at which the credential must be renewed."""
        credentials = self.registry.credentials
        assert credentials is not None
        return renew_at(credentials.certificate, self.bundle)

    async def step(self) -> float:
        """Renew or re-trust if needed; return seconds until the next step."""
        credentials = self.registry.credentials
        if credentials is None:
            return 3600.0
        if self.clock.now() >= self.due():
            await self.registry.renew()
            self.renewals += 1
            log.info("renewed the agent certificate")
        if self.bundle is not None and self.registry.credentials is not None:
            bundle = self.bundle.roots_pem
            if self.registry.credentials.ca_pem != bundle:
                self.registry.trust(bundle)
        renewed = self.registry.credentials
        if self.keep is not None and renewed is not None and renewed is not credentials:
            await self.keep(renewed)
        return max(self.due() - self.clock.now(), 0.0)

    async def run(self) -> None:
        await run_steps(self.step, self._changed, self.clock, "certificate renewal")


async def run_steps(
    step: Callable[[], Awaitable[float]],
    changed: asyncio.Event,
    clock: Clock,
    what: str,
    errors: tuple[type[Exception], ...] = (RegistryError,),
) -> None:
    """Run ``step`` again when ``changed`` is set or when it says (at most a
    minute later); on ``errors``, one log line and capped backoff."""
    retry = Backoff(0.1, 30.0).retry()
    while True:
        changed.clear()
        try:
            wait = await step()
            retry.succeeded()
        except errors as err:
            delay = retry.failed()
            log.warning("%s: %s; retrying in %.1fs", what, err, delay)
            await clock.sleep(delay)
            continue
        with contextlib.suppress(TimeoutError):  # not wait_for: it can lose a cancel in 3.11
            async with asyncio.timeout(min(wait, 60.0)):
                await changed.wait()


__all__ = [
    "CredentialKeeper",
    "Credentials",
    "Keep",
    "keep_in",
    "run_steps",
]
