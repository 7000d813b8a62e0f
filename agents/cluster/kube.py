"""The agent's only way to Kubernetes: kubernetes_asyncio's ApiClient (its
kubeconfig loading, TLS and auth), spoken in plain JSON objects.

Objects stay dicts as the API server sends them, so the same code works
for built-in kinds and for the MCS custom resources, and no model classes
are built per watch event.  ``Informer`` keeps a cache of one kind by list
and watch (resuming from the last resourceVersion, relisting on 410), as
client-go's informers do."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config import incluster_config

from agents.cluster.kube_errors import (
    BadConfig,
    Cause,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    Unavailable,
    causes_of,
)
from federation.shared.clock import Backoff

log = logging.getLogger(__name__)

Obj = dict[str, Any]
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True, slots=True)
class Kind:
    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return base + (f"/{name}" if name else "")


NAMESPACES = Kind("", "v1", "namespaces", namespaced=False)
NODES = Kind("", "v1", "nodes", namespaced=False)
SERVICES = Kind("", "v1", "services")
ENDPOINT_SLICES = Kind("discovery.k8s.io", "v1", "endpointslices")
LEASES = Kind("coordination.k8s.io", "v1", "leases")
SECRETS = Kind("", "v1", "secrets")
CONFIG_MAPS = Kind("", "v1", "configmaps")
CRDS = Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False)
MCS_GROUP = "multicluster.x-k8s.io"
SERVICE_EXPORTS = Kind(MCS_GROUP, "v1alpha1", "serviceexports")
SERVICE_IMPORTS = Kind(MCS_GROUP, "v1alpha1", "serviceimports")
EVENTS = Kind("", "v1", "events")
KUBE_BACKOFF = Backoff(0.1, 5.0)  # an informer's list and watch after a failure
ISTIO_GROUP = "networking.istio.io"
WORKLOAD_ENTRIES = Kind(ISTIO_GROUP, "v1beta1", "workloadentries")  # served by Istio 1.8+
SERVICE_ENTRIES = Kind(ISTIO_GROUP, "v1beta1", "serviceentries")
HTTP_ROUTES = Kind("gateway.networking.k8s.io", "v1", "httproutes")  # Gateway API 1.0+


def key_of(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


class Kube:
    def __init__(self, api: client.ApiClient, *, name: str = "") -> None:
        self.api = api
        self.name = name

    @classmethod
    async def from_kubeconfig(cls, path: Path | str, context: str | None = None) -> Kube:
        configuration = client.Configuration()
        try:  # read it ourselves first: a missing file is named as missing
            text = await asyncio.to_thread(Path(path).read_text)
        except OSError as err:
            raise BadConfig(f"cannot read kubeconfig {path}: {err.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise BadConfig(f"kubeconfig {path} is not YAML: {err}") from None
        contexts = loaded.get("contexts") if isinstance(loaded, dict) else None
        names = [c.get("name") for c in contexts or [] if isinstance(c, dict)]
        if context is not None and context not in names:
            having = ", ".join(map(str, names)) or "none"
            raise BadConfig(f"kubeconfig {path} has no context {context!r} (it has: {having})")
        if not names:
            raise BadConfig(f"kubeconfig {path} defines no contexts")
        if context is None and not loaded.get("current-context"):
            raise BadConfig(f"kubeconfig {path} has no current-context: pass --context")
        try:
            await config.load_kube_config(
                config_file=str(path), context=context, client_configuration=configuration
            )
        except (OSError, config.ConfigException) as err:
            raise BadConfig(f"cannot load kubeconfig {path}: {err}") from None
        return cls(client.ApiClient(configuration), name=context or str(path))

    @classmethod
    def in_cluster(
        cls,
        environ: dict[str, str] | None = None,
        account: Path = SERVICE_ACCOUNT_DIR,
    ) -> Kube:
        """The API server of the cluster this pod runs in: its service
        account's token (re-read as the kubelet rotates it) and CA, and
        KUBERNETES_SERVICE_HOST/PORT."""
        configuration = client.Configuration()
        loader = incluster_config.InClusterConfigLoader(
            str(account / "token"), str(account / "ca.crt"), environ=environ or dict(os.environ)
        )
        try:
            loader.load_and_set(configuration)
        except (OSError, config.ConfigException) as err:
            raise BadConfig(f"not in a cluster ({err}); give --kubeconfig") from None
        return cls(client.ApiClient(configuration), name="in-cluster")

    async def close(self) -> None:
        await self.api.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Obj | None = None,
        timeout: float | None = 30.0,
    ) -> aiohttp.ClientResponse:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        try:
            response: aiohttp.ClientResponse = await self.api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            reason = err or type(err).__name__
            raise Unavailable(f"cannot reach the Kubernetes API: {reason}") from err
        except client.ApiException as err:
            raise KubeError.of(err.status or 0, str(err.reason)) from err
        if response.status >= 400:
            causes: tuple[Cause, ...] = ()
            try:
                status = json.loads(await response.read())
                message = status.get("message", response.reason)
                causes = causes_of(status) if isinstance(status, dict) else ()
            except ValueError:
                message = response.reason
            finally:
                response.release()
            raise KubeError.of(response.status, str(message), causes)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Obj:
        response = await self.request(method, path, **kwargs)
        try:
            data: Obj = json.loads(await response.read())
            return data
        finally:
            response.release()

    async def get(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        try:
            return await self._json("GET", kind.path(namespace, name))
        except NotFound:
            return None

    async def served(self, kind: Kind) -> bool:
        """Whether the API server serves ``kind`` (its CRD is installed)."""
        try:
            await self._json("GET", kind.path(), query={"limit": 1})
        except NotFound:
            return False
        return True

    async def list(
        self, kind: Kind, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[list[Obj], str]:
        """Every object (paging with limit/continue) and the list's resourceVersion."""
        items: list[Obj] = []
        query: dict[str, Any] = {"limit": 500}
        if label_selector:
            query["labelSelector"] = label_selector
        while True:
            page = await self._json("GET", kind.path(namespace), query=query)
            items += page.get("items") or []
            token = page.get("metadata", {}).get("continue")
            if not token:
                return items, str(page["metadata"]["resourceVersion"])
            query["continue"] = token

    async def create(self, kind: Kind, namespace: str | None, obj: Obj) -> Obj:
        return await self._json("POST", kind.path(namespace), body=obj)

    async def replace(self, kind: Kind, namespace: str | None, name: str, obj: Obj) -> Obj:
        return await self._json("PUT", kind.path(namespace, name), body=obj)

    async def replace_status(self, kind: Kind, namespace: str | None, name: str, obj: Obj) -> Obj:
        """PUT the status subresource (404 where the kind has none)."""
        return await self._json("PUT", kind.path(namespace, name) + "/status", body=obj)

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> bool:
        try:
            await self._json("DELETE", kind.path(namespace, name))
            return True
        except NotFound:
            return False

    async def watch(
        self,
        kind: Kind,
        resource_version: str,
        *,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """(type, object) after ``resource_version``, BOOKMARKs included;
        raises ``Gone`` when that version is compacted."""
        query: dict[str, Any] = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
        }
        if label_selector:
            query["labelSelector"] = label_selector
        response = await self.request(
            "GET", kind.path(), query=query, timeout=timeout_seconds + 30.0
        )
        try:
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object", {})
                    code, message = int(status.get("code", 500)), str(status.get("message"))
                    raise KubeError.of(code, message, causes_of(status))
                yield event["type"], event["object"]
        except (aiohttp.ClientError, OSError) as err:
            raise Unavailable(f"the watch broke: {err or type(err).__name__}") from err
        finally:
            response.release()


