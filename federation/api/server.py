"""Run the registry: TLS with optional client certificates, the data
directory (serving certificate, admin credential), and the background
work: the leader election (whose winner runs liveness marking and rotation
steps) and the trust-bundle follower.

Data directory layout::

    server/tls.crt, server/tls.key   serving certificate; the key is encrypted
    admin/tls.crt, admin/tls.key     the admin client credential (0600)
    admin/ca.crt                     the mesh root
    admin.json                       what fedctl reads: registry URL and the paths
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from pathlib import Path

from aiohttp import web
from cryptography import x509

from federation.api.app import AccessLog, build_app
from federation.api.http import HEALTH_KEY, Settings
from federation.api.listener import Guard, Limits, listen
from federation.registry import Registry, StoreError
from federation.shared.clock import Backoff
from federation.shared.tasks import cancel_and_wait
from federation.trust import ca as certs

log = logging.getLogger("federation.api")


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


class RegistryServer:
    def __init__(
        self,
        registry: Registry,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hostnames: tuple[str, ...] = (),
        settings: Settings | None = None,
        limits: Limits | None = None,
        passphrase: bytes,
    ) -> None:
        self.registry = registry
        self.data_dir = data_dir
        self.host, self.port = host, port
        self.hostnames = hostnames
        self.settings = settings or Settings()
        self.limits = limits or Limits()
        self._listener: asyncio.Server | None = None
        self.guard: Guard | None = None
        self._passphrase = passphrase
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._context: ssl.SSLContext | None = None
        self._issuer = ""
        self.created_root = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def admin_config(self) -> Path:
        return self.data_dir / "admin.json"

    async def start(self) -> None:
        self.created_root = await self.registry.open()
        context = self._tls()
        self._context = context
        app = build_app(self.registry, self.settings)
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            shutdown_timeout=1.0,
            keepalive_timeout=self.limits.idle_timeout,
            access_log_class=AccessLog,
        )
        await self._runner.setup()
        self._listener, self.guard = await listen(
            self._runner, self.host, self.port, context, self.limits
        )
        if self.port == 0:
            self.port = int(self._listener.sockets[0].getsockname()[1])
        await self._write_admin()
        health = app[HEALTH_KEY]
        election = self.registry.election
        election.url = self.url
        for name, work in (
            ("leader election", election.run(self.registry.singletons)),
            ("trust bundle", self._follow_trust()),
        ):
            task = asyncio.create_task(work, name=name)
            health.supervise(task, name)
            self._tasks.append(task)

    async def crashed(self) -> str:
        """Wait until a task this replica cannot do without has ended (the
        watch hub, leader election, the trust bundle watch); what ended."""
        assert self._runner is not None, "start() first"
        health = self._runner.app[HEALTH_KEY]
        await health.ended.wait()
        return "; ".join(f"the {name} task stopped ({why})" for name, why in health.failed.items())

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)  # a failure was logged and reported when it happened
        if self._listener is not None:
            self._listener.close()  # no new connections; open ones end below
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None

    async def __aenter__(self) -> RegistryServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _tls(self) -> ssl.SSLContext:
        """Client certificates optional but, when given, verified against
        every root in force; the serving certificate is this replica's own."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.verify_mode = ssl.CERT_OPTIONAL
        self._load_trust(context)
        return context

    def _load_trust(self, context: ssl.SSLContext) -> None:
        """Add the bundle's roots (a live context only ever adds: a retired
        root is refused by ``auth`` instead) and, when the issuing root has
        changed, a fresh serving certificate chained to it."""
        state = self.registry.trust.state
        context.load_verify_locations(cadata=state.bundle_pem.decode())
        if state.issuer == self._issuer:
            return
        ca = self.registry.ca
        hosts = sorted({self.host, "localhost", "127.0.0.1", *self.hostnames} - {"0.0.0.0", "::"})
        uri = f"spiffe://{self.registry.trust_domain}/federation/registry"
        cert, key = certs.issue_server(ca, hosts, self.registry.clock.now(), uri)
        cert_path = self.data_dir / "server" / "tls.crt"
        key_path = self.data_dir / "server" / "tls.key"
        write_private(cert_path, certs.cert_pem(cert) + state.chain_pem)
        write_private(key_path, certs.encrypt_key(key, self._passphrase))
        context.load_cert_chain(cert_path, key_path, password=self._passphrase)
        self._issuer = state.issuer

    async def _follow_trust(self) -> None:
        """Follow the trust bundle: roots to accept, serving certificate and
        admin credential under the issuing root."""
        retry = Backoff(0.1, 5.0).retry()
        while True:
            try:
                async for _ in self.registry.trust.changes():
                    retry.succeeded()
                    assert self._context is not None
                    self._load_trust(self._context)
                    await self._write_admin()
            except StoreError as err:
                delay = retry.failed()
                log.warning("trust bundle watch: %s; retrying in %.1fs", err, delay)
                await self.registry.clock.sleep(delay)

    async def _write_admin(self) -> None:
        """The admin credential, issued once and kept; reissued when the
        issuing root changes or it nears expiry.  ``ca.crt`` is the bundle."""
        admin = self.data_dir / "admin"
        state = self.registry.trust.state
        fresh = False
        if (admin / "tls.key").exists():
            cert = x509.load_pem_x509_certificate((admin / "tls.crt").read_bytes())
            fresh = (
                cert.issuer == state.issuing.cert.subject
                and cert.not_valid_after_utc.timestamp() > self.registry.clock.now() + 86400
            )
        if not fresh:
            cert, key = await self.registry.admins.issue("admin")
            write_private(admin / "tls.crt", certs.cert_pem(cert) + state.chain_pem)
            write_private(admin / "tls.key", certs.plain_key_pem(key))
            log.info("wrote the admin credential to %s", admin)
        if not (admin / "ca.crt").exists() or (admin / "ca.crt").read_bytes() != state.bundle_pem:
            write_private(admin / "ca.crt", state.bundle_pem)
        config = {
            "registry": self.url,
            "ca": str((admin / "ca.crt").resolve()),
            "cert": str((admin / "tls.crt").resolve()),
            "key": str((admin / "tls.key").resolve()),
        }
        write_private(self.admin_config, json.dumps(config, indent=2).encode() + b"\n")
