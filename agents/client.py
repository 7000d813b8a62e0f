"""The registry client every agent (and fedctl) uses: one typed method per
route, over ``Transport`` (replicas, mutual TLS, retries).

- ``join``: pins the registry's root by the sha256 carried in the join token
  before trusting it, then exchanges the token and a CSR for a certificate;
- ``renew``: a new certificate for a new key, presenting the current one;
- ``changes``: a streamed snapshot (``Relist``, one ``Event`` per object,
  ``Synced``), then the watch from its revision; resumes from the last
  revision seen after a broken stream, and relists on 410.  Each event is
  delivered once.  Lines are read in bounded chunks: any legal event is
  read, and a line over ``max_line`` is one clear, retried error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

import aiohttp

from agents.errors import (
    REVOKED_RETRY,
    BadURL,
    Gone,
    RegistryError,
    Rejected,
    Revoked,
    Unauthorized,
    Unavailable,
    UnreadableStream,
    why,
)
from agents.joining import descends_from_pin, fetch_pinned_ca, registry_urls
from agents.published import Published
from agents.stream import (
    CHUNK,
    Ahead,
    Bookmark,
    Change,
    Event,
    Relist,
    Synced,
    check_status,
    parse_line,
    raise_error_line,
)
from agents.transport import Credentials, Transport, load_cert_chain
from federation.model import Cluster, EndpointSet, ServiceRef, SourceRef, TrafficPolicy, Workload
from federation.model.deltas import between
from federation.shared.clock import Clock
from federation.trust import ca as certs
from federation.trust.tokens import TokenError, pin_of

log = logging.getLogger("agents.client")


DELTA_FALLBACK = frozenset({400, 404, 405, 409, 413, 422})  # a refused delta is sent whole


class RegistryClient(Transport):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.published = Published()  # what it last published per shard, for deltas

    # -- join and renew ----------------------------------------------------------

    @classmethod
    async def join(
        cls, url: str, token: str, *, clock: Clock | None = None
    ) -> tuple[Credentials, str]:
        """Join with a token; returns the credential and the SPIFFE id."""
        try:
            pin = pin_of(token)
        except TokenError as err:
            raise Rejected(0, f"the join token cannot be read: {err}", reason="BadToken") from err
        ca_pem = await fetch_pinned_ca(registry_urls(url), pin)
        key = certs.new_key()
        async with cls(url, None, ca_pem=ca_pem, clock=clock, retries=3) as client:
            body = {"token": token, "csr": certs.make_csr(key).decode()}
            answer = await client.request("POST", "/v1/join", body, retry=False)
        return _credentials(answer, key), str(answer["identity"])

    async def renew(self) -> Credentials:
        key = certs.new_key()
        answer = await self.request("POST", "/v1/renew", {"csr": certs.make_csr(key).decode()})
        self.use(_credentials(answer, key))
        assert self.credentials is not None
        return self.credentials

    # -- records -----------------------------------------------------------------

    async def publish(self, endpoint_set: EndpointSet, *, retry: bool = True) -> dict[str, Any]:
        """Publish one shard: as a delta from what this client last
        published for it when that is much smaller (decision 50), else
        whole.  A delta the registry refuses (its stored shard is another
        generation, or it cannot take deltas) is sent again whole, whose
        answer is the authoritative one."""
        path = f"/v1/services/{endpoint_set.service}/sources/{endpoint_set.source}"
        last = self.published.take(endpoint_set)
        delta = None if last is None else between(last, endpoint_set)
        answer: dict[str, Any] | None = None
        if delta is not None:
            try:
                answer = await self.request("PATCH", path, delta, retry=retry)
            except Rejected as err:
                if err.status not in DELTA_FALLBACK:
                    raise
                log.debug("publishing %s whole: the delta was refused: %s", path, err)
        if answer is None:
            answer = await self.request("PUT", path, endpoint_set.to_wire(), retry=retry)
        self.published.keep(endpoint_set)
        return answer

    async def withdraw(
        self,
        service: ServiceRef,
        source: SourceRef,
        *,
        shard: int | None = None,
        retry: bool = True,
    ) -> dict[str, Any]:
        """Withdraw every shard of the source's set, or just ``shard``."""
        self.published.forget(service, source, shard)
        path = f"/v1/services/{service}/sources/{source}"
        if shard is not None:
            path += f"?shard={shard}"
        return await self.request("DELETE", path, retry=retry)

    async def heartbeat(self, source: SourceRef, applied: int | None = None) -> dict[str, Any]:
        """Renew liveness; ``applied``: the registry revision materialized."""
        body = None if applied is None else {"appliedRevision": applied}
        return await self.request("POST", f"/v1/sources/{source}/heartbeat", body)

    # -- members -----------------------------------------------------------------

    async def register(
        self, record: Cluster | Workload, *, token_ttl: int | None = None, retry: bool = False
    ) -> dict[str, Any]:
        """Register a cluster or a VM; the answer carries its join token."""
        body: dict[str, Any] = {"record": record.to_wire()}
        if token_ttl is not None:
            body["tokenTtlSeconds"] = token_ttl
        return await self.request("POST", f"/v1/{_plural(record)}", body, retry=retry)

    async def cluster(self, name: str) -> Cluster:
        return Cluster.from_wire(await self.request("GET", f"/v1/clusters/{name}"))

    async def vm(self, name: str, *, retry: bool = True) -> Workload:
        return Workload.from_wire(await self.request("GET", f"/v1/vms/{name}", retry=retry))

    async def members(self, plural: MemberPlural) -> list[dict[str, Any]]:
        """The registered clusters or VMs, as the registry lists them."""
        return list((await self.request("GET", f"/v1/{plural}"))["items"])

    async def remove(self, plural: MemberPlural, name: str) -> None:
        """Remove a member and everything it published; its credential is
        refused from now on."""
        await self.request("DELETE", f"/v1/{plural}/{name}", retry=False)

    async def new_token(self, plural: MemberPlural, name: str, token_ttl: int) -> dict[str, Any]:
        body = {"tokenTtlSeconds": token_ttl}
        return await self.request("POST", f"/v1/{plural}/{name}/tokens", body, retry=False)

    async def status(self) -> dict[str, Any]:
        return await self.request("GET", "/v1/status")

    # -- services and policies ---------------------------------------------------

    async def services(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/v1/services"))["items"])

    async def endpoint_sets(self, service: ServiceRef) -> list[EndpointSet]:
        """Every source's endpoint set (each shard) for ``service``."""
        answer = await self.request("GET", f"/v1/services/{service}")
        return [EndpointSet.from_wire(item) for item in answer["items"]]

    async def policies(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/v1/policies"))["items"])

    async def put_policy(self, policy: TrafficPolicy, *, retry: bool = True) -> dict[str, Any]:
        return await self.request(
            "PUT", _policy_path(policy.service), policy.to_wire(), retry=retry
        )

    async def delete_policy(self, service: ServiceRef) -> None:
        await self.request("DELETE", _policy_path(service), retry=False)

    # -- admins --------------------------------------------------------------------

    async def issue_admin(self, name: str, csr_pem: bytes) -> dict[str, Any]:
        body = {"name": name, "csr": csr_pem.decode()}
        return await self.request("POST", "/v1/admins", body, retry=False)

    async def admins(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/v1/admins"))["items"])

    async def remove_admin(self, name: str) -> None:
        await self.request("DELETE", f"/v1/admins/{name}", retry=False)

    # -- trust ---------------------------------------------------------------------

    async def ca(self) -> dict[str, Any]:
        """The issuing root, its sha256, the bundle and the succession."""
        return await self.request("GET", "/v1/ca")

    async def ca_status(self) -> dict[str, Any]:
        return await self.request("GET", "/v1/ca/status")

    async def rotate(self, body: dict[str, Any], csr_pem: bytes) -> dict[str, Any]:
        """Start or advance a root rotation; ``csr_pem`` asks for the
        caller's credential under the new root."""
        request = {**body, "csr": csr_pem.decode()}
        return await self.request("POST", "/v1/ca/rotate", request, retry=False)

    async def workload_certificate(
        self, csr_pem: bytes, namespace: str, service_account: str
    ) -> dict[str, Any]:
        """A workload certificate for the VM's service account."""
        body = {"csr": csr_pem.decode(), "namespace": namespace, "serviceAccount": service_account}
        return await self.request("POST", "/v1/workload-certs", body)

    async def intermediate(
        self, cluster: str, csr_pem: bytes, lifetime: float | None = None
    ) -> dict[str, Any]:
        """The cluster's intermediate CA certificate for ``csr_pem``."""
        body: dict[str, Any] = {"csr": csr_pem.decode()}
        if lifetime is not None:
            body["lifetimeSeconds"] = lifetime
        return await self.request("POST", f"/v1/clusters/{cluster}/intermediate", body)

    async def ack_trust(self, version: int) -> None:
        """Say this member trusts bundle ``version``."""
        await self.request("POST", "/v1/trust/acks", {"version": version})

    # -- snapshot ------------------------------------------------------------------

    async def snapshot(self) -> AsyncIterator[Relist | Event | Synced]:
        """The registry's streamed snapshot: Relist, an Event per object,
        Synced.  Raises ``RegistryError`` if it breaks off before Synced."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
        url = self.url
        try:
            async with self._http().get(f"{url}/v1/snapshot", timeout=timeout) as answer:
                await check_status(answer)
                revision: int | None = None
                async for line in self._lines(answer):
                    kind = line.get("type")
                    if kind == "BEGIN":
                        revision = int(line["revision"])
                        yield Relist(revision)
                    elif kind == "PUT" and revision is not None:
                        yield Event("PUT", revision, line["kind"], line["key"], line["object"])
                    elif kind == "END" and revision is not None:
                        yield Synced(revision)
                        return
                    elif kind == "ERROR":
                        raise_error_line(line)
                    else:
                        raise UnreadableStream(f"unexpected snapshot line of type {kind!r}")
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            self._next_replica()
            raise Unavailable(f"snapshot from {url} broke: {why(err)}") from err
        raise Unavailable(f"the snapshot from {url} ended before its END line")

    async def collect_snapshot(self) -> tuple[int, list[Event]]:
        """The whole snapshot in memory: for tests and small tools only."""
        events: list[Event] = []
        revision = 0
        async for change in self.snapshot():
            if isinstance(change, Relist):
                events.clear()
            elif isinstance(change, Event):
                events.append(change)
            else:
                revision = change.revision
        return revision, events

    # -- watch ---------------------------------------------------------------------

    async def changes(
        self, since: int | None = None, *, patches: bool = False
    ) -> AsyncGenerator[Change, None]:
        """A streamed snapshot (unless resuming from ``since``), then events,
        forever.  Broken streams resume after the last revision seen; 410
        relists.  With ``patches``, a rewritten endpoint set may come as an
        Event of type PATCH whose object is the delta (``model.patches``):
        only a consumer holding every earlier event can apply it."""
        retry = self.backoff.retry()
        # Several changes can share a revision (one etcd transaction of
        # several, decision 57), and a stream can break between them: a
        # broken stream resumes after the last revision wholly seen, and
        # skips the keys of the next one that were already given.
        given: tuple[int, set[str]] = (0, set())  # a revision, and its keys given
        while True:
            try:
                if since is None:
                    async for change in self.snapshot():
                        self.stream.line()
                        if isinstance(change, Synced):
                            since = change.revision
                        yield change
                    retry.succeeded()
                    given = (0, set())
                assert since is not None
                async for event in self._watch(since, patches):
                    self.stream.line()
                    retry.succeeded()
                    if isinstance(event, Bookmark):
                        since, given = event.revision, (0, set())
                    elif event.revision == given[0]:
                        if event.key in given[1]:
                            continue  # given before the stream broke
                        given[1].add(event.key)
                    else:
                        since, given = event.revision - 1, (event.revision, {event.key})
                    yield event
            except Gone:
                self.stream.broke()
                log.info("watch from revision %s is compacted; taking a new snapshot", since)
                since = None
                continue
            except Ahead as err:  # the store was restored from an older backup
                log.warning("%s; taking a new snapshot", err)
                since = None
                continue
            except Revoked as err:
                self.stream.broke()
                self._revoked(str(err))  # said once, however often asked
                await self.clock.sleep(REVOKED_RETRY)
                continue
            except (aiohttp.ClientError, TimeoutError, OSError, RegistryError) as err:
                self.stream.broke()
                where = "the snapshot" if since is None else f"after revision {since}"
                self._said_broken(f"watch broke ({why(err)}); resuming {where}")
                self._next_replica()
            await self.clock.sleep(retry.failed())

    async def _watch(self, since: int, patches: bool) -> AsyncIterator[Event | Bookmark]:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        url = f"{self.url}/v1/watch?since={since}" + ("&patches=true" if patches else "")
        async with self._http().get(url, timeout=timeout) as answer:
            await check_status(answer)
            async for line in self._lines(answer):
                kind = line.get("type")
                if kind == "BOOKMARK":
                    yield Bookmark(int(line["revision"]))
                elif kind == "ERROR":
                    raise_error_line(line)
                elif kind == "PATCH":
                    revision = int(line["revision"])
                    yield Event("PATCH", revision, line["kind"], line["key"], line["patch"])
                else:
                    yield Event(
                        str(kind), int(line["revision"]), line["kind"], line["key"], line["object"]
                    )

    async def _lines(self, answer: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
        """The NDJSON objects of a response, read in chunks: no line limit
        but ``max_line``, and no line read twice into memory."""
        pending = bytearray()
        async for chunk in answer.content.iter_chunked(CHUNK):
            pending += chunk
            start = 0
            while (end := pending.find(b"\n", start)) >= 0:
                yield parse_line(bytes(pending[start:end]))
                start = end + 1
            del pending[:start]
            if len(pending) > self.max_line:
                raise UnreadableStream(
                    f"a line from {answer.url.path} is over {self.max_line} bytes; "
                    "the client cannot read it"
                )
        if pending.strip():
            yield parse_line(bytes(pending))


MemberPlural = Literal["clusters", "vms"]


def _plural(record: Cluster | Workload) -> MemberPlural:
    return "clusters" if isinstance(record, Cluster) else "vms"


def _policy_path(service: ServiceRef) -> str:
    return f"/v1/policies/{service.namespace}/{service.name}"


def _credentials(answer: dict[str, Any], key: certs.PrivateKey) -> Credentials:
    """What join, renew and the other issuing calls answer, with its key."""
    return Credentials(
        (answer["certificate"] + answer.get("chain", "")).encode(),
        certs.plain_key_pem(key),
        answer["caBundle"].encode(),
    )


__all__ = [  # the client's own, and what its callers take from here
    "REVOKED_RETRY", "BadURL", "Bookmark", "Change", "Credentials", "Event", "Gone",
    "MemberPlural", "RegistryClient", "RegistryError", "Rejected", "Relist", "Revoked", "Synced",
    "Unauthorized", "Unavailable", "UnreadableStream", "descends_from_pin",
    "load_cert_chain", "registry_urls",
]  # fmt: skip
