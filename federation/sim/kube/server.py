"""A Kubernetes API emulator: the REST subset the agents use, real semantics.

Paths, verbs, list/watch, errors and metadata follow kube-apiserver, so the
same client code (kubernetes_asyncio, kubectl) runs against this and a real
cluster.  It is a simulation and says so: its kubeconfig cluster is named
``sim-<name>`` and /version reports ``platform: simulated``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from federation.sim.kube import apply as ownership
from federation.sim.kube import openapi, structural
from federation.sim.kube import patch as patches
from federation.sim.kube.errors import KubeError
from federation.sim.kube.objects import (
    Obj,
    ObjectStore,
    ResourceType,
    Subscription,
    assign_name,
)
from federation.sim.kube.options import Options
from federation.sim.kube.rbac import Grant
from federation.sim.kube.resources import CRD, NAMESPACE, SERVICE, Registry, types_from_crd
from federation.sim.kube.selectors import Selector
from federation.sim.kube.services import DEFAULT_SERVICE_CIDR, ServiceAllocator
from federation.sim.kube.validation import validate

log = logging.getLogger(__name__)
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
OPEN_PATHS = frozenset({"/version", "/healthz", "/readyz", "/livez"})


@dataclass
class Faults:
    """What the emulator does wrong on purpose."""

    latency_seconds: float = 0.0
    error_rates: dict[str, float] = field(default_factory=dict)  # verb -> probability
    unreachable: bool = False
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def should_fail(self, verb: str) -> bool:
        rate = self.error_rates.get(verb, 0.0)
        return rate > 0 and self.rng.random() < rate


@dataclass(frozen=True, slots=True)
class _Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


class KubeApi:
    """The state and behaviour of one emulated apiserver."""

    def __init__(
        self,
        *,
        token: str,
        bookmark_interval: float = 1.0,
        service_cidr: str = DEFAULT_SERVICE_CIDR,
        loopback_endpoints: bool = False,
    ) -> None:
        self.loopback_endpoints = loopback_endpoints  # see validation.validate
        self.store = ObjectStore()
        self.types = Registry()
        self.services = ServiceAllocator(SERVICE, service_cidr)
        self.faults = Faults()
        self.token = token  # the admin's: anything goes
        self.grants: dict[str, Grant] = {}  # other bearer tokens, under RBAC
        self.bookmark_interval = bookmark_interval
        self._documents: tuple[tuple[tuple[str, str], ...], openapi.Documents] | None = None
        self._schemas: dict[ResourceType, dict[str, Any]] = {}  # forgotten on any CRD write
        for name in DEFAULT_NAMESPACES:
            self.store.create(
                NAMESPACE, "", {"metadata": {"name": name}, "status": {"phase": "Active"}}
            )
        self.store.compact()  # like a real cluster, the bootstrap history is long gone

    # -- routing --------------------------------------------------------------

    def resolve(self, path: str) -> _Target:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        rt = self.types.find(group, version, rest[0])
        if namespace is not None and not rt.namespaced:
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub not in (None, "status") or (sub == "status" and rt.status_subresource is False):
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        if rt.namespaced and name is not None and namespace is None:
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        return _Target(rt, namespace, name, sub)

    @staticmethod
    def target(
        rt: ResourceType,
        namespace: str | None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> _Target:
        """A target for in-process callers (the simulated kubelet and friends)."""
        return _Target(rt, namespace if rt.namespaced else None, name, subresource)

    # -- verbs ----------------------------------------------------------------

    def create(self, target: _Target, body: Any, options: Options | None = None) -> Obj:
        options = options or Options()
        obj = _object(body)
        ns = self._namespace_for_write(target, obj)
        self._check_kind(target.rt, obj)
        if not options.applied:  # an apply pruned its body already
            obj = self.known_fields(target.rt, obj, options)
        assign_name(target.rt, obj)
        if target.rt.status_subresource:
            obj.pop("status", None)  # set through /status only
        obj = self._custom_values(target.rt, obj)
        validate(target.rt, obj, loopback_endpoints=self.loopback_endpoints)
        declared = types_from_crd(obj) if target.rt is CRD else []
        if target.rt is SERVICE:
            if self.store.exists(SERVICE, ns, obj["metadata"]["name"]):
                raise KubeError.already_exists(SERVICE, obj["metadata"]["name"])
            self.services.prepare_create(obj)
        if not options.applied:
            ownership.track_update(target.rt, self._schema(target.rt), None, obj, options.manager)
        if options.dry_run:
            return self.store.create(target.rt, ns, obj, dry_run=True)
        created = self.store.create(target.rt, ns, obj)
        self._forget_schemas(target.rt)
        if declared:
            created = self._establish(created, declared)
        self._sync_service(target.rt, ns, created["metadata"]["name"])
        return created

    def update(self, target: _Target, body: Any, options: Options | None = None) -> Obj:
        assert target.name is not None
        options = options or Options()
        obj = _object(body)
        ns = self._namespace_for_write(target, obj)
        self._check_kind(target.rt, obj)
        obj = self.known_fields(target.rt, obj, options)
        if target.subresource == "status":
            current = self.store.get(target.rt, ns, target.name)
            current["status"] = obj.get("status")
            current["metadata"]["resourceVersion"] = obj.get("metadata", {}).get("resourceVersion")
            obj = current
        return self._replace(target, ns, obj, options)

    def _replace(self, target: _Target, ns: str, obj: Obj, options: Options) -> Obj:
        assert target.name is not None
        live = self.store.get(target.rt, ns, target.name)
        if target.rt.status_subresource:  # a CRD's status moves through /status alone
            if target.subresource == "status":
                rv = obj.get("metadata", {}).get("resourceVersion")
                obj = live | {"status": obj.get("status")}
                obj["metadata"] = dict(live["metadata"]) | {"resourceVersion": rv}
            elif "status" in live:
                obj = obj | {"status": live["status"]}
            else:
                obj = {k: v for k, v in obj.items() if k != "status"}
        if target.subresource is None and not options.applied:
            ownership.track_update(target.rt, self._schema(target.rt), live, obj, options.manager)
        if target.rt is SERVICE and target.subresource is None:
            self.services.prepare_update(ns, live, obj)
        obj = self._custom_values(target.rt, obj)
        validate(
            target.rt,
            obj | {"metadata": obj.get("metadata", {}) | {"name": target.name}},
            loopback_endpoints=self.loopback_endpoints,
        )
        if options.dry_run:
            return self.store.update(target.rt, ns, target.name, obj, dry_run=True)
        updated = self.store.update(target.rt, ns, target.name, obj)
        self._forget_schemas(target.rt)
        self._sync_service(target.rt, ns, target.name)
        return updated

    def _sync_service(self, rt: ResourceType, ns: str, name: str) -> None:
        """Keep the IP/port allocations equal to the Services stored."""
        if rt is not SERVICE:
            return
        if self.store.exists(SERVICE, ns, name):
            self.services.commit(ns, self.store.get(SERVICE, ns, name))
        else:
            self.services.release(ns, name)

    def patch(
        self, target: _Target, content_type: str, body: Any, options: Options | None = None
    ) -> Obj:
        assert target.name is not None
        options = options or Options()
        ns = target.namespace or ""
        if content_type == patches.APPLY:
            return self._apply(target, ns, _object(body), options)
        current = self.store.get(target.rt, ns, target.name)
        patched = patches.patched(
            current, content_type, body, strategic=target.rt.group in patches.STRATEGIC_GROUPS
        )
        if not isinstance(patched, dict):
            raise KubeError.bad_request("a patch must leave an object")
        patched.setdefault("metadata", {})
        wanted_rv = (
            (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        )
        patched["metadata"]["resourceVersion"] = wanted_rv or current["metadata"]["resourceVersion"]
        patched = self.known_fields(target.rt, patched, options)
        return self._replace(target, ns, patched, options)

    def _apply(self, target: _Target, ns: str, body: Obj, options: Options) -> Obj:
        """Server-side apply: create or merge, recording the manager's intent."""
        assert target.name is not None
        if target.subresource is not None:
            raise KubeError.bad_request("apply to a subresource is not supported here")
        body = self.known_fields(target.rt, body, options)
        meta = body.setdefault("metadata", {})
        if meta.get("name", target.name) != target.name:
            raise KubeError.bad_request(
                f"the name of the object ({meta['name']}) does not match the URL ({target.name})"
            )
        meta["name"] = target.name
        exists = self.store.exists(target.rt, ns, target.name)
        live = self.store.get(target.rt, ns, target.name) if exists else None
        schema = self._schema(target.rt)
        result = ownership.apply(
            target.rt, schema, live, body, options.field_manager, force=options.force
        )
        options.applied = True
        if live is None:
            return self.create(self.target(target.rt, target.namespace), result, options)
        if meta.get("resourceVersion"):
            result["metadata"]["resourceVersion"] = meta["resourceVersion"]
        return self._replace(target, ns, result, options)

    def delete(self, target: _Target, options: Options | None = None) -> tuple[int, Obj]:
        assert target.name is not None
        ns = target.namespace or ""
        if options is not None and options.dry_run:
            return 200, self.store.delete(target.rt, ns, target.name, dry_run=True)
        if target.rt is NAMESPACE:
            self._empty_namespace(target.name)
        result = self.store.delete(target.rt, ns, target.name)
        self._forget_schemas(target.rt)
        self._sync_service(target.rt, ns, target.name)
        if target.rt is CRD and not result["metadata"].get("deletionTimestamp"):
            self._forget_crd(result)
        if result["metadata"].get("deletionTimestamp") and self.store.exists(
            target.rt, ns, target.name
        ):
            return 200, result
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": target.name,
                "group": target.rt.group,
                "kind": target.rt.plural,
                "uid": result["metadata"].get("uid"),
            },
        }
        return 200, status

    def list(self, target: _Target, query: dict[str, str]) -> Obj:
        selector = Selector.parse(query.get("labelSelector", ""), query.get("fieldSelector", ""))
        requested = query.get("resourceVersion", "")
        if requested not in ("", "0"):
            self.store.check_fresh(_int(requested, "resourceVersion"))
        items, revision = self.store.list(target.rt, target.namespace, selector)
        start_after = None
        token = query.get("continue")
        if token:
            revision, start_after = _decode_continue(token)
            self.store.check_fresh(revision)
            items = [o for o in items if _order(o) > start_after]
        limit = _int(query.get("limit", "0"), "limit")
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        if limit > 0 and len(items) > limit:
            meta["continue"] = _encode_continue(revision, _order(items[limit - 1]))
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {
            "kind": f"{target.rt.kind}List",
            "apiVersion": target.rt.api_version,
            "metadata": meta,
            "items": items,
        }

    def watch(self, target: _Target, query: dict[str, str]) -> Subscription:
        selector = Selector.parse(query.get("labelSelector", ""), query.get("fieldSelector", ""))
        requested = query.get("resourceVersion", "")
        since = None if requested in ("", "0") else _int(requested, "resourceVersion")
        return self.store.subscribe(target.rt, target.namespace, selector, since)

    # -- schemas --------------------------------------------------------------

    def openapi(self) -> openapi.Documents:
        """The OpenAPI documents for what is served now (rebuilt when a CRD changes)."""
        crds, _ = self.store.list(CRD, None, Selector())
        key = tuple(sorted((c["metadata"]["name"], c["metadata"]["resourceVersion"]) for c in crds))
        if self._documents is None or self._documents[0] != key:
            self._documents = (key, openapi.Documents(self.types.all(), self._crd_of))
        return self._documents[1]

    def _crd_of(self, rt: ResourceType) -> Obj | None:
        if rt.status_subresource is None:
            return None  # built in
        return self.store.get(CRD, "", f"{rt.plural}.{rt.group}")

    def _custom_values(self, rt: ResourceType, obj: Obj) -> Obj:
        """A custom resource with its CRD's defaults, or its 422."""
        crd = self._crd_of(rt)
        if crd is None:
            return obj
        versions = crd.get("spec", {}).get("versions") or []
        version: dict[str, Any] = next((v for v in versions if v.get("name") == rt.version), {})
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        return structural.check(rt, obj, schema) if schema else obj

    def _schema(self, rt: ResourceType) -> dict[str, Any]:
        """A kind's schema: kube's for a built-in kind, its CRD's otherwise."""
        schema = self._schemas.get(rt)
        if schema is None:
            crd = self._crd_of(rt)
            if crd is not None:
                schema = openapi.crd_schema(rt, crd)
            else:
                name = openapi.builtin_name(rt)
                schema = openapi.upstream()[name] if name else {}
            self._schemas[rt] = schema
        return schema

    def _forget_schemas(self, rt: ResourceType) -> None:
        if rt is CRD:
            self._schemas.clear()

    def known_fields(self, rt: ResourceType, obj: Obj, options: Options) -> Obj:
        """The object without the fields its schema does not declare, under
        the request's fieldValidation."""
        schema = self._schema(rt)
        structural = rt.status_subresource is not None
        fields = openapi.Fields(schema, structural=structural) if schema else None
        known, warnings = openapi.check_fields(rt, obj, fields, options.field_validation)
        options.warnings.extend(warnings)
        return known

    # -- helpers --------------------------------------------------------------

    def _namespace_for_write(self, target: _Target, obj: Obj) -> str:
        if not target.rt.namespaced:
            return ""
        meta = obj.setdefault("metadata", {})
        ns = target.namespace or meta.get("namespace")
        if not ns:
            raise KubeError.bad_request("the namespace of the object is required")
        if meta.get("namespace") not in (None, "", ns):
            raise KubeError.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if not self.store.exists(NAMESPACE, "", ns):
            raise KubeError.not_found(NAMESPACE, ns)
        return str(ns)

    @staticmethod
    def _check_kind(rt: ResourceType, obj: Obj) -> None:
        kind = obj.get("kind")
        if kind not in (None, "", rt.kind):
            raise KubeError.bad_request(f"the kind {kind!r} does not match the resource {rt.kind}")

    def _establish(self, crd: Obj, declared: Sequence[ResourceType]) -> Obj:
        for rt in declared:
            self.types.add(rt)
        crd["status"] = {
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                },
            ],
            "acceptedNames": crd["spec"]["names"],
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
        }
        return self.store.update(CRD, "", crd["metadata"]["name"], crd)

    def _forget_crd(self, crd: Obj) -> None:
        for rt in types_from_crd(crd):
            items, _ = self.store.list(rt, None, Selector())
            for item in items:
                meta = item["metadata"]
                with contextlib.suppress(KubeError):
                    self.store.delete(rt, meta.get("namespace", ""), meta["name"])
            self.types.remove_group_kind(rt.group, rt.plural)

    def _empty_namespace(self, namespace: str) -> None:
        for rt in self.types.all():
            if not rt.namespaced:
                continue
            items, _ = self.store.list(rt, namespace, Selector())
            for item in items:
                with contextlib.suppress(KubeError):
                    self.store.delete(rt, namespace, item["metadata"]["name"])
                self._sync_service(rt, namespace, item["metadata"]["name"])


