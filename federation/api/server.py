"""Run the registry: TLS with optional client certificates, the data
directory (serving certificate, admin credential), and the liveness task.

Data directory layout::

    server/tls.crt, server/tls.key   serving certificate; the key is encrypted
    admin/tls.crt, admin/tls.key     the admin client credential (0600)
    admin/ca.crt                     the mesh root
    admin.json                       what fedctl reads: registry URL and the paths
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
from pathlib import Path

from aiohttp import web
from cryptography import x509

from federation.api.app import build_app
from federation.api.http import Settings
from federation.registry import Registry
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
        passphrase: bytes,
    ) -> None:
        self.registry = registry
        self.data_dir = data_dir
        self.host, self.port = host, port
        self.hostnames = hostnames
        self.settings = settings or Settings()
        self._passphrase = passphrase
        self._runner: web.AppRunner | None = None
        self._liveness: asyncio.Task[None] | None = None
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
        app = build_app(self.registry, self.settings)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=context)
        await site.start()
        if self.port == 0:
            server = site._server
            assert isinstance(server, asyncio.base_events.Server)
            self.port = int(server.sockets[0].getsockname()[1])
        self._write_admin()
        self._liveness = asyncio.create_task(self.registry.liveness())

    async def stop(self) -> None:
        if self._liveness is not None:
            self._liveness.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._liveness
            self._liveness = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> RegistryServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _tls(self) -> ssl.SSLContext:
        """A fresh serving certificate for this replica, chained to the root;
        client certificates optional but, when given, verified against it."""
        ca = self.registry.ca
        hosts = sorted({self.host, "localhost", "127.0.0.1", *self.hostnames} - {"0.0.0.0", "::"})
        cert, key = certs.issue_server(ca, hosts, self.registry.clock.now())
        cert_path = self.data_dir / "server" / "tls.crt"
        key_path = self.data_dir / "server" / "tls.key"
        write_private(cert_path, certs.cert_pem(cert) + ca.cert_pem)
        write_private(key_path, certs.encrypt_key(key, self._passphrase))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path, password=self._passphrase)
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cadata=ca.cert_pem.decode())
        return context

    def _write_admin(self) -> None:
        """The admin credential, issued once and kept; reissued if the root
        it chains to is not the current one."""
        admin = self.data_dir / "admin"
        ca_pem = self.registry.ca.cert_pem
        current = (admin / "ca.crt").read_bytes() if (admin / "ca.crt").exists() else b""
        fresh = False
        if current == ca_pem and (admin / "tls.key").exists():
            cert = x509.load_pem_x509_certificate((admin / "tls.crt").read_bytes())
            fresh = cert.not_valid_after_utc.timestamp() > self.registry.clock.now() + 86400
        if not fresh:
            cert, key = self.registry.issue_admin("admin")
            write_private(admin / "tls.crt", certs.cert_pem(cert))
            write_private(admin / "tls.key", certs.plain_key_pem(key))
            write_private(admin / "ca.crt", ca_pem)
            log.info("wrote the admin credential to %s", admin)
        config = {
            "registry": self.url,
            "ca": str((admin / "ca.crt").resolve()),
            "cert": str((admin / "tls.crt").resolve()),
            "key": str((admin / "tls.key").resolve()),
        }
        write_private(self.admin_config, json.dumps(config, indent=2).encode() + b"\n")
