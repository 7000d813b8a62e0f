"""The HTTP face of the emulator: discovery, resource verbs, watch streams,
bearer-token auth over TLS, and fault injection (``/_sim/faults`` or the
Python API of ``SimKubeServer``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from federation.sim.kube import events_v1, tables
from federation.sim.kube import patch as patches
from federation.sim.kube.errors import KubeError
from federation.sim.kube.options import Options
from federation.sim.kube.rbac import Grant, Request
from federation.sim.kube.resources import EVENT, EVENTS_V1
from federation.sim.kube.server import OPEN_PATHS, KubeApi, watch_events
from federation.sim.kube.services import DEFAULT_SERVICE_CIDR
from federation.sim.kube.tls import make_serving_certs, write_kubeconfig

API_KEY = web.AppKey("kube_api", KubeApi)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _json(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    response = web.Response(body=json.dumps(body), status=status, content_type="application/json")
    for warning in warnings or []:  # one Warning header each, as kube sends them
        response.headers.add("Warning", f'299 - "{_quoted(warning)}"')
    return response


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _error(err: KubeError) -> web.Response:
    return _json(err.status(), err.code)


def _verb(request: web.Request) -> str:
    if request.method == "GET":
        if request.query.get("watch", "").lower() in ("1", "true"):
            return "watch"
        return "get" if _has_name(request.path) else "list"
    return _VERBS.get(request.method, request.method.lower())


def _has_name(path: str) -> bool:
    parts = [p for p in path.split("/") if p]
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    return len(rest) >= 2


def _authorize(api: KubeApi, request: web.Request) -> None:
    """The admin token may do anything; a granted token what its RBAC allows."""
    header = request.headers.get("Authorization", "")
    if secrets.compare_digest(header, f"Bearer {api.token}"):
        return
    token = header.removeprefix("Bearer ")
    grant = next((g for t, g in api.grants.items() if secrets.compare_digest(token, t)), None)
    if grant is None:
        raise KubeError.unauthorized()
    wanted = Request.of(_verb(request), request.path)
    if wanted is not None:
        grant.check(wanted)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    api = request.app[API_KEY]
    if api.faults.unreachable and not request.path.startswith("/_sim/"):
        # Unreachable: the client sees its connection die with no answer.
        if request.transport is not None:
            request.transport.abort()
        raise web.HTTPServiceUnavailable()
    try:
        if request.path not in OPEN_PATHS and not request.path.startswith("/_sim/"):
            _authorize(api, request)
        if api.faults.latency_seconds > 0:
            await asyncio.sleep(api.faults.latency_seconds)
        injecting = api.faults.error_rates and not request.path.startswith("/_sim/")
        if injecting and api.faults.should_fail(_verb(request)):
            raise KubeError(500, "InternalError", "Internal error occurred: injected fault")
        return await handler(request)
    except KubeError as err:
        return _error(err)


async def _read_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        if request.content_type == "application/apply-patch+yaml":
            import yaml

            return yaml.safe_load(raw)
        return json.loads(raw)
    except ValueError as err:
        raise KubeError.bad_request(f"the request body is not valid JSON: {err}") from None


async def _resource(request: web.Request) -> web.StreamResponse:
    api = request.app[API_KEY]
    target = api.resolve(request.path)
    query = dict(request.query)
    if target.rt is EVENTS_V1:
        return await _new_events(request, api, target, query)
    if request.method == "GET":
        if query.get("watch", "").lower() in ("1", "true"):
            return await _stream_watch(request, api, target, query)
        if tables.wants_table(request.headers.get("Accept", "")):
            return _json(_table(api, target, query))
        if target.name is None:
            return _json(api.list(target, query))
        return _json(api.store.get(target.rt, target.namespace or "", target.name))
    options = Options.of(query, request.headers.get("User-Agent", ""))
    if request.method == "POST" and target.name is None:
        created = api.create(target, await _read_body(request), options)
        return _json(created, 201, options.warnings)
    if target.name is None:
        raise KubeError(
            405, "MethodNotAllowed", f"{request.method} is not supported on a collection"
        )
    if request.method == "PUT":
        updated = api.update(target, await _read_body(request), options)
        return _json(updated, 200, options.warnings)
    if request.method == "PATCH":
        body = await _read_body(request)
        return _json(api.patch(target, request.content_type, body, options), 200, options.warnings)
    if request.method == "DELETE":
        status, deleted = api.delete(target, options)
        return _json(deleted, status)
    raise KubeError(405, "MethodNotAllowed", f"{request.method} is not supported")


async def _new_events(
    request: web.Request, api: KubeApi, target: Any, query: dict[str, str]
) -> web.StreamResponse:
    """events.k8s.io/v1: the core Events, converted both ways (events_v1)."""
    core = api.target(EVENT, target.namespace, target.name)
    if request.method == "GET":
        if query.get("watch", "").lower() in ("1", "true"):
            return await _stream_watch(request, api, core, query, events_v1.from_core)
        if tables.wants_table(request.headers.get("Accept", "")):
            return _json(_table(api, core, query))
        if target.name is None:
            return _json(events_v1.convert_list(api.list(core, query)))
        return _json(events_v1.from_core(api.store.get(EVENT, target.namespace, target.name)))
    options = Options.of(query, request.headers.get("User-Agent", ""))
    if request.method == "DELETE" and target.name is not None:
        status, deleted = api.delete(core, options)
        return _json(deleted, status)
    body = await _read_body(request)
    if request.method == "POST" and target.name is None:
        event = events_v1.to_core(api.known_fields(EVENTS_V1, body, options), creating=True)
        created = events_v1.from_core(api.create(core, event, options))
        return _json(created, 201, options.warnings)
    if target.name is None or request.method not in ("PUT", "PATCH"):
        raise KubeError(405, "MethodNotAllowed", f"{request.method} is not supported here")
    if request.method == "PATCH":
        current = events_v1.from_core(api.store.get(EVENT, target.namespace, target.name))
        body = patches.patched(current, request.content_type, body, strategic=True)
    event = events_v1.to_core(api.known_fields(EVENTS_V1, body, options), creating=False)
    updated = events_v1.from_core(api.update(core, event, options))
    return _json(updated, 200, options.warnings)


def _table(api: KubeApi, target: Any, query: dict[str, str]) -> dict[str, Any]:
    """``kubectl get``'s view: the object (or list) as a meta.k8s.io Table."""
    include = query.get("includeObject", "Metadata")
    if target.name is None:
        listed = api.list(target, query)
        return tables.table(
            target.rt, listed.get("items") or [], listed["metadata"]["resourceVersion"], include
        )
    obj = api.store.get(target.rt, target.namespace or "", target.name)
    return tables.table(target.rt, [obj], obj["metadata"].get("resourceVersion", ""), include)


