"""The registry client every agent (and fedctl) uses.

- mutual TLS with the credential the agent got at join;
- ``join``: pins the registry's root by the sha256 carried in the join token
  before trusting it, then exchanges the token and a CSR for a certificate;
- ``renew``: a new certificate for a new key, presenting the current one;
- writes retry with capped exponential backoff on connection errors and
  5xx, and give up at once on 4xx (the request itself is wrong);
- ``changes``: a streamed snapshot (``Relist``, one ``Event`` per object,
  ``Synced``), then the watch from its revision; resumes from the last
  revision seen after a broken stream, and relists on 410.  Each event is
  delivered once.  Lines are read in bounded chunks: any legal event is
  read, and a line over ``max_line`` is one clear, retried error.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509

from agents.errors import REVOKED_RETRY, BadURL, RegistryError, Revoked, UnreadableStream, why
from agents.joining import descends_from_pin, fetch_pinned_ca, registry_urls
from agents.stream import (
    BROKEN_WARN_EVERY,
    CHUNK,
    MAX_LINE,
    Ahead,
    Bookmark,
    Change,
    Event,
    Gone,
    Relist,
    StreamState,
    Synced,
    check_status,
    json_body,
    parse_line,
    raise_error_line,
)
from federation.clock import Clock, SystemClock
from federation.model import EndpointSet, ServiceRef, SourceRef
from federation.trust import ca as certs
from federation.trust.tokens import TokenError, pin_of

log = logging.getLogger("agents.client")


@dataclass(frozen=True)
class Credentials:
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in (
            ("tls.crt", self.cert_pem),
            ("tls.key", self.key_pem),
            ("ca.crt", self.ca_pem),
        ):
            path = directory / name
            path.touch(mode=0o600, exist_ok=True)
            path.chmod(0o600)
            path.write_bytes(data)

    @classmethod
    def load(cls, directory: Path) -> Credentials:
        return cls.from_files(directory / "tls.crt", directory / "tls.key", directory / "ca.crt")

    @classmethod
    def from_files(cls, cert: Path, key: Path, ca: Path) -> Credentials:
        return cls(cert.read_bytes(), key.read_bytes(), ca.read_bytes())

    def needs_renewal(self, now: float) -> bool:
        """True once two thirds of the certificate's lifetime have passed."""
        return now >= certs.renewal_time(self.certificate)


