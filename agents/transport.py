"""The registry client's transport: replicas, mutual TLS, retries.

- mutual TLS with the credential the agent got at join; ``use`` and
  ``trust`` change it for new connections (open streams keep theirs);
- several replicas (``https://a,https://b``): after a failure the next
  request goes to the next one;
- ``request`` retries with ``Backoff`` on no answer, a 5xx, or a
  certificate refused, and gives up at once on a 4xx; what it raises names
  the cause (``agents.errors``).
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

import aiohttp
import orjson
from cryptography import x509

from agents.errors import RegistryError, Revoked, Unauthorized, Unavailable, why
from agents.joining import registry_urls
from agents.stream import BROKEN_WARN_EVERY, MAX_LINE, StreamState, json_body, refusal
from federation.shared.clock import Backoff, Clock, SystemClock
from federation.trust import ca as certs

log = logging.getLogger("agents.client")

DEFAULT_BACKOFF = Backoff(0.1, 5.0)


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


class Transport:
    """The connection to the registry (its replicas), the credential it
    presents and the trust it holds, and one JSON request with retries.
    ``RegistryClient`` adds a method per route."""

    def __init__(
        self,
        url: str,
        credentials: Credentials | None,
        *,
        ca_pem: bytes | None = None,
        clock: Clock | None = None,
        retries: int = 6,
        backoff: Backoff = DEFAULT_BACKOFF,
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
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._last_warning = float("-inf")
        self._retired: list[aiohttp.ClientSession] = []

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context new connections use: this credential, this trust."""
        return self._ssl

    @property
    def url(self) -> str:
        """The replica this client talks to now."""
        return self.urls[self._current]

    async def _unreachable(self, err: BaseException) -> RegistryError:
        """Why a request got no answer, as the error that names the cause:
        ``Unauthorized`` for a certificate either side refuses, else
        ``Unavailable``."""
        where = f"the registry at {self.url}"
        if isinstance(err, aiohttp.ClientConnectorCertificateError):
            cause = err.certificate_error
            reason = getattr(cause, "verify_message", "") or str(cause)
            if "hostname" in reason.lower() or "ip address mismatch" in reason.lower():
                return Unauthorized(
                    f"{where} presents a certificate for another name ({reason})",
                    Unauthorized.WRONG_NAME,
                )
            return Unauthorized(
                f"{where} presents a certificate this client does not trust ({reason}): "
                "the CA file is not this registry's, or its root was rotated",
                Unauthorized.UNTRUSTED_REGISTRY,
            )
        if isinstance(err, aiohttp.ClientConnectorError):  # no connection at all
            return Unavailable(f"cannot reach {where}: {why(err.os_error)}")
        if isinstance(err, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError) and (
            self.credentials is not None and await self._answers_without_certificate()
        ):  # it is up, and it dropped us: our certificate is what it refuses
            leaf = self.credentials.certificate
            if leaf.not_valid_after_utc.timestamp() <= self.clock.now():
                return Unauthorized(
                    f"{where} refused the client certificate: it expired at "
                    f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC; join again",
                    Unauthorized.EXPIRED,
                )
            return Unauthorized(
                f"{where} does not accept the client certificate (issued by "
                f"{leaf.issuer.rfc4514_string()}): from a root it does not trust, or retired",
                Unauthorized.NOT_ACCEPTED,
            )
        return Unavailable(f"cannot reach {where}: {why(err)}")

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

    async def __aenter__(self) -> Self:
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
        """One JSON request; retried on connection errors and 5xx (and on
        a certificate refused, which a rotation in flight explains).  Use
        the route methods below; this is their transport."""
        failure: RegistryError | None = None
        cause: BaseException | None = None
        for delay in self.backoff.delays(self.retries if retry else 1):
            if delay:
                log.warning("%s %s failed (%s); retrying in %.2fs", method, path, failure, delay)
                await self.clock.sleep(delay)
            try:
                async with self._http().request(
                    method, self.url + path, **_json_body(body)
                ) as answer:
                    data = await json_body(answer)
                    if answer.status < 400:
                        self.revoked = None
                        return data
                    failure, cause = refusal(answer.status, data), None
                    if isinstance(failure, Revoked):
                        raise self._revoked(str(failure))
                    if not isinstance(failure, Unavailable):
                        raise failure
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                failure, cause = await self._unreachable(err), err
            self._next_replica()
        raise failure or Unavailable(f"{method} {path}: no attempt made") from cause

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


def _json_body(body: Any) -> dict[str, Any]:
    """A request's JSON, encoded by orjson (a 100-endpoint shard costs the
    standard library's encoder ten times as much)."""
    if body is None:
        return {}
    return {"data": orjson.dumps(body), "headers": {"Content-Type": "application/json"}}


__all__ = ["DEFAULT_BACKOFF", "Credentials", "Transport", "load_cert_chain"]