async def _stream_watch(
    request: web.Request, api: KubeApi, target: Any, query: dict[str, str],
    convert: Callable[[Any], Any] = lambda obj: obj,
) -> web.StreamResponse:  # fmt: skip
    try:
        sub = api.watch(target, query)
    except KubeError as err:
        if err.code != 410:
            raise
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(json.dumps({"type": "ERROR", "object": err.status()}).encode() + b"\n")
        return response
    response = web.StreamResponse(
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    )
    await response.prepare(request)
    as_table = tables.wants_table(request.headers.get("Accept", ""))
    include = query.get("includeObject", "Metadata")
    try:
        async for event in watch_events(api, target.rt, sub, query):
            if event["type"] != "BOOKMARK":
                obj = event["object"]
                rv = obj.get("metadata", {}).get("resourceVersion", "")
                # ``kubectl get --watch``: each event's object is a one-row Table.
                shown = tables.table(target.rt, [obj], rv, include) if as_table else convert(obj)
                event = event | {"object": shown}
            await response.write(json.dumps(event).encode() + b"\n")
    except ConnectionResetError:  # the client left; a cancellation propagates
        pass
    finally:
        api.store.unsubscribe(sub)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def _version(request: web.Request) -> web.Response:
    return _json(
        {"major": "1", "minor": "31", "gitVersion": "v1.31.0-sim", "platform": "simulated/linux"}
    )


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _api_versions(request: web.Request) -> web.Response:
    return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})


async def _api_groups(request: web.Request) -> web.Response:
    api = request.app[API_KEY]
    groups = [
        {
            "name": g,
            "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
            "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
        }
        for g, vs in sorted(api.types.groups().items())
    ]
    return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})


def _resource_list(api: KubeApi, group: str, version: str) -> dict[str, Any]:
    verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
    resources = []
    for rt in api.types.all():
        if rt.group == group and rt.version == version:
            entry = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": verbs,
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            resources.append(entry)
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    if not resources:
        raise KubeError(404, "NotFound", "the server could not find the requested resource")
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


async def _core_resources(request: web.Request) -> web.Response:
    return _json(_resource_list(request.app[API_KEY], "", "v1"))


async def _group_resources(request: web.Request) -> web.Response:
    api = request.app[API_KEY]
    return _json(_resource_list(api, request.match_info["group"], request.match_info["version"]))


_PROTOBUF = "application/com.github.proto-openapi.spec"


def _openapi_json(request: web.Request, doc: Any) -> web.Response:
    """An OpenAPI document as JSON; a client that will take only protobuf
    gets 406, and falls back to JSON as against an old server."""
    accept = request.headers.get("Accept", "")
    if accept and all(_PROTOBUF in part for part in accept.split(",")):
        raise KubeError(406, "NotAcceptable", "only application/json is served here")
    response = _json(doc)
    if request.query.get("hash"):
        response.headers["Cache-Control"] = "public, immutable"
    return response


