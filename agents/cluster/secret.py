"""A cluster agent's registry credential kept in a Secret of its own
cluster (``kubernetes.io/tls`` with ``ca.crt``), so a pod can restart or
move without a new join token, and renewals outlive the pod."""

from __future__ import annotations

import base64
import logging
from typing import Any

from agents.client import Credentials
from agents.cluster.exporter import AGENT, MANAGED_BY
from agents.cluster.kube import SECRETS, Conflict, Kube, KubeError, put
from agents.credentials import Keep

log = logging.getLogger(__name__)


def parse_ref(text: str) -> tuple[str, str]:
    """NAMESPACE/NAME -> (namespace, name)."""
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"{text!r} is not NAMESPACE/NAME")
    return namespace, name


async def load(kube: Kube, namespace: str, name: str) -> Credentials | None:
    """The credential in the Secret; None if there is no such Secret."""
    secret = await kube.get(SECRETS, namespace, name)
    if secret is None:
        return None
    data = secret.get("data") or {}
    try:
        cert, key, ca = (base64.b64decode(data[k]) for k in ("tls.crt", "tls.key", "ca.crt"))
    except (KeyError, ValueError):
        raise KubeError(f"Secret {namespace}/{name} holds no tls.crt, tls.key, ca.crt") from None
    return Credentials(cert, key, ca)


def keep_in_secret(kube: Kube, namespace: str, name: str) -> Keep:
    """Keep renewals in the Secret; a failure is one log line (the agent
    goes on with the renewed credential in memory and tries again at the
    next renewal)."""

    async def keep(credentials: Credentials) -> None:
        try:
            await write(kube, namespace, name, credentials)
        except KubeError as err:
            log.warning(
                "cannot keep the renewed credential in Secret %s/%s: %s", namespace, name, err
            )

    return keep


async def write(kube: Kube, namespace: str, name: str, credentials: Credentials) -> None:
    """Create or replace the Secret with ``credentials``."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY: AGENT},
        },
        "data": {
            "tls.crt": base64.b64encode(credentials.cert_pem).decode(),
            "tls.key": base64.b64encode(credentials.key_pem).decode(),
            "ca.crt": base64.b64encode(credentials.ca_pem).decode(),
        },
    }
    for _ in range(3):  # another replica may write it too: the last one wins
        try:
            await put(kube, SECRETS, body, await kube.get(SECRETS, namespace, name))
            return
        except Conflict:
            continue
    raise Conflict(f"Secret {namespace}/{name} keeps changing under us")


__all__ = ["keep_in_secret", "load", "parse_ref", "write"]
