"""A cluster agent's registry credential kept in a Secret of its own
cluster (``kubernetes.io/tls`` with ``ca.crt``), so a pod can restart or
move without a new join token, and renewals outlive the pod."""

from __future__ import annotations

import base64
from typing import Any

from agents.client import Credentials
from agents.cluster.kube import SECRETS, Kube, KubeError, ensure_namespace
from agents.credentials import Keep

MANAGED_BY = "app.kubernetes.io/managed-by"


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
        raise KubeError(0, f"Secret {namespace}/{name} holds no tls.crt, tls.key, ca.crt") from None
    return Credentials(cert, key, ca)


def keep_in_secret(kube: Kube, namespace: str, name: str) -> Keep:
    """Write (create or replace) the credential into the Secret."""

    async def keep(credentials: Credentials) -> None:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {MANAGED_BY: "federation-agent"},
            },
            "data": {
                "tls.crt": base64.b64encode(credentials.cert_pem).decode(),
                "tls.key": base64.b64encode(credentials.key_pem).decode(),
                "ca.crt": base64.b64encode(credentials.ca_pem).decode(),
            },
        }
        current = await kube.get(SECRETS, namespace, name)
        if current is None:
            await ensure_namespace(kube, namespace)
            await kube.create(SECRETS, namespace, body)
        else:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            await kube.replace(SECRETS, namespace, name, body)

    return keep


__all__ = ["keep_in_secret", "load", "parse_ref"]