def _ssl_context(credentials: Credentials | None, ca_pem: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    if credentials is not None:
        load_cert_chain(context, credentials.cert_pem, credentials.key_pem)
    return context


def load_cert_chain(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``ssl`` loads a certificate and key only from paths.  On Linux they
    are anonymous memory files (``memfd``) read through ``/proc/self/fd``:
    the key never touches a filesystem, and a pod with a read-only root and
    no writable ``/tmp`` loads it.  Elsewhere: a private temporary directory."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fds = [os.memfd_create(name, os.MFD_CLOEXEC) for name in ("cert", "key")]
        try:
            for fd, data in zip(fds, (cert_pem, key_pem), strict=True):
                with os.fdopen(fd, "wb", closefd=False) as out:
                    out.write(data)
            context.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "c", Path(tmp) / "k"
        cert.write_bytes(cert_pem)
        key.write_bytes(key_pem)
        context.load_cert_chain(cert, key)


class RegistryClient:
    def __init__(
        self,
        url: str,
        credentials: Credentials | None,
        *,
        ca_pem: bytes | None = None,
        clock: Clock | None = None,
        retries: int = 6,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        timeout: float = 10.0,
        max_line: int = MAX_LINE,
    ) -> None:
        self.urls = registry_urls(url)
        self._current = 0
        self.revoked: str | None = None  # why the registry refuses us, while it does
        self.stream = StreamState()  # the snapshot-then-watch stream's health, for metrics
        self.max_line = max_line
        self.credentials = credentials
        ca = ca_pem if ca_pem is not None else (credentials.ca_pem if credentials else None)
        if ca is None:
            raise ValueError("a CA certificate is needed to trust the registry")
        self._ca_pem = ca
        self._ssl = _ssl_context(credentials, ca)
        self.clock = clock or SystemClock()
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._last_warning = float("-inf")
        self._retired: list[aiohttp.ClientSession] = []

    @property
    def url(self) -> str:
        """The replica this client talks to now."""
        return self.urls[self._current]

    async def _unreachable(self, err: BaseException) -> str:
        """Why a request got no answer, in words that name the cause."""
        where = f"the registry at {self.url}"
        if isinstance(err, aiohttp.ClientConnectorCertificateError):
            cause = err.certificate_error
            reason = getattr(cause, "verify_message", "") or str(cause)
            if "hostname" in reason.lower() or "ip address mismatch" in reason.lower():
                return f"{where} presents a certificate for another name ({reason})"
            return (
                f"{where} presents a certificate this client does not trust ({reason}): "
                "the CA file is not this registry's, or its root was rotated"
            )
        if isinstance(err, aiohttp.ClientConnectorError):  # no connection at all
            return f"cannot reach {where}: {why(err.os_error)}"
        if isinstance(err, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError) and (
            self.credentials is not None and await self._answers_without_certificate()
        ):  # it is up, and it dropped us: our certificate is what it refuses
            leaf = self.credentials.certificate
            if leaf.not_valid_after_utc.timestamp() <= self.clock.now():
                return (
                    f"{where} refused the client certificate: it expired at "
                    f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC; join again"
                )
            return (
                f"{where} does not accept the client certificate (issued by "
                f"{leaf.issuer.rfc4514_string()}): from a root it does not trust, or retired"
            )
        return f"cannot reach {where}: {why(err)}"

    async def _answers_without_certificate(self) -> bool:
        """Whether the registry serves ``/v1/ca`` to this client without a
        client certificate (only asked after a connection was dropped)."""
        context = ssl.create_default_context(cadata=self._ca_pem.decode())
        timeout = aiohttp.ClientTimeout(total=3)
        try:
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http,
                http.get(self.url + "/v1/ca", timeout=timeout) as answer,
            ):
                return answer.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    def _revoked(self, message: str) -> Revoked:
        """Remember the removal, and say it once (not once per request)."""
        if self.revoked is None:
            log.warning("%s; publishing stops, what is imported stays as it is", message)
        self.revoked = message
        return Revoked(message)

    def _said_broken(self, message: str) -> None:
        """One warning per outage, then one a minute at most: an agent that
        cannot reach the registry does not log a line a second."""
        now = self.clock.now()
        if self.stream.breaks_in_a_row <= 1 or now - self._last_warning >= BROKEN_WARN_EVERY:
            log.warning("%s (broken %d times in a row)", message, self.stream.breaks_in_a_row)
            self._last_warning = now
        else:
            log.debug(message)

    def _next_replica(self) -> None:
        """After a failure, the next request (or stream) goes to the next
        replica: they share one store, so a watch resumes there from the
        same revision, with no gap and no repeat."""
        if len(self.urls) > 1:
            self._current = (self._current + 1) % len(self.urls)
            log.info("trying the registry replica at %s", self.url)

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._retire_session()
        retired, self._retired = self._retired, []
        for session in retired:
            await session.close()

    def _retire_session(self) -> None:
        """New requests get a new session; streams open on the old one run
        on until ``close`` (a renewal a day and a rotation now and then)."""
        if self._session is not None:
            self._retired.append(self._session)
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl), timeout=self._timeout
            )
        return self._session

    def get_raw(self, path_and_query: str) -> Any:
        """``GET`` with this credential, the response left unread: an async
        context manager of the aiohttp response (``fedctl dashboard``
        forwards it as it comes).  No retry, no read timeout."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
        return self._http().get(self.url + path_and_query, timeout=timeout)

    # -- plain requests --------------------------------------------------------

    async def request(
        self, method: str, path: str, body: Any = None, *, retry: bool = True
    ) -> dict[str, Any]:
        """One JSON request; retried on connection errors and 5xx."""
        attempts = self.retries if retry else 1
        delay = self.backoff
        for attempt in range(attempts):
            try:
                async with self._http().request(method, self.url + path, json=body) as answer:
                    data = await json_body(answer)
                    if answer.status < 400:
                        self.revoked = None
                        return data
                    message = str(data.get("message", answer.reason))
                    if data.get("reason") == "Revoked":
                        raise self._revoked(message)
                    if answer.status < 500:
                        raise RegistryError(answer.status, message)
                    failure = RegistryError(answer.status, message)
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                failure = RegistryError(0, await self._unreachable(err))
            self._next_replica()
            if attempt + 1 < attempts:
                log.warning("%s %s failed (%s); retrying in %.2fs", method, path, failure, delay)
                await self.clock.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.max_backoff)
        raise failure

    # -- join and renew ----------------------------------------------------------

    @classmethod
    async def join(
        cls, url: str, token: str, *, clock: Clock | None = None
    ) -> tuple[Credentials, str]:
        """Join with a token; returns the credential and the SPIFFE id."""
        try:
            pin = pin_of(token)
        except TokenError as err:
            raise RegistryError(0, str(err)) from None
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

    def use(self, credentials: Credentials) -> None:
        """Present ``credentials`` and trust their bundle from the next
        connection on (open streams keep theirs)."""
        self.credentials = credentials
        self._ca_pem = credentials.ca_pem
        self._ssl = _ssl_context(credentials, credentials.ca_pem)
        self._retire_session()

    def trust(self, bundle_pem: bytes) -> None:
        """Trust a new bundle (a root rotation) with the same certificate."""
        assert self.credentials is not None
        self.use(replace(self.credentials, ca_pem=bundle_pem))

    # -- records -----------------------------------------------------------------

    async def publish(self, endpoint_set: EndpointSet, *, retry: bool = True) -> dict[str, Any]:
        path = f"/v1/services/{endpoint_set.service}/sources/{endpoint_set.source}"
        return await self.request("PUT", path, endpoint_set.to_wire(), retry=retry)

    async def withdraw(
        self,
        service: ServiceRef,
        source: SourceRef,
        *,
        shard: int | None = None,
        retry: bool = True,
    ) -> dict[str, Any]:
        """Withdraw every shard of the source's set, or just ``shard``."""
        path = f"/v1/services/{service}/sources/{source}"
        if shard is not None:
            path += f"?shard={shard}"
        return await self.request("DELETE", path, retry=retry)

    async def heartbeat(self, source: SourceRef, applied: int | None = None) -> dict[str, Any]:
        """Renew liveness; ``applied``: the registry revision materialized."""
        body = None if applied is None else {"appliedRevision": applied}
        return await self.request("POST", f"/v1/sources/{source}/heartbeat", body)

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
            raise RegistryError(0, f"snapshot from {url} broke: {why(err)}") from err
        raise RegistryError(0, f"the snapshot from {url} ended before its END line")

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
        delay = self.backoff
        while True:
            try:
                if since is None:
                    async for change in self.snapshot():
                        self.stream.line()
                        if isinstance(change, Synced):
                            since = change.revision
                        yield change
                    delay = self.backoff
                assert since is not None
                async for event in self._watch(since, patches):
                    self.stream.line()
                    delay = self.backoff
                    since = event.revision
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
            await self.clock.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.max_backoff)

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


def _credentials(answer: dict[str, Any], key: certs.PrivateKey) -> Credentials:
    """What join, renew and the other issuing calls answer, with its key."""
    return Credentials(
        (answer["certificate"] + answer.get("chain", "")).encode(),
        certs.plain_key_pem(key),
        answer["caBundle"].encode(),
    )


__all__ = [  # the client's own, and what its callers take from here
    "REVOKED_RETRY", "BadURL", "Bookmark", "Change", "Credentials", "Event", "RegistryClient",
    "RegistryError", "Relist", "Revoked", "Synced", "UnreadableStream", "descends_from_pin",
    "load_cert_chain", "registry_urls",
]  # fmt: skip