def _object(body: Any) -> Obj:
    if not isinstance(body, dict):
        raise KubeError.bad_request("the request body must be a JSON object")
    return body


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise KubeError.bad_request(f"invalid {name}: {text!r}") from None


def _order(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def _encode_continue(revision: int, after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"rv": revision, "start": after}).encode()).decode()


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError):
        raise KubeError.bad_request("continue key is not valid") from None


async def watch_events(
    api: KubeApi, rt: ResourceType, sub: Subscription, query: dict[str, str]
) -> AsyncIterator[dict[str, Any]]:
    """The events of one watch stream, with bookmarks and a timeout."""
    timeout = _int(query.get("timeoutSeconds", "1800"), "timeoutSeconds")
    bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (remaining := deadline - loop.time()) > 0:
        wait = min(remaining, api.bookmark_interval) if bookmarks else remaining
        try:
            event = await asyncio.wait_for(sub.queue.get(), wait)
        except TimeoutError:
            if bookmarks and deadline - loop.time() > 0:
                yield _bookmark(rt, api.store.revision)
            continue
        if event is None:
            return  # dropped by fault injection
        yield {"type": event.type, "object": event.obj}


def _bookmark(rt: ResourceType, revision: int) -> dict[str, Any]:
    meta = {"resourceVersion": str(revision)}
    return {
        "type": "BOOKMARK",
        "object": {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta},
    }