async def _openapi_v2(request: web.Request) -> web.Response:
    return _openapi_json(request, request.app[API_KEY].openapi().v2())


async def _openapi_v3_root(request: web.Request) -> web.Response:
    return _openapi_json(request, request.app[API_KEY].openapi().v3_root())


async def _openapi_v3(request: web.Request) -> web.Response:
    return _openapi_json(request, request.app[API_KEY].openapi().v3(request.match_info["gv"]))


async def _faults(request: web.Request) -> web.Response:
    """POST {"latencySeconds", "errorRates": {verb: p}, "dropWatches", "compact",
    "unreachable"}.  While unreachable, every other request has its connection
    cut without an answer and open watches end."""
    api = request.app[API_KEY]
    if request.method == "POST":
        body = await _read_body(request)
        if not isinstance(body, dict):
            raise KubeError.bad_request("expected an object")
        if "latencySeconds" in body:
            api.faults.latency_seconds = float(body["latencySeconds"])
        if "errorRates" in body:
            api.faults.error_rates = {str(k): float(v) for k, v in body["errorRates"].items()}
        if "unreachable" in body:
            api.faults.unreachable = bool(body["unreachable"])
        if body.get("dropWatches") or api.faults.unreachable:
            api.store.drop_watches()
        if body.get("compact"):
            api.store.compact()
    return _json(
        {
            "latencySeconds": api.faults.latency_seconds,
            "errorRates": api.faults.error_rates,
            "unreachable": api.faults.unreachable,
            "revision": api.store.revision,
        }
    )


def build_app(api: KubeApi) -> web.Application:
    app = web.Application(middlewares=[_guard], client_max_size=3 * 1024 * 1024)
    app[API_KEY] = api
    app.router.add_get("/version", _version)
    for path in OPEN_PATHS - {"/version"}:
        app.router.add_get(path, _healthz)
    app.router.add_get("/api", _api_versions)
    app.router.add_get("/apis", _api_groups)
    app.router.add_get("/api/v1", _core_resources)
    app.router.add_get("/apis/{group}/{version}", _group_resources)
    app.router.add_get("/openapi/v2", _openapi_v2)
    app.router.add_get("/openapi/v3", _openapi_v3_root)
    app.router.add_get("/openapi/v3/{gv:.+}", _openapi_v3)
    app.router.add_route("*", "/_sim/faults", _faults)
    app.router.add_route("*", "/api/v1/{tail:.+}", _resource)
    app.router.add_route("*", "/apis/{group}/{version}/{tail:.+}", _resource)
    return app


class SimKubeServer:
    """One simulated cluster's API server on a loopback address, over TLS."""

    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bookmark_interval: float = 1.0,
        service_cidr: str = DEFAULT_SERVICE_CIDR,
        loopback_endpoints: bool = False,
    ) -> None:
        """``loopback_endpoints``: let EndpointSlices hold 127/8 and ::1,
        which kube-apiserver refuses; simulated clusters, whose pods run on
        loopback addresses, set it.  Everything else stays as strict."""
        self.name = name
        self.host = host
        self.port = port
        self.api = KubeApi(
            token=secrets.token_urlsafe(24),
            bookmark_interval=bookmark_interval,
            service_cidr=service_cidr,
            loopback_endpoints=loopback_endpoints,
        )
        self._certs = make_serving_certs(name, [host, "localhost"])
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix=f"sim-{name}-")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def _ssl(self) -> ssl.SSLContext:
        cert = Path(self._tmp.name) / "tls.crt"
        key = Path(self._tmp.name) / "tls.key"
        cert.write_bytes(self._certs.cert_pem)
        key.write_bytes(self._certs.key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context

    async def start(self) -> None:
        self._runner = web.AppRunner(
            build_app(self.api), handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(
            self._runner, self.host, self.port, ssl_context=self._ssl(), reuse_address=True
        )
        await self._site.start()
        if self.port == 0:  # the port the system chose (on any event loop)
            self.port = int(self._runner.addresses[0][1])

    async def set_unreachable(self, unreachable: bool) -> None:
        """Fault injection: stop listening (and cut watches), or listen again."""
        if unreachable and self._site is not None:
            self.api.store.drop_watches()
            await self._site.stop()
            self._site = None
        elif not unreachable and self._site is None:
            await self._listen()

    async def stop(self) -> None:
        self.api.store.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._tmp.cleanup()

    def write_kubeconfig(self, path: Path, grant: Grant | None = None) -> Path:
        """A kubeconfig for the admin, or for a ServiceAccount under ``grant``."""
        token = self.api.token
        if grant is not None:
            token = secrets.token_urlsafe(24)
            self.api.grants[token] = grant
        write_kubeconfig(path, self.name, self.url, self._certs.ca_pem, token)
        return path

    async def __aenter__(self) -> SimKubeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
