"""The cluster's registration, kept in its own cluster.

An agent needs its cluster's locality (from the registry's record) before
it can export or route.  Each time it reads the record it keeps a copy in
ConfigMap ``federation-system/federation-cluster``; an agent that starts
while the registry is unreachable starts from that copy and from the view
saved on its ServiceImports, instead of not starting at all."""

from __future__ import annotations

import json
import logging

from agents.cluster.exporter import AGENT, MANAGED_BY
from agents.cluster.kube import CONFIG_MAPS, Kube, KubeError, Obj, put
from federation.model import Cluster, ValidationError

log = logging.getLogger(__name__)

NAMESPACE = "federation-system"
NAME = "federation-cluster"
KEY = "cluster.json"


async def keep(kube: Kube, record: Cluster) -> None:
    """Keep ``record``; a failure is one log line (the copy is a fallback)."""
    body: Obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {MANAGED_BY: AGENT}},
        "data": {KEY: json.dumps(record.to_wire(), sort_keys=True)},
    }
    try:
        current = await kube.get(CONFIG_MAPS, NAMESPACE, NAME)
        if current is not None and (current.get("data") or {}).get(KEY) == body["data"][KEY]:
            return
        await put(kube, CONFIG_MAPS, body, current)
    except KubeError as err:
        log.warning("cannot keep the cluster record in ConfigMap %s/%s: %s", NAMESPACE, NAME, err)


async def saved(kube: Kube, name: str) -> Cluster | None:
    """The kept record of cluster ``name``, if there is a readable one."""
    try:
        current = await kube.get(CONFIG_MAPS, NAMESPACE, NAME)
        if current is None:
            return None
        record = Cluster.from_wire(json.loads((current.get("data") or {})[KEY]))
    except (KubeError, KeyError, ValueError, ValidationError) as err:
        log.warning("the kept cluster record in %s/%s is unusable: %s", NAMESPACE, NAME, err)
        return None
    return record if record.name == name else None


__all__ = ["keep", "saved"]
