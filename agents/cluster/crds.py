"""The custom resources the agent needs, as CRDs: the MCS API's
ServiceExport (with its status subresource) and ServiceImport, with the
printer columns upstream's CRDs declare; ``ensure_crds`` installs them
where they are missing (``deploy/crds`` ships the same definitions)."""

from __future__ import annotations

import asyncio
import contextlib

from agents.cluster.kube import (
    CRDS,
    MCS_GROUP,
    SERVICE_EXPORTS,
    SERVICE_IMPORTS,
    Conflict,
    Kube,
    NotFound,
    Obj,
)


def crd(
    kind: str,
    plural: str,
    group: str = MCS_GROUP,
    version: str = "v1alpha1",
    *,
    status: bool = False,
    columns: tuple[tuple[str, str, str], ...] = (),
) -> Obj:
    """A namespaced CustomResourceDefinition (MCS by default) that accepts
    any spec; with ``status``, its status is a subresource (as upstream's
    ServiceExport has it)."""
    definition: Obj = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    if status:
        definition["spec"]["versions"][0]["subresources"] = {"status": {}}
    if columns:
        definition["spec"]["versions"][0]["additionalPrinterColumns"] = [
            {"name": name, "type": kind, "jsonPath": path} for name, kind, path in columns
        ]
    return definition


_AGE = ("Age", "date", ".metadata.creationTimestamp")
MCS_CRDS = (  # the printer columns upstream's CRDs declare
    crd("ServiceExport", "serviceexports", status=True, columns=(_AGE,)),
    crd(
        "ServiceImport",
        "serviceimports",
        columns=(("Type", "string", ".spec.type"), ("IP", "string", ".spec.ips"), _AGE),
    ),
)


async def ensure_crds(kube: Kube) -> None:
    """Install the MCS CRDs where they are missing (needs the right to)."""
    for definition in MCS_CRDS:
        if await kube.get(CRDS, None, definition["metadata"]["name"]) is None:
            with contextlib.suppress(Conflict):  # another replica made it
                await kube.create(CRDS, None, definition)
    for kind in (SERVICE_EXPORTS, SERVICE_IMPORTS):  # served once established
        for _ in range(50):
            try:
                await kube.list(kind)
                break
            except NotFound:
                await asyncio.sleep(0.1)


__all__ = ["MCS_CRDS", "crd", "ensure_crds"]
