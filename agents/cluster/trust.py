"""The cluster's part of the trust domain, done by the leading agent.

- ``istio-system/cacerts``: Istio's plug-in CA secret, with ``ca-cert.pem``
  (this cluster's intermediate), ``ca-key.pem`` (its key, generated here and
  never sent anywhere), ``root-cert.pem`` (every root in force) and
  ``cert-chain.pem`` (the intermediate, any cross-signature, the issuing
  root).  A new intermediate is requested when there is none, when it is
  not from the issuing root, or once two thirds of its lifetime have
  passed; otherwise only ``root-cert.pem`` follows the bundle.  A
  ``cacerts`` the agent did not write is left alone.
- ``federation-system/federation-trust-bundle``: the bundle as a ConfigMap.
- Once both hold bundle version N and the agent's own certificate is from
  the issuing root, it acknowledges N: that is what a rotation waits for.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable

from cryptography import x509

from agents.client import RegistryClient, RegistryError
from agents.cluster.exporter import AGENT, MANAGED_BY
from agents.cluster.kube import CONFIG_MAPS, SECRETS, Kube, KubeError, Obj, put
from agents.credentials import CredentialKeeper, renew_at, run_steps
from federation.shared.clock import Clock
from federation.trust import ca as certs
from federation.trust.bundle import TrustBundle

log = logging.getLogger(__name__)

ISTIO_NAMESPACE = "istio-system"
CACERTS = "cacerts"
BUNDLE_NAMESPACE = "federation-system"
BUNDLE_CONFIG_MAP = "federation-trust-bundle"


def cacerts_data(
    ca_cert: bytes, ca_key: bytes, chain: bytes, roots: bytes, root: bytes
) -> dict[str, str]:
    """The four files of Istio's plug-in CA, base64 as a Secret holds them."""
    files = {
        "ca-cert.pem": ca_cert,
        "ca-key.pem": ca_key,
        "root-cert.pem": roots,
        "cert-chain.pem": ca_cert + chain + root,
    }
    return {name: base64.b64encode(data).decode() for name, data in files.items()}


def secret_file(secret: Obj, name: str) -> bytes:
    return base64.b64decode(secret.get("data", {}).get(name, ""))


async def write_cacerts(kube: Kube, data: dict[str, str], existing: Obj | None) -> None:
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": CACERTS,
            "namespace": ISTIO_NAMESPACE,
            "labels": {MANAGED_BY: AGENT},
        },
        "type": "Opaque",
        "data": data,
    }
    await put(kube, SECRETS, body, existing)


async def request_intermediate(
    registry: RegistryClient, cluster: str, lifetime: float | None = None
) -> tuple[bytes, bytes, bytes]:
    """A fresh key, made here, and its CA certificate: (cert, key, chain)."""
    key = certs.new_key()
    csr = certs.make_csr(key, f"cluster {cluster}")
    answer = await registry.intermediate(cluster, csr, lifetime)
    return answer["certificate"].encode(), certs.plain_key_pem(key), answer["chain"].encode()


class ClusterTrust:
    def __init__(
        self,
        kube: Kube,
        registry: RegistryClient,
        cluster: str,
        credentials: CredentialKeeper,
        clock: Clock,
        leading: Callable[[], bool],
    ) -> None:
        self.kube = kube
        self.registry = registry
        self.cluster = cluster
        self.credentials = credentials
        self.clock = clock
        self.leading = leading
        self.acked = 0
        self.intermediates = 0  # requested by this process, for tests
        self._changed = asyncio.Event()
        self._foreign_logged = False

    def wake(self) -> None:
        self._changed.set()

    async def step(self) -> float:
        """Bring the cluster to the bundle; seconds until the next step."""
        bundle = self.credentials.bundle
        if bundle is None or not self.leading():
            return 60.0
        await self._config_map(bundle)
        renew_at = await self._cacerts(bundle)
        if not self.credentials.current:
            return 0.5  # the credential keeper is on it; ack after
        version = bundle.version
        if version > self.acked:
            await self.registry.ack_trust(version)
            self.acked = version
            log.info("installed trust bundle version %d", version)
        return 60.0 if renew_at is None else max(renew_at - self.clock.now(), 0.0)

    async def _config_map(self, bundle: TrustBundle) -> None:
        data = {"root-cert.pem": bundle.roots_pem.decode(), "version": str(bundle.version)}
        current = await self.kube.get(CONFIG_MAPS, BUNDLE_NAMESPACE, BUNDLE_CONFIG_MAP)
        if current is not None and current.get("data") == data:
            return
        body: Obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": BUNDLE_CONFIG_MAP,
                "namespace": BUNDLE_NAMESPACE,
                "labels": {MANAGED_BY: AGENT},
            },
            "data": data,
        }
        await put(self.kube, CONFIG_MAPS, body, current)

    async def _cacerts(self, bundle: TrustBundle) -> float | None:
        """Keep ``cacerts`` current; return when its intermediate is due."""
        secret = await self.kube.get(SECRETS, ISTIO_NAMESPACE, CACERTS)
        if secret is not None and secret["metadata"].get("labels", {}).get(MANAGED_BY) != AGENT:
            if not self._foreign_logged:
                log.warning(
                    "%s/%s was not written by the agent; leaving it", ISTIO_NAMESPACE, CACERTS
                )
                self._foreign_logged = True
            return None
        root = bundle.issuing_root()
        roots = bundle.roots_pem
        if secret is not None:
            held = x509.load_pem_x509_certificate(secret_file(secret, "ca-cert.pem"))
            due = renew_at(held, bundle)
            if self.clock.now() < due:
                if secret_file(secret, "root-cert.pem") != roots:
                    data = dict(secret["data"])
                    data["root-cert.pem"] = base64.b64encode(roots).decode()
                    await write_cacerts(self.kube, data, secret)
                return due
        cert, key, chain = await request_intermediate(self.registry, self.cluster)
        self.intermediates += 1
        await write_cacerts(self.kube, cacerts_data(cert, key, chain, roots, root), secret)
        log.info("wrote %s/%s with a new intermediate", ISTIO_NAMESPACE, CACERTS)
        return certs.renewal_time(x509.load_pem_x509_certificate(cert))

    async def run(self) -> None:
        errors = (RegistryError, KubeError)
        await run_steps(self.step, self._changed, self.clock, "trust", errors)