@dataclass
class Informer:
    """A cache of one kind, kept by list and watch.  ``on_change`` gets
    every changed object (a deleted one as last seen), and None after a
    (re)list, meaning "anything may have changed".  A writer that ``store``s
    what the API server answered is not called back for the echo of its own
    write.  ``index_labels`` keeps, per label, the keys of the objects by
    (namespace, label value), so per-key reconcilers find a service's
    objects without scanning the kind."""

    kube: Kube
    kind: Kind
    on_change: Callable[[Obj | None], None]
    label_selector: str | None = None
    index_labels: tuple[str, ...] = ()
    cache: dict[str, Obj] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    _index: dict[str, dict[tuple[str, str], set[str]]] = field(default_factory=dict)

    def items(self) -> list[Obj]:
        return list(self.cache.values())

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.cache.get(f"{namespace}/{name}")

    def by_label(self, label: str, namespace: str, value: str) -> list[Obj]:
        """The cached objects whose ``label`` is ``value`` in ``namespace``."""
        keys = self._index.get(label, {}).get((namespace, value), ())
        return [self.cache[k] for k in sorted(keys) if k in self.cache]

    def label_values(self, label: str) -> list[tuple[str, str]]:
        """Every (namespace, value) of ``label`` the cache holds."""
        return sorted(self._index.get(label, {}))

    def store(self, obj: Obj) -> None:
        key = key_of(obj)
        old = self.cache.get(key)
        if old is not None:
            self._unindex(key, old)
        self.cache[key] = obj
        self._add_index(key, obj)

    def forget(self, namespace: str, name: str) -> Obj | None:
        key = f"{namespace}/{name}"
        old = self.cache.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _add_index(self, key: str, obj: Obj) -> None:
        meta = obj.get("metadata", {})
        labels = meta.get("labels") or {}
        for label in self.index_labels:
            value = labels.get(label)
            if value is not None:
                where = (meta.get("namespace", ""), value)
                self._index.setdefault(label, {}).setdefault(where, set()).add(key)

    def _unindex(self, key: str, obj: Obj) -> None:
        meta = obj.get("metadata", {})
        labels = meta.get("labels") or {}
        for label in self.index_labels:
            value = labels.get(label)
            if value is None:
                continue
            where = (str(meta.get("namespace", "")), str(value))
            held = self._index.get(label, {}).get(where)
            if held is not None:
                held.discard(key)
                if not held:
                    del self._index[label][where]

    def _replace_all(self, items: list[Obj]) -> None:
        self.cache = {}
        self._index = {}
        for obj in items:
            self.store(obj)

    async def run(self) -> None:
        retry = KUBE_BACKOFF.retry()
        version: str | None = None
        while True:
            try:
                if version is None:
                    items, version = await self.kube.list(
                        self.kind, label_selector=self.label_selector
                    )
                    self._replace_all(items)
                    self.synced.set()
                    self.on_change(None)
                async for kind, obj in self.kube.watch(
                    self.kind, version, label_selector=self.label_selector
                ):
                    version = str(obj["metadata"].get("resourceVersion", version))
                    if kind == "BOOKMARK":
                        continue
                    key = key_of(obj)
                    if kind == "DELETED":
                        old = self.cache.get(key)
                        if old is None:
                            continue  # the writer already forgot it
                        self.forget(obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                        self.on_change(old)
                        continue
                    old = self.cache.get(key)
                    self.store(obj)
                    if old is not None and _version(old) == _version(obj):
                        continue  # the writer already holds this version
                    self.on_change(obj)
                    if old is not None and _labels_moved(old, obj, self.index_labels):
                        self.on_change(old)
                retry.succeeded()
            except Gone:
                version = None  # relist
            except KubeError as err:
                delay = retry.failed()
                log.warning(
                    "%s %s: %s; retrying in %.1fs", self.kube.name, self.kind.plural, err, delay
                )
                await asyncio.sleep(delay)


def _labels_moved(old: Obj, new: Obj, labels: tuple[str, ...]) -> bool:
    """True if an indexed label changed: the old owner must look again too."""
    before = old["metadata"].get("labels") or {}
    after = new["metadata"].get("labels") or {}
    return any(before.get(label) != after.get(label) for label in labels)


def _version(obj: Obj) -> object:
    return obj["metadata"].get("resourceVersion")


async def put(kube: Kube, kind: Kind, body: Obj, current: Obj | None) -> Obj:
    """Create ``body`` (making its namespace if needed) or replace
    ``current`` with it at ``current``'s resourceVersion (409 if it moved)."""
    meta = body["metadata"]
    namespace = meta.get("namespace")
    if current is None:
        if namespace:
            await ensure_namespace(kube, namespace)
        return await kube.create(kind, namespace, body)
    meta["resourceVersion"] = current["metadata"]["resourceVersion"]
    return await kube.replace(kind, namespace, meta["name"], body)


async def ensure_namespace(kube: Kube, namespace: str) -> None:
    if await kube.get(NAMESPACES, None, namespace) is None:
        with contextlib.suppress(Conflict):  # made meanwhile
            await kube.create(NAMESPACES, None, {"metadata": {"name": namespace}})


__all__ = [
    "CONFIG_MAPS",
    "ENDPOINT_SLICES",
    "HTTP_ROUTES",
    "LEASES",
    "NAMESPACES",
    "NODES",
    "SECRETS",
    "SERVICES",
    "SERVICE_ENTRIES",
    "SERVICE_EXPORTS",
    "SERVICE_IMPORTS",
    "WORKLOAD_ENTRIES",
    "BadConfig",
    "Cause",
    "Conflict",
    "Forbidden",
    "Gone",
    "Informer",
    "Invalid",
    "Kind",
    "Kube",
    "KubeError",
    "NotFound",
    "Obj",
    "Unavailable",
    "ensure_namespace",
    "key_of",
    "put",
]
